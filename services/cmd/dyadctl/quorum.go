package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
)

// forceQuorumRisk is what dyadctl tells the operator before it forces
// quorum: the risk in the API's words, and the step that avoids it.
const forceQuorumRisk = "Force Quorum lets this PM run the unit's VMs alone without proof that its peer is down.\n" +
	"If the peer is running them, both PMs write the same volumes (split brain) and one\n" +
	"side's writes must later be discarded. Make sure the peer PM is powered off first."

// errNotAsked refuses a command that dyadctl must ask about but cannot
// (stdin is not a terminal); like a delete without --yes, it is a usage
// error.
var errNotAsked = errors.New("not confirmed")

// errDeclined is the operator's "no".
var errDeclined = errors.New("not confirmed: nothing was changed")

// parseUnitForceQuorum parses "unit force-quorum [--yes]" (args after
// "force-quorum").
func parseUnitForceQuorum(words string, args []string) (command, error) {
	fs := subFlags("unit force-quorum")
	yes := fs.Bool("yes", false, "do not ask: the operator has made sure the peer PM is down")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return command{}, err
	}
	if len(pos) != 0 {
		return command{}, fmt.Errorf("%w: unit force-quorum takes no arguments, only --yes", errUsage)
	}
	return command{
		name: words,
		confirm: func(ctx context.Context, c *apiclient.Client, stdin io.Reader, prompt io.Writer) error {
			if *yes {
				return nil
			}
			return askForceQuorum(ctx, c, stdin, prompt)
		},
		fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.ForceQuorum(ctx) },
		print: func(w io.Writer, v any) error { return printForced(w, v.(unit.Unit)) },
	}, nil
}

// askForceQuorum shows the unit's quorum and the risk, and asks the
// operator to type yes (askYes). It checks for a terminal before it reads
// the unit, so that a script learns at once that it must say --yes.
func askForceQuorum(ctx context.Context, c *apiclient.Client, stdin io.Reader, prompt io.Writer) error {
	const refusal = "once you have made sure the peer PM is down, run again with --yes"
	if _, ok := terminalFd(stdin); !ok {
		return notAsked(refusal)
	}
	u, err := c.Unit(ctx)
	if err != nil {
		return fmt.Errorf("reading the unit's quorum: %w", err)
	}
	return askYes(ctx, stdin, prompt, fmt.Sprintf("Quorum: %s\n\n%s\n\nType yes to force quorum: ", quorumLine(u.Quorum), forceQuorumRisk), refusal)
}

// readAnswer reads one line from stdin. A read from a terminal does not
// end with ctx (Ctrl-C only cancels it), so the read is left behind then:
// dyadctl exits right after.
func readAnswer(ctx context.Context, stdin io.Reader) (string, error) {
	type line struct {
		s   string
		err error
	}
	got := make(chan line, 1)
	go func() {
		s, err := bufio.NewReader(stdin).ReadString('\n')
		got <- line{s, err}
	}()
	select {
	case l := <-got:
		if l.err != nil && !errors.Is(l.err, io.EOF) {
			return "", fmt.Errorf("reading the answer: %w", l.err)
		}
		return strings.TrimSpace(l.s), nil
	case <-ctx.Done():
		return "", fmt.Errorf("%w: interrupted", errDeclined)
	}
}

// quorumLine is the unit's quorum in one line: "SERVERS — VERDICT: REASON".
func quorumLine(q unit.Quorum) string {
	servers := "none"
	if len(q.Servers) > 0 {
		servers = strings.Join(q.Servers, ", ")
	}
	line := servers + " — " + q.VerdictText()
	if q.Reason != "" {
		line += ": " + q.Reason
	}
	return line
}

func printForced(w io.Writer, u unit.Unit) error {
	_, err := fmt.Fprintf(w, "Quorum forced: %s runs the unit's VMs alone until its peer is heard again.\nQuorum: %s\n",
		u.PrimaryName(), quorumLine(u.Quorum))
	return err
}
