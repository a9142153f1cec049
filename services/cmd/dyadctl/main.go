// Command dyadctl is the command line interface of a Dyad unit: it reads the
// unit's state through the REST API, for operators and scripts (--json).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
)

const usageText = `Usage: dyadctl [flags] COMMAND

Commands:
  unit show       the unit: name, management IP, primary, quorum, PMs and
                  alerts
  unit force-quorum [--yes]
                  let the primary run the unit's VMs alone while it waits for
                  a quorum lease it cannot get; if the peer PM is in fact
                  running them, both write the same volumes (split brain).
                  Asks on the terminal unless --yes
  unit shutdown [--yes] [--timeout S]
                  shut down every VM, then both PMs; asks on the terminal
                  unless --yes. S bounds each VM's shutdown (seconds or a
                  duration such as 5m); past it the VM is powered off
  unit rolling-reboot [--yes]
                  reboot the PMs one after the other, each after its VMs have
                  moved to the other PM; asks on the terminal unless --yes
  pm list         the PMs of the unit with their failures and allowed commands
  pm show ID      one PM with its heartbeat paths, BMC and hardware
  pm work-on ID [--yes]
                  put PM ID in Maintenance: its VMs move to the other PM; if
                  some cannot, the unit names them and dyadctl asks before
                  they are shut down (--yes: without asking)
  pm finalize ID  take PM ID out of Maintenance, back into service
  pm shutdown ID [--yes]
  pm power-off ID [--yes]
                  shut down or power off PM ID (in Maintenance, without VMs);
                  asks on the terminal unless --yes
  pm power-on ID  power PM ID on through its BMC
  pm reset-device ID
                  forget PM ID's failures and return it to service
  pm bmc ID --addr HOST[:PORT] --user USER [--password-file FILE]
  pm bmc ID --remove
                  set or remove the BMC (IPMI) through which the unit powers
                  PM ID on and off; the password is asked on the terminal
                  without echo, or read from FILE, never given as an argument
  audit [--limit N]
                  the operators' operations (who, what, result), newest first;
                  N from 1 to 1000, default 100
  alert list      the active alerts
  network list    the shared networks with their port on each PM
  network rename ID NAME
                  give shared network ID a new name
  network fix ID  pair shared network ID again after fixing its cabling

  volume list     the volumes (mirrored VM disks) with their sync state
  volume show ID|NAME
                  one volume with its legs, split brain sides and snapshots
  volume create NAME SIZE [--group ID]
                  create a volume mirrored on both PMs, in storage group ID
                  (default: the first group with room)
  volume grow ID SIZE
                  grow volume ID to SIZE on both PMs
  volume delete ID --yes
                  delete volume ID: destroys its data on both PMs
  volume resolve ID --survivor PM
                  end a split brain of volume ID keeping the data of PM; the
                  other side is kept as a snapshot
  volume snapshot-delete ID NAME
                  delete snapshot NAME of volume ID
  storage-group list
                  the storage groups with their capacity and free space
  disk list       the disks of both PMs: system, blank, foreign, member, failed
  disk activate PM DISK [--group ID] [--erase]
                  add disk DISK (e.g. vdb) of PM to storage group ID; a
                  foreign disk (one that holds data) needs --erase

  vm list         the virtual machines with their state and where they run
  vm show VM      one VM with its volumes, networks and last migration
  vm create NAME --memory SIZE --volume NAME:SIZE[:boot] [--vcpus N]
                [--existing-volume ID[:boot]] [--group ID] [--nic NETWORK[=MAC]]
                [--boot disk|cd|test-guest] [--cd ISO] [--64bit] [--start]
                  create a VM; --volume and --existing-volume repeat, one
                  volume is the boot volume (the only one needs no :boot);
                  --nic repeats; ISO names an .iso of the PMs' VCD folder
  vm start VM     start a stopped VM
  vm shutdown VM [--timeout 120s]
                  shut the guest down (ACPI) and wait up to the timeout
  vm poweroff VM  stop the VM at once, as pulling its power cord
  vm dump VM      write the guest's memory to the data partition, then restart
  vm boot-from-cd VM [--cd ISO]
                  start a stopped VM once from its (or this) virtual CD
  vm migrate VM [--to PM]
                  live-migrate a running VM to the other PM (or PM)
  vm reset-device VM
                  restart a VM that crashed too often (Critical)
  vm config VM [--vcpus N] [--memory SIZE] [--add-volume NAME:SIZE]
                [--add-existing ID] [--detach ID] [--delete ID --yes]
                [--nic NETWORK[=MAC] | --no-nics]
                  re-provision a stopped VM; --delete destroys the volume's
                  data; --nic replaces the VM's networks
  vm remove VM --yes [--delete-data]
                  remove a VM with its boot volume; --delete-data deletes its
                  other volumes too (kept in the unit otherwise)
  vm console VM   attach the VM's serial console (Ctrl-] quits)
  vm serial-log VM
                  print what the VM's serial console printed lately

  VM is a VM's name or id.

  SIZE is a whole number of bytes or of a unit: 64MiB, 1GiB, 512M, 10G (K, M,
  G, T are powers of 1024, as KiB, MiB, GiB, TiB; KB, MB, GB, TB of 1000).
  Command flags may follow the command's arguments.

Flags (before the command):
`

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// errUsage marks a command line the program cannot act on.
var errUsage = errors.New("usage error")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run executes one dyadctl command line and returns the exit code. stdin
// is the operator's terminal for the commands that ask or attach one.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, env func(string) string) int {
	fs := flag.NewFlagSet("dyadctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", envOr(env, "DYAD_URL", "http://127.0.0.1"), "API base URL (env DYAD_URL)")
	user := fs.String("user", envOr(env, "DYAD_USER", "admin"), "user name (env DYAD_USER)")
	password := fs.String("password", envOr(env, "DYAD_PASSWORD", "admin"), "password (env DYAD_PASSWORD)")
	asJSON := fs.Bool("json", false, "print the API's JSON instead of tables")
	timeout := fs.Duration("timeout", 15*time.Second, "give up on a request after this long")
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "dyadctl: --timeout must be positive")
		return exitUsage
	}
	cmd, err := parseCommand(fs.Args())
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "dyadctl: %v\n\n", err)
		fs.Usage()
		return exitUsage
	case err != nil: // a refusal, such as a delete without --yes
		fmt.Fprintf(stderr, "dyadctl: %v\n", err)
		return exitUsage
	}
	c := apiclient.New(*url, *user, *password, &http.Client{Timeout: *timeout})
	if cmd.session != nil {
		if err := cmd.session(ctx, c, stdin, stdout); err != nil {
			fmt.Fprintf(stderr, "dyadctl: %s: %v\n", cmd.name, err)
			return exitFail
		}
		return exitOK
	}
	// The questions go to stderr: stdout keeps only the result, which
	// may be JSON for a script.
	if cmd.confirm != nil {
		err = cmd.confirm(ctx, c, stdin, stderr)
	}
	var v any
	switch {
	case err != nil: // refused: nothing is sent
	case cmd.ask != nil:
		v, err = cmd.ask(ctx, c, stdin, stderr)
	default:
		v, err = cmd.fetch(ctx, c)
	}
	if err != nil {
		fmt.Fprintf(stderr, "dyadctl: %s: %v\n", cmd.name, err)
		if errors.Is(err, errNotAsked) {
			return exitUsage
		}
		return exitFail
	}
	if *asJSON {
		err = printJSON(stdout, v)
	} else {
		err = cmd.print(stdout, v)
	}
	if err != nil {
		fmt.Fprintf(stderr, "dyadctl: %s: writing output: %v\n", cmd.name, err)
		return exitFail
	}
	return exitOK
}

func envOr(env func(string) string, key, def string) string {
	if v := env(key); v != "" {
		return v
	}
	return def
}

// command is one parsed command: what to fetch and how to show it, or an
// interactive session (a console) that writes to stdout itself.
type command struct {
	name  string
	fetch func(context.Context, *apiclient.Client) (any, error)
	print func(io.Writer, any) error
	// confirm, when set, asks the operator before fetch changes anything;
	// an error refuses the command.
	confirm func(ctx context.Context, c *apiclient.Client, stdin io.Reader, prompt io.Writer) error
	// ask, when set, replaces fetch for a command that may have to ask the
	// operator on the way (a Work On the unit wants confirmed, a
	// password).
	ask     func(ctx context.Context, c *apiclient.Client, stdin io.Reader, prompt io.Writer) (any, error)
	session func(ctx context.Context, c *apiclient.Client, stdin io.Reader, stdout io.Writer) error
}

func parseCommand(args []string) (command, error) {
	if len(args) == 0 {
		return command{}, fmt.Errorf("%w: no command given", errUsage)
	}
	words := strings.Join(args, " ")
	switch {
	case len(args) == 2 && args[0] == "unit" && args[1] == "show":
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.Unit(ctx) },
			print: func(w io.Writer, v any) error { return printUnit(w, v.(unit.Unit)) },
		}, nil
	case len(args) >= 2 && args[0] == "unit" && args[1] == "force-quorum":
		return parseUnitForceQuorum(words, args[2:])
	case len(args) >= 2 && args[0] == "unit" && (args[1] == unit.UnitShutdown || args[1] == unit.UnitRollingReboot):
		return parseUnitCommand(words, args[1], args[2:])
	case len(args) >= 1 && args[0] == "audit":
		return parseAudit(words, args[1:])
	case len(args) == 2 && args[0] == "pm" && args[1] == "list":
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.PMs(ctx) },
			print: func(w io.Writer, v any) error { return printPMs(w, v.([]unit.PM)) },
		}, nil
	case len(args) >= 2 && args[0] == "pm" && args[1] == "show":
		if len(args) != 3 {
			return command{}, fmt.Errorf("%w: pm show takes exactly one PM id", errUsage)
		}
		id, err := strconv.Atoi(args[2])
		if err != nil || id < 1 {
			return command{}, fmt.Errorf("%w: invalid PM id %q: want a positive integer", errUsage, args[2])
		}
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.PM(ctx, id) },
			print: func(w io.Writer, v any) error { return printPM(w, v.(unit.PM)) },
		}, nil
	case len(args) == 2 && args[0] == "alert" && args[1] == "list":
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.Alerts(ctx) },
			print: func(w io.Writer, v any) error { return printAlerts(w, v.([]unit.Alert)) },
		}, nil
	case len(args) == 2 && args[0] == "network" && args[1] == "list":
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.Networks(ctx) },
			print: func(w io.Writer, v any) error { return printNetworks(w, v.([]unit.Network)) },
		}, nil
	case len(args) >= 2 && args[0] == "network" && args[1] == "fix":
		if len(args) != 3 {
			return command{}, fmt.Errorf("%w: network fix takes a network id", errUsage)
		}
		id, err := strconv.Atoi(args[2])
		if err != nil || id < 1 {
			return command{}, fmt.Errorf("%w: invalid network id %q: want a positive integer", errUsage, args[2])
		}
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.FixNetwork(ctx, id) },
			print: func(w io.Writer, v any) error { return printNetworks(w, []unit.Network{v.(unit.Network)}) },
		}, nil
	case len(args) >= 2 && args[0] == "network" && args[1] == "rename":
		if len(args) != 4 {
			return command{}, fmt.Errorf("%w: network rename takes a network id and a name", errUsage)
		}
		id, err := strconv.Atoi(args[2])
		if err != nil || id < 1 {
			return command{}, fmt.Errorf("%w: invalid network id %q: want a positive integer", errUsage, args[2])
		}
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.RenameNetwork(ctx, id, args[3]) },
			print: func(w io.Writer, v any) error { return printNetworks(w, []unit.Network{v.(unit.Network)}) },
		}, nil
	}
	if cmd, ok, err := parseStorageCommand(args); ok {
		return cmd, err
	}
	if cmd, ok, err := parseVMCommand(args); ok {
		return cmd, err
	}
	if cmd, ok, err := parsePMCommand(args); ok {
		return cmd, err
	}
	return command{}, fmt.Errorf("%w: unknown command %q", errUsage, words)
}

func printNetworks(w io.Writer, nets []unit.Network) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tPM1 PORT\tPM2 PORT\tPROBLEM")
	for _, n := range nets {
		ports := map[int]string{}
		for _, p := range n.Ports {
			state := "down"
			if p.Up && p.Carrier {
				state = "up"
			}
			if p.SpeedMbps > 0 {
				state += fmt.Sprintf(" %d Mb/s", p.SpeedMbps)
			}
			ports[p.PM] = p.Port + " (" + state + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", n.ID, n.Name, orDash(ports[1]), orDash(ports[2]), orDash(n.Problem))
	}
	return tw.Flush()
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

func printUnit(w io.Writer, u unit.Unit) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "Name:\t%s\n", orDash(u.Name))
	fmt.Fprintf(tw, "Management IP:\t%s\n", orDash(u.ManagementIP))
	fmt.Fprintf(tw, "Primary:\t%s\n", u.PrimaryName())
	fmt.Fprintf(tw, "Epoch:\t%d\n", u.Epoch)
	fmt.Fprintf(tw, "Image version:\t%s\n", orDash(u.ImageVersion))
	fmt.Fprintf(tw, "Time:\t%s\n", formatTime(u.Time))
	fmt.Fprintf(tw, "Quorum:\t%s\n", quorumLine(u.Quorum))
	if u.Quorum.Holder != 0 {
		fmt.Fprintf(tw, "Lease holder:\t%s\n", u.Quorum.HolderText())
	}
	if u.Quorum.Error != "" {
		fmt.Fprintf(tw, "Quorum error:\t%s\n", u.Quorum.Error)
	}
	if u.Operation != "" {
		fmt.Fprintf(tw, "Operation:\t%s\n", u.Operation)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nPMs:")
	if err := printPMs(w, u.PMs); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nAlerts:")
	return printAlerts(w, u.Alerts)
}

func printPMs(w io.Writer, pms []unit.PM) error {
	if len(pms) == 0 {
		_, err := fmt.Fprintln(w, "No PMs reported.")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tROLE\tPRIV0\tIBIZ0\tUPTIME\tFAILURES\tVERSION\tALLOWED")
	for _, pm := range pms {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", pm.ID, orDash(pm.Name), orDash(pm.StateText()),
			orDash(string(pm.Role)), pathState(pm.Paths, unit.PathPriv0), pathState(pm.Paths, unit.PathIbiz0),
			unit.FormatUptime(pm.UptimeSeconds), pm.Failures, orDash(pm.ImageVersion), orDash(strings.Join(pm.Allowed, ",")))
	}
	return tw.Flush()
}

func printPM(w io.Writer, pm unit.PM) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "ID:\t%d\n", pm.ID)
	fmt.Fprintf(tw, "Name:\t%s\n", orDash(pm.Name))
	fmt.Fprintf(tw, "State:\t%s\n", orDash(pm.StateText()))
	fmt.Fprintf(tw, "Activity:\t%s\n", orDash(pm.Activity))
	fmt.Fprintf(tw, "Role:\t%s\n", orDash(string(pm.Role)))
	fmt.Fprintf(tw, "Uptime:\t%s\n", unit.FormatUptime(pm.UptimeSeconds))
	fmt.Fprintf(tw, "Image version:\t%s\n", orDash(pm.ImageVersion))
	fmt.Fprintf(tw, "Boot ID:\t%s\n", orDash(pm.BootID))
	fmt.Fprintf(tw, "Addresses:\t%s\n", orDash(strings.Join(pm.Addresses, ", ")))
	fmt.Fprintf(tw, "Last seen:\t%s\n", formatTime(pm.LastSeen))
	fmt.Fprintf(tw, "Maintenance:\t%s\n", yesNo(pm.Maintenance))
	fmt.Fprintf(tw, "Failures:\t%d within the last hour\n", pm.Failures)
	fmt.Fprintf(tw, "Allowed:\t%s\n", orDash(strings.Join(pm.Allowed, ", ")))
	bmc := "none"
	if pm.BMC != nil {
		bmc = pm.BMC.Addr + ", user " + pm.BMC.User
	}
	fmt.Fprintf(tw, "BMC:\t%s\n", bmc)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nHeartbeat paths:")
	if len(pm.Paths) == 0 {
		fmt.Fprintln(w, "None reported.")
	} else {
		tw = newTable(w)
		fmt.Fprintln(tw, "PATH\tSTATE\tLAST SEEN")
		for _, p := range pm.Paths {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, upDown(p.Up), formatTime(p.LastSeen))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if pm.Hardware == nil {
		return nil
	}
	hw, err := json.MarshalIndent(pm.Hardware, "", "  ")
	if err != nil {
		return fmt.Errorf("formatting hardware inventory: %w", err)
	}
	_, err = fmt.Fprintf(w, "\nHardware:\n%s\n", hw)
	return err
}

func printAlerts(w io.Writer, alerts []unit.Alert) error {
	if len(alerts) == 0 {
		_, err := fmt.Fprintln(w, "No active alerts.")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "SEVERITY\tSOURCE\tSINCE\tMESSAGE")
	for _, a := range alerts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Severity, orDash(a.Source), formatTime(a.Since), a.Message)
	}
	return tw.Flush()
}

// pathState shows a heartbeat path as up or down; "-" when the PM did not
// report it at all.
func pathState(paths []unit.Path, name string) string {
	for _, p := range paths {
		if p.Name == name {
			return upDown(p.Up)
		}
	}
	return "-"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}
