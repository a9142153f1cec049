package scenario

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
)

const (
	agentLogPath = "/data/log/dyad-agent.log"
	bootIDPath   = "/proc/sys/kernel/random/boot_id"

	// bootTimeout covers one PM booting under software emulation until its
	// agent runs (or gives up on its configuration), on a host shared with
	// other emulated PMs.
	bootTimeout = 3 * time.Minute
	// offTimeout covers init's whole shutdown: up to 15 s for the services
	// (SIGTERM, SIGKILL after 10 s), sync, unmount, power off.
	offTimeout = time.Minute
	// crashLoopWindow is guest time watched for a restart after a
	// configuration error: init's first restart would come after 1 s and the
	// second 2 s later, so a loop shows at least twice within it.
	crashLoopWindow = 5 * time.Second
)

// harnessPowerOn starts the line the harness writes into the serial log
// before every power-on of a PM.
const harnessPowerOn = "=== harness: pm"

// currentBoot returns the part of a PM's serial log written since its
// latest power-on.
func currentBoot(pm *harness.PM) string {
	log := string(pm.SerialLog())
	if i := strings.LastIndex(log, harnessPowerOn); i >= 0 {
		return log[i:]
	}
	return log
}

// serialLines splits a serial log into lines without the tty's carriage
// returns.
func serialLines(log string) []string {
	lines := strings.Split(log, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, "\r")
	}
	return lines
}

// findInOrder returns the first step of steps that does not occur in log
// after the previous one, or nil when all occur in this order. A step
// matches a line that contains every one of its fragments.
func findInOrder(log string, steps [][]string) []string {
	lines := serialLines(log)
	i := 0
	for _, step := range steps {
		for i < len(lines) && !containsAll(lines[i], step) {
			i++
		}
		if i == len(lines) {
			return step
		}
		i++
	}
	return nil
}

func containsAll(s string, fragments []string) bool {
	for _, f := range fragments {
		if !strings.Contains(s, f) {
			return false
		}
	}
	return true
}

func countLines(log string, fragments ...string) int {
	n := 0
	for _, l := range serialLines(log) {
		if containsAll(l, fragments) {
			n++
		}
	}
	return n
}

func readBootID(t *testing.T, ctx context.Context, pm *harness.PM) string {
	t.Helper()
	b, err := pm.ReadFile(ctx, bootIDPath)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		t.Fatalf("pm%d: %s is empty", pm.N(), bootIDPath)
	}
	return id
}

// guestUptime is the PM's uptime from /proc/uptime.
func guestUptime(ctx context.Context, pm *harness.PM) (time.Duration, error) {
	b, err := pm.ReadFile(ctx, "/proc/uptime")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("pm%d: /proc/uptime is empty", pm.N())
	}
	s, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("pm%d: /proc/uptime %q: %w", pm.N(), b, err)
	}
	return time.Duration(s * float64(time.Second)), nil
}

// agentLogs returns the rotated agent log followed by the current one, so
// that lines survive a rotation between two reads.
func agentLogs(ctx context.Context, pm *harness.PM) ([]byte, error) {
	cur, err := pm.ReadFile(ctx, agentLogPath)
	if err != nil {
		return nil, err
	}
	old, err := pm.ReadFile(ctx, agentLogPath+".1")
	if err != nil && !strings.Contains(err.Error(), "no such file") {
		return nil, err
	}
	return append(old, cur...), nil
}

func TestPowerButtonShutdown(t *testing.T) {
	ctx := t.Context()
	u := harness.StartT(t, harness.Options{N: 1})
	pm := u.PM(1)
	start := time.Now()

	var first []byte
	err := harness.WaitFor(ctx, bootTimeout, "the agent to start and log to "+agentLogPath, func(ctx context.Context) (bool, error) {
		var err error
		first, err = pm.ReadFile(ctx, agentLogPath)
		return bytes.Contains(first, []byte(`msg="agent started"`)), err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("agent logging after %s", time.Since(start).Round(time.Millisecond))
	firstBoot := readBootID(t, ctx, pm)
	// The harness hands out a blank disk: the first boot must have made the
	// data partition, or the second boot proves nothing about keeping it.
	if log := currentBoot(pm); !strings.Contains(log, "data partition created and mounted") {
		t.Fatalf("first boot did not create the data partition on the blank disk")
	}

	pressed := time.Now()
	if err := pm.PowerDown(ctx); err != nil {
		t.Fatal(err)
	}
	offCtx, cancel := context.WithTimeout(ctx, offTimeout)
	defer cancel()
	if err := pm.WaitOff(offCtx); err != nil {
		t.Fatal(err)
	}
	t.Logf("powered off %s after the power button", time.Since(pressed).Round(time.Millisecond))

	shutdownLog := currentBoot(pm)
	if missing := findInOrder(shutdownLog, [][]string{
		{"dyad-init: shutdown (power button): power off"},
		{"dyad-init: service exited", "service=dyad-agent", `exit="exit status 0"`},
		{`dyad-init: unmounted"`, "target=/data"},
		{"dyad-init: shutdown complete; power off now"},
	}); missing != nil {
		t.Errorf("serial log lacks the orderly shutdown step %q in its place", missing)
	}
	for _, bad := range []string{"services did not stop", "killing them", "unmounted lazily", "unmount failed", "restarting service"} {
		if strings.Contains(shutdownLog, bad) {
			t.Errorf("shutdown was not orderly: serial log says %q", bad)
		}
	}

	if err := pm.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(ctx, bootTimeout, "pm1's test channel after power on", func(ctx context.Context) (bool, error) {
		err := pm.Ping(ctx)
		return err == nil, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if secondBoot := readBootID(t, ctx, pm); secondBoot == firstBoot {
		t.Errorf("boot id %s unchanged: the PM did not boot again", secondBoot)
	}
	// Init mounts the data partition before it opens the test channel.
	secondLog := currentBoot(pm)
	if !strings.Contains(secondLog, `msg="data partition mounted"`) {
		t.Errorf("second boot did not mount the existing data partition")
	}
	for _, bad := range []string{"creating the data partition", "data partition created", "no data partition"} {
		if strings.Contains(secondLog, bad) {
			t.Errorf("second boot did not find the data partition it made: serial log says %q", bad)
		}
	}

	// The first boot's log is still there, and the new agent appends to it.
	// Init writes each line of a service to its log file before the console.
	err = harness.WaitFor(ctx, bootTimeout, "the second boot's agent to start", func(ctx context.Context) (bool, error) {
		return countLines(currentBoot(pm), "[dyad-agent] ", `msg="agent started"`) > 0, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logs, err := agentLogs(ctx, pm)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(logs, first) {
		t.Errorf("%s lost the first boot's lines; it holds:\n%s", agentLogPath, logs)
	}
	if n := bytes.Count(logs, []byte(`msg="agent started"`)); n < 2 {
		t.Errorf("%s holds %d agent starts after two boots:\n%s", agentLogPath, n, logs)
	}
	// Init's console is kept on the data partition: after the reboot it
	// still tells why the PM went down.
	console, err := pm.ReadFile(ctx, "/data/log/console.log")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dyad-init: shutdown (power button)", "dyad-init: ready"} {
		if !bytes.Contains(console, []byte(want)) {
			t.Errorf("/data/log/console.log lacks %q from the first boot", want)
		}
	}
	t.Logf("whole test %s", time.Since(start).Round(time.Millisecond))
}

func TestBadConfigClearError(t *testing.T) {
	ctx := t.Context()
	// The harness passes dyad.node=1 first: the later value wins, in the
	// kernel's parsing as in init/cmdline.
	u := harness.StartT(t, harness.Options{N: 1, ExtraCmdline: []string{"dyad.node=7"}})
	pm := u.PM(1)
	start := time.Now()

	const refused = "dyad-init: dyad-agent reported a configuration error; not restarting"
	err := harness.WaitFor(ctx, bootTimeout, "the agent's configuration error and init's refusal to restart it", func(ctx context.Context) (bool, error) {
		log := currentBoot(pm)
		return strings.Contains(log, "[dyad-agent] dyad-agent: configuration error:") &&
			countLines(log, "[dyad-agent] ", "dyad.node", `"7"`) > 0 &&
			strings.Contains(log, refused), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("configuration error reported after %s", time.Since(start).Round(time.Millisecond))

	// Watch the guest's own clock, not the host's: under emulation a host
	// second may be much less of a guest second.
	since, err := guestUptime(ctx, pm)
	if err != nil {
		t.Fatal(err)
	}
	started := func() int { return countLines(currentBoot(pm), "dyad-init: service started", "service=dyad-agent") }
	err = harness.WaitFor(ctx, time.Minute, fmt.Sprintf("%s of guest uptime to pass", crashLoopWindow), func(ctx context.Context) (bool, error) {
		if started() > 1 {
			return true, nil // a restart: no need to watch further
		}
		up, err := guestUptime(ctx, pm)
		return up-since >= crashLoopWindow, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := started(); n != 1 {
		t.Fatalf("agent started %d times, want exactly 1: init restarts an agent that reported a configuration error", n)
	}

	// The operator finds the reason in init's copy of the agent's output.
	ring, err := pm.ServiceLog(ctx, "dyad-agent")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(ring, []byte("dyad.node")) {
		t.Errorf("dyad-agent's log ring lacks the configuration error:\n%s", ring)
	}
	if err := pm.Ping(ctx); err != nil {
		t.Fatalf("PM unreachable after the agent's configuration error: %v", err)
	}
}
