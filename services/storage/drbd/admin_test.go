package drbd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// recorder is a fake Runner that records argv and answers from a script.
type recorder struct {
	calls [][]string
	out   []byte
	err   error
}

func (r *recorder) run(_ context.Context, argv []string) ([]byte, error) {
	r.calls = append(r.calls, append([]string(nil), argv...))
	return r.out, r.err
}

func TestAdminArgv(t *testing.T) {
	pre := []string{"/lib/drbd/drbdadm-84", "-c", "/run/dyad/drbd.conf",
		"--drbdsetup=/lib/drbd/drbdsetup-84", "--drbdmeta=/sbin/drbdmeta"}
	with := func(tail ...string) []string { return append(append([]string(nil), pre...), tail...) }
	tests := []struct {
		name string
		call func(context.Context, *Admin) error
		want []string
	}{
		{"create-md", func(ctx context.Context, a *Admin) error { return a.CreateMD(ctx, "r3") },
			with("--", "--force", "create-md", "r3")},
		{"up", func(ctx context.Context, a *Admin) error { return a.Up(ctx, "r3") }, with("up", "r3")},
		{"down", func(ctx context.Context, a *Admin) error { return a.Down(ctx, "r3") }, with("down", "r3")},
		{"attach", func(ctx context.Context, a *Admin) error { return a.Attach(ctx, "r3") }, with("attach", "r3")},
		{"detach", func(ctx context.Context, a *Admin) error { return a.Detach(ctx, "r3") }, with("detach", "r3")},
		{"connect", func(ctx context.Context, a *Admin) error { return a.Connect(ctx, "r3", false) }, with("connect", "r3")},
		{"connect discarding", func(ctx context.Context, a *Admin) error { return a.Connect(ctx, "r3", true) },
			with("--", "--discard-my-data", "connect", "r3")},
		{"disconnect", func(ctx context.Context, a *Admin) error { return a.Disconnect(ctx, "r3") }, with("disconnect", "r3")},
		{"primary", func(ctx context.Context, a *Admin) error { return a.Primary(ctx, "r3", false) }, with("primary", "r3")},
		{"primary forced", func(ctx context.Context, a *Admin) error { return a.Primary(ctx, "r3", true) },
			with("--", "--force", "primary", "r3")},
		{"secondary", func(ctx context.Context, a *Admin) error { return a.Secondary(ctx, "r3") }, with("secondary", "r3")},
		{"resize", func(ctx context.Context, a *Admin) error { return a.Resize(ctx, "r3") }, with("resize", "r3")},
		{"outdate", func(ctx context.Context, a *Admin) error { return a.Outdate(ctx, "r3") }, with("outdate", "r3")},
		{"adjust", func(ctx context.Context, a *Admin) error { return a.Adjust(ctx, "r3") }, with("adjust", "r3")},
		{"get-gi", func(ctx context.Context, a *Admin) error { _, err := a.GetGI(ctx, 3); return err },
			[]string{"/lib/drbd/drbdsetup-84", "get-gi", "3"}},
		{"resource get-gi", func(ctx context.Context, a *Admin) error { _, err := a.ResourceGI(ctx, "r3"); return err },
			with("get-gi", "r3")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{out: []byte("0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:0:0:0\n")}
			a := &Admin{Run: rec.run, Config: "/run/dyad/drbd.conf"}
			if err := tt.call(context.Background(), a); err != nil {
				t.Fatal(err)
			}
			if len(rec.calls) != 1 || !reflect.DeepEqual(rec.calls[0], tt.want) {
				t.Errorf("argv:\n got %q\nwant %q", rec.calls, tt.want)
			}
		})
	}
}

func TestAdminCustomPaths(t *testing.T) {
	rec := &recorder{}
	a := &Admin{Run: rec.run, Config: "/c", Adm: "/x/adm", Setup: "/x/setup", Meta: "/x/meta"}
	if err := a.Up(context.Background(), "r0"); err != nil {
		t.Fatal(err)
	}
	want := []string{"/x/adm", "-c", "/c", "--drbdsetup=/x/setup", "--drbdmeta=/x/meta", "up", "r0"}
	if !reflect.DeepEqual(rec.calls[0], want) {
		t.Errorf("argv = %q", rec.calls[0])
	}
}

func TestAdminRefusesBeforeRunning(t *testing.T) {
	rec := &recorder{}
	a := &Admin{Run: rec.run, Config: "/c"}
	ctx := context.Background()
	for _, res := range []string{"", "all", "-d", "--force", "r 3", "minor-3"} {
		if err := a.Up(ctx, res); err == nil {
			t.Errorf("Up(%q) accepted", res)
		}
	}
	if _, err := a.GetGI(ctx, 62); err == nil {
		t.Error("GetGI(62) accepted")
	}
	if _, err := a.GetGI(ctx, -1); err == nil {
		t.Error("GetGI(-1) accepted")
	}
	if len(rec.calls) != 0 {
		t.Errorf("ran %q", rec.calls)
	}
	if err := (&Admin{Run: rec.run}).Up(ctx, "r3"); err == nil {
		t.Error("Admin without Config accepted")
	}
	if err := (&Admin{Config: "/c"}).Up(ctx, "r3"); err == nil {
		t.Error("Admin without Runner accepted")
	}
}

func TestAdminErrors(t *testing.T) {
	mk := func(code int, stderr string) error {
		return &CmdError{Argv: []string{"drbdadm-84"}, ExitCode: code, Stderr: stderr, Err: errors.New("exit status " + fmt.Sprint(code))}
	}
	tests := []struct {
		name                                 string
		err                                  error
		code                                 int
		needUpToDate, twoPri, peerNOP, inUse bool
	}{
		{"need uptodate", mk(17, "r3: State change failed: (-2) Need access to UpToDate data\nCommand 'drbdsetup-84 primary 3' terminated with exit code 17"), -2, true, false, false, false},
		{"two primaries", mk(11, "3: State change failed: (-1) Multiple primaries not allowed by config"), -1, false, true, false, false},
		{"peer not outdated", mk(11, "3: State change failed: (-7) Refusing to be Primary while peer is not outdated"), -7, false, false, true, false},
		{"held open", mk(11, "3: State change failed: (-12) Device is held open by someone"), -12, false, false, false, true},
		{"config failure", mk(10, "3: Failure: (102) Local address(port) already in use."), 102, false, false, false, false},
		{"other", mk(20, "Can not open device '/dev/x': No such file or directory"), 0, false, false, false, false},
		{"not a command error", errors.New("State change failed: (-2)"), 0, false, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{err: tt.err}
			a := &Admin{Run: rec.run, Config: "/c"}
			err := a.Primary(context.Background(), "r3", false)
			if err == nil {
				t.Fatal("no error")
			}
			code, ok := Code(err)
			if code != tt.code || ok != (tt.code != 0) {
				t.Errorf("Code = %d, %v", code, ok)
			}
			if IsNeedUpToDate(err) != tt.needUpToDate || IsTwoPrimaries(err) != tt.twoPri ||
				IsPeerNotOutdated(err) != tt.peerNOP || IsDeviceInUse(err) != tt.inUse {
				t.Errorf("classification wrong for %v", err)
			}
			if !strings.Contains(err.Error(), "primary r3") {
				t.Errorf("error lacks context: %v", err)
			}
		})
	}
}

func TestAdminGetGIFailure(t *testing.T) {
	rec := &recorder{err: &CmdError{Argv: []string{"drbdsetup-84"}, ExitCode: 1, Stderr: "Device has no disk", Err: errors.New("exit status 1")}}
	a := &Admin{Run: rec.run, Config: "/c"}
	_, err := a.GetGI(context.Background(), 3)
	if err == nil || !strings.Contains(err.Error(), "Device has no disk") || ExitCode(err) != 1 {
		t.Errorf("err = %v (exit %d)", err, ExitCode(err))
	}
	rec.err, rec.out = nil, []byte("garbage\n")
	if _, err := a.GetGI(context.Background(), 3); !errors.Is(err, ErrNoGI) {
		t.Errorf("err = %v", err)
	}
}

func TestAdminProc(t *testing.T) {
	a := &Admin{ProcPath: filepath.Join("testdata", "syncsource.txt")}
	p, err := a.Proc(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := p.Device(3); !ok || d.CS != SyncSource {
		t.Errorf("proc = %+v", p)
	}
	a.ProcPath = filepath.Join(t.TempDir(), "missing")
	if _, err := a.Proc(context.Background()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Proc(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
}

func shell(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	return "/bin/sh"
}

func TestExecRunner(t *testing.T) {
	sh := shell(t)
	run := ExecRunner()
	ctx := context.Background()

	out, err := run(ctx, []string{sh, "-c", "echo hello"})
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("out %q err %v", out, err)
	}

	_, err = run(ctx, []string{sh, "-c", "echo partial; echo '  r3: State change failed: (-2) Need access to UpToDate data  ' >&2; exit 17"})
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 17 {
		t.Fatalf("err = %v", err)
	}
	var ce *CmdError
	if !errors.As(err, &ce) || ce.ExitCode != 17 || ce.Stderr != "r3: State change failed: (-2) Need access to UpToDate data" || ce.Stdout != "partial" {
		t.Fatalf("CmdError = %+v", ce)
	}
	if ExitCode(err) != 17 || !IsNeedUpToDate(err) {
		t.Errorf("ExitCode %d, IsNeedUpToDate %v", ExitCode(err), IsNeedUpToDate(err))
	}

	// stdin is empty: a tool asking for "yes" reads EOF at once.
	out, err = run(ctx, []string{sh, "-c", "read x; echo \"[$x]\""})
	if string(out) != "[]\n" {
		t.Errorf("stdin: out %q err %v", out, err)
	}

	out, err = run(ctx, []string{sh, "-c", "echo \"$PATH|$LC_ALL\""})
	if err != nil || strings.TrimSpace(string(out)) != ExecPath+"|C" {
		t.Errorf("env: out %q err %v", out, err)
	}

	if _, err := run(ctx, nil); err == nil {
		t.Error("empty argv accepted")
	}
	if _, err := run(ctx, []string{"/nonexistent/drbdadm"}); err == nil || ExitCode(err) != -1 {
		t.Errorf("missing binary: %v", err)
	}
}

func TestExecRunnerCancelKillsGroup(t *testing.T) {
	sh := shell(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	// The child sleep keeps stdout open; only killing the group ends it.
	_, err := ExecRunner()(ctx, []string{sh, "-c", "sleep 30 & sleep 30; wait"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("took %v", d)
	}
}

// TestAdminDrbdadmDryRun runs the argv Admin builds through the real
// drbdadm-84 in dry-run mode (-d prints the drbdsetup-84/drbdmeta calls
// instead of running them), checking that drbdadm accepts our options and
// hands them to the right tool.
func TestAdminDrbdadmDryRun(t *testing.T) {
	for _, p := range []string{DefaultAdm, DefaultSetup, DefaultMeta} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s not installed", p)
		}
	}
	r := sample()
	// drbdadm picks the floating section whose address is local.
	r.Addrs = [2]netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.77")}
	conf := writeConf(t, r)
	dry := func(ctx context.Context, argv []string) ([]byte, error) {
		if argv[0] == DefaultAdm {
			argv = append([]string{argv[0], "-d"}, argv[1:]...)
		}
		return ExecRunner()(ctx, argv)
	}
	var out []byte
	capture := func(ctx context.Context, argv []string) ([]byte, error) {
		b, err := dry(ctx, argv)
		out = b
		return b, err
	}
	a := &Admin{Run: capture, Config: conf}
	peer := "ipv4:127.0.0.1:7803 ipv4:192.0.2.77:7803"
	tests := []struct {
		name string
		call func(context.Context) error
		want []string
	}{
		{"create-md", func(ctx context.Context) error { return a.CreateMD(ctx, "r3") },
			[]string{"/sbin/drbdmeta 3 v08 /dev/dyad_sg1/vol3 internal create-md --force"}},
		{"up", func(ctx context.Context) error { return a.Up(ctx, "r3") }, []string{
			"/lib/drbd/drbdsetup-84 new-resource r3",
			"/lib/drbd/drbdsetup-84 new-minor r3 3 0",
			"/sbin/drbdmeta 3 v08 /dev/dyad_sg1/vol3 internal apply-al",
			"/lib/drbd/drbdsetup-84 attach 3 /dev/dyad_sg1/vol3 /dev/dyad_sg1/vol3 internal",
			"--c-max-rate=102400k", "--fencing=resource-and-stonith", "--on-io-error=detach",
			"/lib/drbd/drbdsetup-84 connect r3 " + peer,
			"--protocol=C", "--after-sb-0pri=disconnect", "--allow-two-primaries=no", "--timeout=25",
		}},
		{"connect discarding", func(ctx context.Context) error { return a.Connect(ctx, "r3", true) },
			[]string{"/lib/drbd/drbdsetup-84 connect r3 " + peer, "--discard-my-data"}},
		{"disconnect", func(ctx context.Context) error { return a.Disconnect(ctx, "r3") },
			[]string{"/lib/drbd/drbdsetup-84 disconnect " + peer}},
		{"primary forced", func(ctx context.Context) error { return a.Primary(ctx, "r3", true) },
			[]string{"/lib/drbd/drbdsetup-84 primary 3 --force"}},
		{"secondary", func(ctx context.Context) error { return a.Secondary(ctx, "r3") },
			[]string{"/lib/drbd/drbdsetup-84 secondary 3"}},
		{"outdate", func(ctx context.Context) error { return a.Outdate(ctx, "r3") },
			[]string{"/lib/drbd/drbdsetup-84 outdate 3"}},
		{"resize", func(ctx context.Context) error { return a.Resize(ctx, "r3") },
			[]string{"/lib/drbd/drbdsetup-84 resize 3"}},
		{"down", func(ctx context.Context) error { return a.Down(ctx, "r3") },
			[]string{"/lib/drbd/drbdsetup-84 down r3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out = nil
			if err := tt.call(ctx); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("dry run lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestCmdErrorText(t *testing.T) {
	e := &CmdError{
		Argv:   []string{"/lib/drbd/drbdadm-84", "primary", "r3"},
		Stderr: "r3: State change failed: (-2) Need access to UpToDate data\n  Command 'drbdsetup-84 primary 3' terminated with exit code 17\n",
		Err:    errors.New("exit status 17"),
	}
	want := "/lib/drbd/drbdadm-84 primary r3: exit status 17: r3: State change failed: (-2) Need access to UpToDate data; Command 'drbdsetup-84 primary 3' terminated with exit code 17"
	if e.Error() != want {
		t.Errorf("Error() =\n%s\nwant\n%s", e.Error(), want)
	}
	e.Stderr, e.Stdout = "", "stdin not a TTY, not waiting for confirmation"
	if !strings.HasSuffix(e.Error(), ": stdin not a TTY, not waiting for confirmation") {
		t.Errorf("Error() = %s", e.Error())
	}
	e.ctxErr = context.DeadlineExceeded
	if !errors.Is(e, context.DeadlineExceeded) || !strings.Contains(e.Error(), "(context deadline exceeded)") {
		t.Errorf("Error() = %s", e.Error())
	}
}
