package supervise

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/init/reap"
)

// The test binary doubles as the supervised service: with DYAD_TEST_SERVICE
// set it behaves as the named kind of service instead of running tests.
func TestMain(m *testing.M) {
	if mode := os.Getenv("DYAD_TEST_SERVICE"); mode != "" {
		serviceMain(mode)
		return
	}
	os.Exit(m.Run())
}

func serviceMain(mode string) {
	if f := os.Getenv("DYAD_TEST_STARTS"); f != "" {
		fh, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err == nil {
			fmt.Fprintln(fh, time.Now().UnixNano())
			fh.Close()
		}
	}
	switch mode {
	case "crash":
		fmt.Println("crashing now")
		os.Exit(1)
	case "slowcrash":
		time.Sleep(300 * time.Millisecond)
		os.Exit(1)
	case "config":
		fmt.Println("loading config")
		fmt.Fprintln(os.Stderr, "dyad.unit is missing")
		os.Exit(ExitConfig)
	case "long":
		if os.Getenv("DYAD_TEST_IGNORE_TERM") == "1" {
			signal.Ignore(syscall.SIGTERM)
		}
		fmt.Println("service up")
		time.Sleep(time.Hour)
	case "chatty":
		for i := range 2000 {
			fmt.Printf("line %04d %s\n", i, strings.Repeat("x", 100))
		}
		time.Sleep(time.Hour)
	}
	os.Exit(2)
}

// syncBuffer is a console that tests can read while the supervisor writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type fixture struct {
	sup     *Supervisor
	console *syncBuffer
	logDir  string
	starts  string
}

func newFixture(t *testing.T, mode string, extraEnv []string, tune func(*Config)) *fixture {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &fixture{console: &syncBuffer{}, logDir: filepath.Join(dir, "log"), starts: filepath.Join(dir, "starts")}
	cfg := DefaultConfig(f.console)
	cfg.LogDir = f.logDir
	cfg.MinBackoff = 50 * time.Millisecond
	cfg.MaxBackoff = 400 * time.Millisecond
	cfg.ResetAfter = time.Hour
	cfg.StopTimeout = 10 * time.Second
	if tune != nil {
		tune(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := reap.New()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	go r.Run(ctx, log)
	env := append([]string{"DYAD_TEST_SERVICE=" + mode, "DYAD_TEST_STARTS=" + f.starts}, extraEnv...)
	f.sup = New(log, r, cfg, Service{Name: "svc", Path: exe, Env: env})
	f.sup.Start(ctx)
	t.Cleanup(func() {
		stopCtx, c := context.WithTimeout(context.Background(), 20*time.Second)
		defer c()
		if err := f.sup.Stop(stopCtx); err != nil {
			t.Errorf("cleanup stop: %v", err)
		}
		cancel()
	})
	return f
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startTimes(t *testing.T, path string) []time.Time {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []time.Time
	for _, l := range strings.Fields(string(b)) {
		n, err := strconv.ParseInt(l, 10, 64)
		if err != nil {
			t.Fatalf("bad start record %q", l)
		}
		out = append(out, time.Unix(0, n))
	}
	return out
}

func TestBackoffGrows(t *testing.T) {
	f := newFixture(t, "crash", nil, nil)
	waitFor(t, "6 starts", 20*time.Second, func() bool { return len(startTimes(t, f.starts)) >= 6 })
	ts := startTimes(t, f.starts)
	want := []time.Duration{50, 100, 200, 400, 400}
	for i, w := range want {
		gap := ts[i+1].Sub(ts[i])
		if gap < w*time.Millisecond {
			t.Errorf("restart %d came after %v, want at least %v", i+1, gap, w*time.Millisecond)
		}
	}
	if g0, g3 := ts[1].Sub(ts[0]), ts[4].Sub(ts[3]); g3 < 2*g0 {
		t.Errorf("back-off did not grow: first gap %v, fourth gap %v", g0, g3)
	}
	st, _ := f.sup.Status("svc")
	if st.Backoff != 400*time.Millisecond {
		t.Errorf("back-off after many crashes = %v, want the 400ms cap", st.Backoff)
	}
	if st.LastExit != "exit status 1" {
		t.Errorf("LastExit = %q", st.LastExit)
	}
	if !strings.Contains(f.console.String(), "[svc] crashing now\n") {
		t.Errorf("console lacks prefixed service output:\n%s", f.console.String())
	}
}

func TestBackoffResetsAfterLongRun(t *testing.T) {
	f := newFixture(t, "slowcrash", nil, func(c *Config) { c.ResetAfter = 200 * time.Millisecond })
	waitFor(t, "4 starts", 20*time.Second, func() bool { return len(startTimes(t, f.starts)) >= 4 })
	st, _ := f.sup.Status("svc")
	if st.Backoff != 50*time.Millisecond {
		t.Errorf("back-off after runs longer than ResetAfter = %v, want 50ms", st.Backoff)
	}
}

func TestConfigErrorIsNotRestarted(t *testing.T) {
	f := newFixture(t, "config", nil, nil)
	waitFor(t, "config error", 10*time.Second, func() bool {
		st, _ := f.sup.Status("svc")
		return st.ConfigError
	})
	// ConfigError is set as the service's goroutine ends, so no restart can
	// follow; waiting for the goroutines proves it.
	if err := f.sup.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, _ := f.sup.Status("svc")
	if st.Starts != 1 {
		t.Errorf("service started %d times, want 1", st.Starts)
	}
	if n := len(startTimes(t, f.starts)); n != 1 {
		t.Errorf("service process ran %d times, want 1", n)
	}
	out := f.console.String()
	for _, want := range []string{
		"dyad-init: svc reported a configuration error; not restarting. Fix the kernel command line or /data/dyad/config.json",
		"[svc] dyad.unit is missing\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q:\n%s", want, out)
		}
	}
	ring, _ := f.sup.Log("svc")
	if string(ring) != "loading config\ndyad.unit is missing\n" {
		t.Errorf("ring = %q", ring)
	}
	file, err := os.ReadFile(filepath.Join(f.logDir, "svc.log"))
	if err != nil {
		t.Fatal(err)
	}
	if string(file) != "loading config\ndyad.unit is missing\n" {
		t.Errorf("log file = %q", file)
	}
}

func TestStop(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ignoreTerm string
		grace      time.Duration
		minTime    time.Duration
	}{
		{"exits on SIGTERM", "0", 10 * time.Second, 0},
		{"killed after grace", "1", 300 * time.Millisecond, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "long", []string{"DYAD_TEST_IGNORE_TERM=" + tc.ignoreTerm}, func(c *Config) { c.StopTimeout = tc.grace })
			var pid int
			waitFor(t, "service up", 10*time.Second, func() bool {
				st, _ := f.sup.Status("svc")
				pid = st.Pid
				ring, _ := f.sup.Log("svc")
				return pid != 0 && strings.Contains(string(ring), "service up")
			})
			start := time.Now()
			if err := f.sup.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			if took < tc.minTime || took > 5*time.Second {
				t.Errorf("Stop took %v, want between %v and 5s", took, tc.minTime)
			}
			if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
				t.Errorf("service pid %d still exists after Stop (kill 0: %v)", pid, err)
			}
			st, _ := f.sup.Status("svc")
			if st.Starts != 1 {
				t.Errorf("Starts = %d after Stop, want 1", st.Starts)
			}
			logPath := filepath.Join(f.logDir, "svc.log")
			if b, err := os.ReadFile(logPath); err != nil || !strings.Contains(string(b), "service up\n") {
				t.Errorf("log file %q, %v", b, err)
			}
			// An open log file would keep /data busy at shutdown.
			fds, _ := filepath.Glob("/proc/self/fd/*")
			for _, fd := range fds {
				if target, _ := os.Readlink(fd); target == logPath {
					t.Errorf("log file still open as %s after Stop", fd)
				}
			}
		})
	}
}

func TestLogFileRotates(t *testing.T) {
	f := newFixture(t, "chatty", nil, func(c *Config) {
		c.LogFileMax = 64 << 10
		c.RingSize = 16 << 10
	})
	main, old := filepath.Join(f.logDir, "svc.log"), filepath.Join(f.logDir, "svc.log.1")
	waitFor(t, "last line in ring", 10*time.Second, func() bool {
		ring, _ := f.sup.Log("svc")
		return strings.Contains(string(ring), "line 1999 ")
	})
	for _, p := range []string{main, old} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 64<<10 {
			t.Errorf("%s is %d bytes, above the 64 KiB bound", p, st.Size())
		}
	}
	ring, _ := f.sup.Log("svc")
	if len(ring) > 16<<10 {
		t.Errorf("ring holds %d bytes, above 16 KiB", len(ring))
	}
	if !strings.HasPrefix(string(ring), "line ") {
		t.Errorf("ring does not start at a line boundary: %q", ring[:20])
	}
}
