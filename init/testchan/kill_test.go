package testchan

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParsePidfile(t *testing.T) {
	for _, tc := range []struct {
		in     string
		want   int
		errHas string
	}{
		{"1234\n", 1234, ""},
		{"1234", 1234, ""},
		{"42 \r\n", 42, ""},
		{"4194304\n", 4194304, ""},
		{"", 0, "empty"},
		{"\n", 0, "empty"},
		{"0\n", 0, "not a process"},
		{"1\n", 0, "not a process"},
		{"-1\n", 0, "not a pid"},
		{"+5\n", 0, "not a pid"},
		{" 5\n", 0, "not a pid"},
		{"5 6\n", 0, "not a pid"},
		{"0x10\n", 0, "not a pid"},
		{"4194305\n", 0, "out of the range"},
		{"99999999999999999999999\n", 0, "out of the range"},
	} {
		got, err := ParsePidfile([]byte(tc.in))
		if got != tc.want || (tc.errHas == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("ParsePidfile(%q) = %d, %v; want %d, error containing %q", tc.in, got, err, tc.want, tc.errHas)
		}
	}
}

func FuzzParsePidfile(f *testing.F) {
	for _, s := range []string{"1234\n", "", "1\n", "-1", "4194305", "00012\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pid, err := ParsePidfile(b)
		if err != nil {
			if pid != 0 {
				t.Fatalf("ParsePidfile(%q) = %d with error %v", b, pid, err)
			}
			return
		}
		if pid <= 1 || pid > 1<<22 {
			t.Fatalf("ParsePidfile(%q) = %d, which may not be signalled", b, pid)
		}
		if n, _ := strconv.Atoi(strings.TrimRight(string(b), " \t\r\n")); n != pid {
			t.Fatalf("ParsePidfile(%q) = %d, the file says %d", b, pid, n)
		}
	})
}

func TestKillPidfile(t *testing.T) {
	h := newHarness(t, 0)
	dir := t.TempDir()
	// start runs a process that only a signal ends, as a grandchild: the
	// harness's reaper takes the exit status of this process's children,
	// so a shell in between waits for it and reports how it ended in a
	// file (128 + the signal's number).
	start := func(t *testing.T, name string) (pidfile, statusFile string) {
		t.Helper()
		pidfile = filepath.Join(dir, name+".pid")
		statusFile = filepath.Join(dir, name+".status")
		cmd := exec.Command("/bin/sh", "-c", `/bin/sleep 600 & echo $! > "$1.tmp" && mv "$1.tmp" "$1"; wait $!; echo $? > "$2.tmp" && mv "$2.tmp" "$2"`, "sh", pidfile, statusFile)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// The sleep, if the test failed before killing it.
			if b, err := os.ReadFile(pidfile); err == nil {
				if pid, err := ParsePidfile(b); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		})
		waitFile(t, pidfile)
		return pidfile, statusFile
	}
	for _, tc := range []struct {
		signal string
		want   syscall.Signal
	}{
		{"KILL", syscall.SIGKILL},
		{"TERM", syscall.SIGTERM},
	} {
		t.Run(tc.signal, func(t *testing.T) {
			pidfile, statusFile := start(t, tc.signal)
			b, _ := os.ReadFile(pidfile)
			resp := h.call(fmt.Sprintf(`{"id":1,"op":"killpid","path":%q,"signal":%q}`, pidfile, tc.signal))
			if resp.Error != "" || string(resp.Data) != strings.TrimSpace(string(b)) {
				t.Fatalf("killpid: data %q error %q, want the pid %s", resp.Data, resp.Error, b)
			}
			status := strings.TrimSpace(string(waitFile(t, statusFile)))
			if want := strconv.Itoa(128 + int(tc.want)); status != want {
				t.Errorf("sleep ended with status %s, want %s (%v)", status, want, tc.want)
			}
		})
	}

	// A stale pid file: pids stay below pid_max, which is at most 2^22.
	stale := filepath.Join(dir, "stale.pid")
	os.WriteFile(stale, []byte(strconv.Itoa(1<<22)+"\n"), 0o644)
	initFile := filepath.Join(dir, "init.pid")
	os.WriteFile(initFile, []byte("1\n"), 0o644)
	long := filepath.Join(dir, "long.pid")
	os.WriteFile(long, []byte(strings.Repeat("1", 100)), 0o644)
	for _, tc := range []struct {
		name   string
		path   string
		errHas string
	}{
		{"missing file", filepath.Join(dir, "none.pid"), "no such file"},
		{"stale pid", stale, "no such process"},
		{"init", initFile, "not a process that may be signalled"},
		{"not a pid file", long, "longer than a pid file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.call(fmt.Sprintf(`{"id":2,"op":"killpid","path":%q,"signal":"KILL"}`, tc.path))
			if !strings.Contains(resp.Error, tc.errHas) || resp.Data != nil {
				t.Errorf("killpid %s: data %q error %q, want an error containing %q", tc.path, resp.Data, resp.Error, tc.errHas)
			}
		})
	}
}

// waitFile returns the content of path once it exists.
func waitFile(t *testing.T, path string) []byte {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not there after 20s: %v", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
