// Command dyad-drbd-helper is the DRBD usermode helper of a PM: the kernel
// runs it as `dyad-drbd-helper <cmd> minor-<N>|<resource>` (the agent sets
// /sys/module/drbd/parameters/usermode_helper to it). It forwards the call
// to the agent and exits with the agent's answer. When the agent cannot be
// asked, fence-peer exits 1, which DRBD takes as a broken helper: the peer
// is not marked outdated, the only answer that cannot cause a split brain.
// Every other command exits 0, because a non-zero exit of, for example,
// before-resync-target makes DRBD drop the connection.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/dyad-ha/dyad/services/storage/drbdhelper"
)

func main() {
	// The kernel discards stderr; without /dev/kmsg the line is lost,
	// which is fine.
	kmsg, _ := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	log := func(warn bool, line string) {
		fmt.Fprintln(os.Stderr, line)
		if kmsg != nil {
			level := "<5>" // notice
			if warn {
				level = "<4>"
			}
			kmsg.WriteString(level + line + "\n") // one write is one kernel log record
		}
	}
	ask := func(ctx context.Context, c drbdhelper.Call) (int, error) {
		return drbdhelper.Ask(ctx, drbdhelper.SocketPath, c)
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Environ(), ask, log))
}

// run handles one call and returns the exit code. ask reaches the agent;
// log writes a line (warn for one that reports a failure).
func run(ctx context.Context, args, env []string,
	ask func(context.Context, drbdhelper.Call) (int, error), log func(warn bool, line string)) int {
	c, err := drbdhelper.ParseCall(args, env)
	if err != nil {
		cmd := ""
		if len(args) > 0 {
			cmd = args[0]
		}
		exit := exitCode(cmd, 0, err)
		log(true, fmt.Sprintf("dyad-drbd-helper: %q -> %d (%v)", strings.Join(args, " "), exit, err))
		return exit
	}
	ctx, cancel := context.WithTimeout(ctx, drbdhelper.Timeout(c.Cmd))
	defer cancel()
	answer, err := ask(ctx, c)
	exit := exitCode(c.Cmd, answer, err)
	if err != nil {
		log(true, fmt.Sprintf("dyad-drbd-helper: %s %s -> %d (no answer from the agent: %v)", c.Cmd, c.Target(), exit, err))
	} else {
		log(false, fmt.Sprintf("dyad-drbd-helper: %s %s -> %d", c.Cmd, c.Target(), exit))
	}
	return exit
}

// exitCode is the helper's exit code for the agent's answer, or for err
// when there is none.
func exitCode(cmd string, answer int, err error) int {
	switch {
	case err == nil:
		return answer
	case cmd == drbdhelper.CmdFencePeer:
		return 1
	}
	return 0
}
