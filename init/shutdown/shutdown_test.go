package shutdown

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestFromSignal(t *testing.T) {
	for _, tc := range []struct {
		sig    os.Signal
		ok     bool
		action Action
	}{
		{unix.SIGTERM, true, PowerOff},
		{unix.SIGUSR2, true, PowerOff},
		{unix.SIGINT, true, Reboot},
		{unix.SIGHUP, false, 0},
	} {
		req, ok := FromSignal(tc.sig)
		if ok != tc.ok || (ok && req.Action != tc.action) {
			t.Errorf("FromSignal(%v) = %+v, %v; want %v, %v", tc.sig, req, ok, tc.action, tc.ok)
		}
	}
}

// recorder fakes every collaborator of a Sequence and records the calls in
// order.
type recorder struct {
	calls     []string
	busy      map[string]bool
	notMnt    map[string]bool
	rebootErr error
	stopErr   error
	fedAt     []int // len(calls) at each watchdog feed
	// stragglers live after the services stop; they ignore SIGTERM when
	// stubborn.
	stragglers int
	stubborn   bool
}

func (r *recorder) Processes() (int, error) { return r.stragglers, nil }

func (r *recorder) SignalAll(sig unix.Signal) error {
	r.calls = append(r.calls, "signal "+unix.SignalName(sig))
	if sig == unix.SIGKILL || !r.stubborn {
		r.stragglers = 0
	}
	return nil
}

func (r *recorder) Sync() { r.calls = append(r.calls, "sync") }

func (r *recorder) Unmount(target string, flags int) error {
	if flags&unix.MNT_DETACH != 0 {
		r.calls = append(r.calls, "umount -l "+target)
		return nil
	}
	if r.busy[target] {
		return fmt.Errorf("unmount %s: %w", target, unix.EBUSY)
	}
	if r.notMnt[target] {
		return fmt.Errorf("unmount %s: %w", target, unix.EINVAL)
	}
	r.calls = append(r.calls, "umount "+target)
	return nil
}

func (r *recorder) Reboot(cmd int) error {
	r.calls = append(r.calls, fmt.Sprintf("reboot %#x", cmd))
	return r.rebootErr
}

func (r *recorder) Stop(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		r.calls = append(r.calls, "stop without deadline")
	}
	r.calls = append(r.calls, "stop services")
	return r.stopErr
}

func (r *recorder) Feed() error {
	r.fedAt = append(r.fedAt, len(r.calls))
	return nil
}

func (r *recorder) Disarm() error {
	r.calls = append(r.calls, "disarm")
	return nil
}

func TestUserProcess(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want bool
	}{
		{"1234 (sleep) S 1 1234 1234 0 -1 4194304 100 0 0 0", true},
		{"5 (my (odd) name) R 1 5 5 0 -1 4194560 1 0", true},
		{"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0", false}, // PF_KTHREAD
		{"77 (defunct) Z 1 77 77 0 -1 4227084 0 0", false},
		{"garbage", false},
		{"9 (short) S 1", false},
	} {
		if got := userProcess([]byte(tc.stat)); got != tc.want {
			t.Errorf("userProcess(%q) = %v, want %v", tc.stat, got, tc.want)
		}
	}
}

func TestLinuxProcessesCountsThisTest(t *testing.T) {
	n, err := Linux{}.Processes()
	if err != nil {
		t.Fatal(err)
	}
	// At least the test binary itself (it is not PID 1).
	if n < 1 {
		t.Fatalf("Processes() = %d on a host running this test", n)
	}
}

func TestSequence(t *testing.T) {
	for _, tc := range []struct {
		name      string
		req       Request
		rec       *recorder
		noWD      bool
		wantCalls []string
		wantFed   []int // indexes in wantCalls of the steps the watchdog is fed before
		wantErr   bool
	}{
		{
			name: "power off",
			req:  Request{PowerOff, "power button"},
			rec:  &recorder{},
			wantCalls: []string{"stop services", "sync", "umount /data", "umount /tmp", "sync", "disarm",
				fmt.Sprintf("reboot %#x", unix.LINUX_REBOOT_CMD_POWER_OFF)},
			wantFed: []int{0, 1, 2, 3, 4},
		},
		{
			name: "reboot with busy data and a failing service stop",
			req:  Request{Reboot, "test channel"},
			rec:  &recorder{busy: map[string]bool{"/data": true}, notMnt: map[string]bool{"/tmp": true}, stopErr: context.DeadlineExceeded},
			noWD: true,
			wantCalls: []string{"stop services", "sync", "umount -l /data", "sync",
				fmt.Sprintf("reboot %#x", unix.LINUX_REBOOT_CMD_RESTART)},
		},
		{
			name: "leftover processes that ignore SIGTERM",
			req:  Request{PowerOff, "power button"},
			rec:  &recorder{stragglers: 2, stubborn: true},
			wantCalls: []string{"stop services", "signal SIGTERM", "signal SIGKILL", "sync", "umount /data", "umount /tmp", "sync", "disarm",
				fmt.Sprintf("reboot %#x", unix.LINUX_REBOOT_CMD_POWER_OFF)},
			wantFed: []int{0, 1, 2, 3, 4, 5, 6},
		},
		{
			name:    "reboot fails",
			req:     Request{PowerOff, "SIGTERM"},
			rec:     &recorder{rebootErr: unix.EPERM},
			wantErr: true,
			wantCalls: []string{"stop services", "sync", "umount /data", "umount /tmp", "sync", "disarm",
				fmt.Sprintf("reboot %#x", unix.LINUX_REBOOT_CMD_POWER_OFF)},
			wantFed: []int{0, 1, 2, 3, 4},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			q := &Sequence{
				Log:         slog.New(slog.NewTextHandler(&logs, nil)),
				System:      tc.rec,
				Services:    tc.rec,
				Unmount:     []string{"/data", "/tmp"},
				StopTimeout: 1e9,
				// Stubborn stragglers make the sequence wait this long.
				StragglerWait: 20 * time.Millisecond,
			}
			if !tc.noWD {
				q.Watchdog = tc.rec
			}
			err := q.Run(context.Background(), tc.req)
			if (err != nil) != tc.wantErr {
				t.Errorf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !slices.Equal(tc.rec.fedAt, tc.wantFed) {
				t.Errorf("watchdog fed before calls %v, want %v (calls %q)", tc.rec.fedAt, tc.wantFed, tc.rec.calls)
			}
			if !slices.Equal(tc.rec.calls, tc.wantCalls) {
				t.Errorf("calls:\n got %q\nwant %q", tc.rec.calls, tc.wantCalls)
			}
			if want := "dyad-init: shutdown (" + tc.req.Reason + ")"; !strings.Contains(logs.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, logs.String())
			}
		})
	}
}

// The real adapter, limited to calls that are harmless on a test host.
func TestLinuxUnmountNotMounted(t *testing.T) {
	Linux{}.Sync()
	err := Linux{}.Unmount(t.TempDir(), 0)
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("err = %v, want EINVAL", err)
	}
}
