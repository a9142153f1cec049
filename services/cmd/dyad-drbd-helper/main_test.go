package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/storage/drbdhelper"
)

func TestExitCode(t *testing.T) {
	unreachable := errors.New("reach the agent: connection refused")
	tests := []struct {
		cmd    string
		answer int
		err    error
		want   int
	}{
		{"fence-peer", drbdhelper.FencePeerOutdated, nil, 4},
		{"fence-peer", drbdhelper.FencePeerUnreachable, nil, 5},
		{"fence-peer", 0, unreachable, 1},
		{"fence-peer", 4, unreachable, 1}, // an answer with an error is no answer
		{"before-resync-target", 0, nil, 0},
		{"before-resync-target", 1, nil, 1}, // the agent may refuse a resync
		{"before-resync-target", 0, unreachable, 0},
		{"split-brain", 0, unreachable, 0},
		{"nonsense", 0, unreachable, 0},
		{"", 0, unreachable, 0},
	}
	for _, tt := range tests {
		if got := exitCode(tt.cmd, tt.answer, tt.err); got != tt.want {
			t.Errorf("exitCode(%q, %d, %v) = %d, want %d", tt.cmd, tt.answer, tt.err, got, tt.want)
		}
	}
}

type logged struct {
	warn bool
	line string
}

func runWith(t *testing.T, args, env []string, ask func(context.Context, drbdhelper.Call) (int, error)) (int, []logged) {
	t.Helper()
	var lines []logged
	exit := run(context.Background(), args, env, ask, func(warn bool, line string) {
		lines = append(lines, logged{warn, line})
	})
	return exit, lines
}

func TestRun(t *testing.T) {
	env := []string{"HOME=/", "DRBD_PEER_AF=ipv4", "DRBD_PEER_ADDRESS=169.254.42.2"}
	var got drbdhelper.Call
	var deadline time.Duration
	exit, lines := runWith(t, []string{"fence-peer", "r3"}, env, func(ctx context.Context, c drbdhelper.Call) (int, error) {
		got = c
		dl, _ := ctx.Deadline()
		deadline = time.Until(dl)
		return 5, nil
	})
	if exit != 5 || got.Resource != "r3" || got.Env["DRBD_PEER_ADDRESS"] != "169.254.42.2" {
		t.Errorf("exit %d, call %+v", exit, got)
	}
	if deadline < 50*time.Second || deadline > 60*time.Second {
		t.Errorf("fence-peer waits %v for the agent", deadline)
	}
	if len(lines) != 1 || lines[0] != (logged{false, "dyad-drbd-helper: fence-peer r3 -> 5"}) {
		t.Errorf("log %+v", lines)
	}

	exit, lines = runWith(t, []string{"split-brain", "minor-3"}, nil, func(ctx context.Context, c drbdhelper.Call) (int, error) {
		dl, _ := ctx.Deadline()
		if d := time.Until(dl); d > 10*time.Second {
			t.Errorf("split-brain waits %v", d)
		}
		return 0, errors.New("agent gone")
	})
	if exit != 0 || len(lines) != 1 || !lines[0].warn || lines[0].line != "dyad-drbd-helper: split-brain minor-3 -> 0 (no answer from the agent: agent gone)" {
		t.Errorf("exit %d, log %+v", exit, lines)
	}

	noAsk := func(context.Context, drbdhelper.Call) (int, error) {
		t.Error("asked the agent about a bad call")
		return 0, nil
	}
	exit, lines = runWith(t, []string{"fence-peer"}, nil, noAsk)
	if exit != 1 || len(lines) != 1 || !strings.Contains(lines[0].line, `"fence-peer" -> 1`) {
		t.Errorf("bad fence-peer call: exit %d, log %+v", exit, lines)
	}
	exit, _ = runWith(t, []string{"quorum-lost", "r1"}, nil, noAsk)
	if exit != 0 {
		t.Errorf("unknown command: exit %d", exit)
	}
	exit, _ = runWith(t, nil, nil, noAsk)
	if exit != 0 {
		t.Errorf("no arguments: exit %d", exit)
	}
}

// With no agent listening, the real Ask fails at once and fence-peer says 1.
func TestRunNoAgent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	ask := func(ctx context.Context, c drbdhelper.Call) (int, error) { return drbdhelper.Ask(ctx, sock, c) }
	start := time.Now()
	if exit, _ := runWith(t, []string{"fence-peer", "r1"}, nil, ask); exit != 1 {
		t.Errorf("fence-peer without an agent: exit %d", exit)
	}
	if exit, _ := runWith(t, []string{"after-resync-target", "minor-1"}, nil, ask); exit != 0 {
		t.Errorf("after-resync-target without an agent: exit %d", exit)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}
