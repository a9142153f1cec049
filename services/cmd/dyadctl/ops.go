package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/term"

	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
)

// pmSubcommands lists the pm commands for a usage error.
const pmSubcommands = "list, show, work-on, finalize, shutdown, power-off, power-on, reset-device, bmc"

// maxAuditLimit is the most records GET /api/v1/audit returns.
const maxAuditLimit = 1000

// maxPasswordFile bounds a --password-file: an IPMI password is 20 bytes.
const maxPasswordFile = 1 << 10

// pmQuestion is asked before a PM command that stops PM id; "" for the
// others.
func pmQuestion(cmd string, id int) string {
	switch cmd {
	case unit.PMShutdown:
		return fmt.Sprintf("Shut down PM %d? It stays off until it is powered on again.\n\nType yes to shut down PM %d: ", id, id)
	case unit.PMPowerOff:
		return fmt.Sprintf("Power off PM %d at once, as pulling its power cord?\n\nType yes to power off PM %d: ", id, id)
	}
	return ""
}

// parsePMCommand parses the pm commands other than list and show, which
// parseCommand has taken; ok is false for a command line that is not a pm
// command.
func parsePMCommand(args []string) (cmd command, ok bool, err error) {
	if len(args) == 0 || args[0] != "pm" {
		return command{}, false, nil
	}
	if len(args) == 1 {
		return command{}, true, fmt.Errorf("%w: pm takes a command: %s", errUsage, pmSubcommands)
	}
	words := strings.Join(args, " ")
	sub, rest := args[1], args[2:]
	switch {
	case sub == "bmc":
		cmd, err := parsePMBMC(words, rest)
		return cmd, true, err
	case slices.Contains(unit.PMCommands(), sub):
		fs := subFlags("pm " + sub)
		yes := fs.Bool("yes", false, "do not ask")
		pos, err := parseFlags(fs, rest)
		if err != nil {
			return command{}, true, err
		}
		if len(pos) != 1 {
			return command{}, true, fmt.Errorf("%w: pm %s takes one PM id", errUsage, sub)
		}
		id, err := parseID("PM", pos[0])
		if err != nil {
			return command{}, true, err
		}
		c := command{
			name:  words,
			print: func(w io.Writer, v any) error { return printPMs(w, []unit.PM{v.(unit.PM)}) },
		}
		if q := pmQuestion(sub, id); q != "" && !*yes {
			c.confirm = func(ctx context.Context, _ *apiclient.Client, stdin io.Reader, prompt io.Writer) error {
				return askYes(ctx, stdin, prompt, q, "run again with --yes to go ahead")
			}
		}
		if sub == unit.PMWorkOn {
			c.ask = func(ctx context.Context, cl *apiclient.Client, stdin io.Reader, prompt io.Writer) (any, error) {
				return workOn(ctx, cl, id, *yes, stdin, prompt)
			}
		} else {
			c.fetch = func(ctx context.Context, cl *apiclient.Client) (any, error) {
				pm, err := cl.PMCommand(ctx, id, sub, unit.PMAction{})
				return pm, explainPMRefusal(err, id)
			}
		}
		return c, true, nil
	}
	return command{}, true, fmt.Errorf("%w: unknown command pm %s; want one of: %s", errUsage, sub, pmSubcommands)
}

// workOn sends Work On. When the unit answers that VMs which cannot move
// would be shut down, it shows that answer and sends Work On again with
// the confirmation once the operator has said yes (or gave --yes).
func workOn(ctx context.Context, c *apiclient.Client, id int, yes bool, stdin io.Reader, prompt io.Writer) (unit.PM, error) {
	pm, err := c.PMCommand(ctx, id, unit.PMWorkOn, unit.PMAction{})
	if !needsConfirmation(err) {
		return pm, explainPMRefusal(err, id)
	}
	msg := err.(*apiclient.APIError).Message
	if yes {
		fmt.Fprintf(prompt, "%s\n--yes: sending Work On again with the confirmation.\n", msg)
	} else if err := askYes(ctx, stdin, prompt, fmt.Sprintf("%s\n\nType yes to work on PM %d and shut those VMs down: ", msg, id),
		fmt.Sprintf("the unit says: %s\nrun again with --yes to work on PM %d and shut those VMs down", msg, id)); err != nil {
		return unit.PM{}, err
	}
	pm, err = c.PMCommand(ctx, id, unit.PMWorkOn, unit.PMAction{Confirm: true})
	return pm, explainPMRefusal(err, id)
}

// needsConfirmation reports whether err is the refusal of a Work On that
// would shut down VMs: a 409 while Work On is still allowed, so the state
// is not what refused it.
func needsConfirmation(err error) bool {
	var ae *apiclient.APIError
	return errors.As(err, &ae) && ae.StatusCode == 409 && slices.Contains(ae.Allowed, unit.PMWorkOn)
}

// explainPMRefusal adds to a 409 that refused a command in the PM's state
// the commands that state allows, as dyadctl commands: a PM command's
// dyadctl word is its API name.
func explainPMRefusal(err error, id int) error {
	return explainAllowed(err, "pm", strconv.Itoa(id), func(cmd string) (string, bool) { return cmd, true })
}

// parsePMBMC parses "pm bmc ID --addr HOST[:PORT] --user U
// [--password-file F]" and "pm bmc ID --remove" (args after "bmc"). The
// password is never an argument: a command line is seen by every user of
// the machine and kept in shell histories.
func parsePMBMC(words string, args []string) (command, error) {
	fs := subFlags("pm bmc")
	addr := fs.String("addr", "", "the BMC's address, HOST or HOST:PORT (default port 623)")
	user := fs.String("user", "", "the BMC's IPMI user")
	passwordFile := fs.String("password-file", "", "read the IPMI password from this file (default: ask on the terminal)")
	remove := fs.Bool("remove", false, "remove the PM's BMC")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return command{}, err
	}
	if len(pos) != 1 {
		return command{}, fmt.Errorf("%w: pm bmc takes one PM id", errUsage)
	}
	id, err := parseID("PM", pos[0])
	if err != nil {
		return command{}, err
	}
	switch {
	case *remove && (*addr != "" || *user != "" || *passwordFile != ""):
		return command{}, fmt.Errorf("%w: pm bmc --remove takes no --addr, --user or --password-file", errUsage)
	case !*remove && (*addr == "" || *user == ""):
		return command{}, fmt.Errorf("%w: pm bmc needs --addr and --user (or --remove)", errUsage)
	}
	return command{
		name: words,
		ask: func(ctx context.Context, c *apiclient.Client, stdin io.Reader, prompt io.Writer) (any, error) {
			b := unit.BMC{Addr: *addr, User: *user}
			if !*remove {
				var err error
				if b.Password, err = bmcPassword(ctx, *passwordFile, id, stdin, prompt); err != nil {
					return nil, err
				}
			}
			return c.SetBMC(ctx, id, b)
		},
		print: func(w io.Writer, v any) error { return printBMC(w, v.(unit.PM)) },
	}, nil
}

// bmcPassword reads the IPMI password from file or, without one, from the
// terminal without echo.
func bmcPassword(ctx context.Context, file string, id int, stdin io.Reader, prompt io.Writer) (string, error) {
	if file != "" {
		return readPasswordFile(file)
	}
	fd, ok := terminalFd(stdin)
	if !ok {
		return "", fmt.Errorf("%w: stdin is not a terminal, so dyadctl cannot ask for the BMC password; give it with --password-file", errNotAsked)
	}
	fmt.Fprintf(prompt, "IPMI password of PM %d's BMC: ", id)
	pw, err := readPassword(ctx, fd)
	fmt.Fprintln(prompt) // the operator's Enter was not echoed
	if err != nil {
		return "", err
	}
	if pw == "" {
		return "", errors.New("empty password: nothing was changed")
	}
	return pw, nil
}

// readPassword reads a line from terminal fd without echo. A read from a
// terminal does not end with ctx, so on Ctrl-C the read is left behind
// and the terminal's echo restored here: dyadctl exits right after.
func readPassword(ctx context.Context, fd int) (string, error) {
	state, err := term.GetState(fd)
	if err != nil {
		return "", fmt.Errorf("reading the terminal's state: %w", err)
	}
	type line struct {
		b   []byte
		err error
	}
	got := make(chan line, 1)
	go func() {
		b, err := term.ReadPassword(fd)
		got <- line{b, err}
	}()
	select {
	case l := <-got:
		if l.err != nil {
			return "", fmt.Errorf("reading the password: %w", l.err)
		}
		return string(l.b), nil
	case <-ctx.Done():
		term.Restore(fd, state)
		return "", fmt.Errorf("%w: interrupted", errDeclined)
	}
}

// readPasswordFile reads a password file: its first line, without the
// line end an editor adds.
func readPasswordFile(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPasswordFile+1))
	if err != nil {
		return "", fmt.Errorf("password file %s: %w", name, err)
	}
	if len(b) > maxPasswordFile {
		return "", fmt.Errorf("password file %s: larger than %d bytes; want the password on one line", name, maxPasswordFile)
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		if len(bytes.TrimSpace(b[i+1:])) > 0 {
			return "", fmt.Errorf("password file %s: more than one line; want the password on one line", name)
		}
		b = b[:i]
	}
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return "", fmt.Errorf("password file %s: empty", name)
	}
	return string(b), nil
}

func printBMC(w io.Writer, pm unit.PM) error {
	if pm.BMC == nil {
		_, err := fmt.Fprintf(w, "PM %d has no BMC: the unit cannot power it on.\n", pm.ID)
		return err
	}
	_, err := fmt.Fprintf(w, "PM %d's BMC: %s, user %s.\n", pm.ID, pm.BMC.Addr, pm.BMC.User)
	return err
}

// parseUnitCommand parses "unit shutdown [--yes] [--timeout S]" and "unit
// rolling-reboot [--yes]" (args after the command).
func parseUnitCommand(words, sub string, args []string) (command, error) {
	fs := subFlags("unit " + sub)
	yes := fs.Bool("yes", false, "do not ask")
	var timeout timeoutFlag
	if sub == unit.UnitShutdown {
		fs.Var(&timeout, "timeout", "how long each VM may take to shut down before it is powered off: seconds or a duration such as 5m (default: the unit's, 120 s)")
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return command{}, err
	}
	if len(pos) != 0 {
		return command{}, fmt.Errorf("%w: unit %s takes no arguments", errUsage, sub)
	}
	question, started := "Reboot both PMs, one after the other? Each PM's VMs move to the other PM before it reboots.\n\nType yes to reboot the unit: ",
		"Rolling Reboot started: each PM in turn moves its VMs to the other PM and reboots."
	if sub == unit.UnitShutdown {
		question, started = "Shut down both PMs and every VM?\n\nType yes to shut down the unit: ",
			"Shutdown started: every VM shuts down, then both PMs power off."
	}
	c := command{
		name: words,
		fetch: func(ctx context.Context, c *apiclient.Client) (any, error) {
			return c.UnitCommand(ctx, sub, unit.UnitAction{TimeoutSeconds: int(timeout)})
		},
		print: func(w io.Writer, v any) error {
			_, err := fmt.Fprintln(w, started)
			return err
		},
	}
	if !*yes {
		c.confirm = func(ctx context.Context, _ *apiclient.Client, stdin io.Reader, prompt io.Writer) error {
			return askYes(ctx, stdin, prompt, question, "run again with --yes to go ahead")
		}
	}
	return c, nil
}

// timeoutFlag is a timeout in whole seconds, given as seconds ("300") or
// as a duration ("5m").
type timeoutFlag int

func (t *timeoutFlag) String() string { return strconv.Itoa(int(*t)) }

func (t *timeoutFlag) Set(s string) error {
	var d time.Duration
	n, err := strconv.Atoi(s)
	if err == nil {
		d = time.Duration(n) * time.Second
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d < time.Second || d%time.Second != 0 || d > 24*time.Hour {
		return errors.New("want whole seconds from 1 to 86400, such as 300 or 5m")
	}
	*t = timeoutFlag(d / time.Second)
	return nil
}

// parseAudit parses "audit [--limit N]" (args after "audit").
func parseAudit(words string, args []string) (command, error) {
	fs := subFlags("audit")
	limit := fs.Int("limit", 0, "show the newest N records (default 100, at most 1000)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return command{}, err
	}
	if len(pos) != 0 {
		return command{}, fmt.Errorf("%w: audit takes no arguments, only --limit", errUsage)
	}
	if *limit < 0 || *limit > maxAuditLimit {
		return command{}, fmt.Errorf("%w: invalid --limit %d: want 1 to %d", errUsage, *limit, maxAuditLimit)
	}
	return command{
		name:  words,
		fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.Audit(ctx, *limit) },
		print: func(w io.Writer, v any) error { return printAudit(w, v.([]unit.AuditRecord)) },
	}, nil
}

func printAudit(w io.Writer, recs []unit.AuditRecord) error {
	if len(recs) == 0 {
		_, err := fmt.Fprintln(w, "No operations recorded.")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tUSER\tACTION\tSTATUS\tRESULT")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", formatTime(r.Time), orDash(cell(r.User)), cell(r.Action), r.Status, cell(r.Result))
	}
	return tw.Flush()
}

// cell makes text from the unit fit one table cell: a tab or line end
// in it would shift or split the table.
func cell(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// askYes asks question on the terminal and wants "yes". It asks only on a
// terminal: a script's stdin would answer whatever it holds, so a script
// must say --yes; refusal says how.
func askYes(ctx context.Context, stdin io.Reader, prompt io.Writer, question, refusal string) error {
	if _, ok := terminalFd(stdin); !ok {
		return notAsked(refusal)
	}
	fmt.Fprint(prompt, question)
	answer, err := readAnswer(ctx, stdin)
	if err != nil {
		return err
	}
	if answer != "yes" {
		return errDeclined
	}
	return nil
}

// notAsked is the refusal of a question dyadctl cannot ask: refusal says
// how to go ahead without it.
func notAsked(refusal string) error {
	return fmt.Errorf("%w: stdin is not a terminal, so dyadctl cannot ask; %s", errNotAsked, refusal)
}
