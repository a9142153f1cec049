package harness

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/bmc"
)

// fakePower is a powerTarget that records what it is told, with a guest
// that obeys the ACPI power button at once.
type fakePower struct {
	mu    sync.Mutex
	on    bool
	calls []string
}

func (f *fakePower) PowerOn(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.on {
		return errors.New("already running") // as PM.PowerOn
	}
	f.calls = append(f.calls, "on")
	f.on = true
	return nil
}

func (f *fakePower) PowerOff(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "off")
	f.on = false
	return nil
}

func (f *fakePower) PowerDown(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.on {
		return errors.New("powered off") // as PM.PowerDown
	}
	f.calls = append(f.calls, "down")
	f.on = false
	return nil
}

func (f *fakePower) Running() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.on
}

// take returns the calls since the last take.
func (f *fakePower) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func TestParseChassisRequest(t *testing.T) {
	tests := []struct {
		line    string
		want    chassisRequest
		wantErr bool
	}{
		{line: "get power\n", want: chassisRequest{params: []chassisParam{{name: "power"}}}},
		{line: "set power 1\n", want: chassisRequest{set: true, params: []chassisParam{{"power", "1"}}}},
		{line: "set reset 1", want: chassisRequest{set: true, params: []chassisParam{{"reset", "1"}}}},
		{line: "set power 0 boot pxe", want: chassisRequest{set: true, params: []chassisParam{{"power", "0"}, {"boot", "pxe"}}}},
		{line: "", wantErr: true},
		{line: "get\n", wantErr: true},
		{line: "set power\n", wantErr: true},
		{line: "set power 1 reset\n", wantErr: true},
		{line: "power on\n", wantErr: true},
		{line: "set POWER 1\n", wantErr: true},
		{line: "set power 1;reboot\n", wantErr: true},
		{line: "get " + strings.Repeat("p", maxChassisLine), wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseChassisRequest(tt.line)
		if tt.wantErr {
			if err == nil {
				t.Errorf("parseChassisRequest(%q) = %+v, want an error", tt.line, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseChassisRequest(%q) = %+v, %v; want %+v", tt.line, got, err, tt.want)
		}
	}
}

// FuzzParseChassisRequest checks that any line is refused or parsed into
// a request that renders back into the same request.
func FuzzParseChassisRequest(f *testing.F) {
	for _, s := range []string{"get power\n", "set power 1\n", "set shutdown 1", "set power 0 boot pxe", "set a", "\x00", "get  power\t\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		req, err := parseChassisRequest(line)
		if err != nil {
			return
		}
		if len(req.params) == 0 {
			t.Fatalf("%q parsed into no parameters", line)
		}
		words := []string{"get"}
		if req.set {
			words[0] = "set"
		}
		for _, p := range req.params {
			words = append(words, p.name)
			if req.set {
				words = append(words, p.value)
			}
		}
		again, err := parseChassisRequest(strings.Join(words, " "))
		if err != nil || !reflect.DeepEqual(again, req) {
			t.Fatalf("%q parsed into %+v, which renders into %+v, %v", line, req, again, err)
		}
	})
}

// startChassisControl serves a chassis control for target on host
// loopback and returns the path of its chassis program.
func startChassisControl(t *testing.T, target powerTarget) (script string, ln net.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctl := &chassisControl{pm: 1, target: target, log: slog.New(slog.NewTextHandler(t.Output(), nil)), ctx: t.Context(), served: make(chan struct{})}
	go ctl.serve(ln)
	t.Cleanup(func() {
		ln.Close()
		<-ctl.served
		ctl.wg.Wait()
	})
	script = filepath.Join(t.TempDir(), "chassis-control")
	if err := os.WriteFile(script, []byte(chassisScript(ln.Addr().(*net.TCPAddr).Port)), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, ln
}

// TestChassisControl runs the chassis program as ipmi_sim does (popen:
// sh -c "PROG set power \"1\"") against a fake PM, without ipmi_sim or a
// namespace.
func TestChassisControl(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	pm := &fakePower{}
	script, ln := startChassisControl(t, pm)
	steps := []struct {
		args      string
		wantOut   string
		wantFail  bool
		wantCalls []string
	}{
		{args: "get power", wantOut: "power:0"},
		{args: `set power "1"`, wantCalls: []string{"on"}},
		{args: "get power", wantOut: "power:1"},
		{args: `set power "1"`}, // on already: nothing to do
		{args: `set shutdown "1"`, wantCalls: []string{"down"}},
		{args: "get power", wantOut: "power:0"},
		{args: `set shutdown "1"`}, // off already
		{args: `set reset "1"`, wantFail: true},
		{args: `set power "1"`, wantCalls: []string{"on"}},
		{args: `set reset "1"`, wantCalls: []string{"off", "on"}},
		{args: `set power "0"`, wantCalls: []string{"off"}},
		{args: `set boot "pxe"`, wantFail: true},
		{args: "get boot", wantFail: true},
		{args: "reboot now", wantFail: true},
	}
	for _, st := range steps {
		cmd := exec.CommandContext(t.Context(), "sh", "-c", script+" "+st.args)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if failed := err != nil; failed != st.wantFail {
			t.Fatalf("%s: err %v (stderr %q), want failure %t", st.args, err, stderr.String(), st.wantFail)
		}
		if st.wantFail && !strings.Contains(stderr.String(), "failed") {
			t.Errorf("%s: stderr %q does not say why", st.args, stderr.String())
		}
		if got := strings.TrimSpace(string(out)); got != st.wantOut {
			t.Errorf("%s: printed %q, want %q", st.args, got, st.wantOut)
		}
		if got := pm.take(); !slices.Equal(got, st.wantCalls) {
			t.Errorf("%s: PM calls %q, want %q", st.args, got, st.wantCalls)
		}
	}

	// A connection that sends no line within the limit is refused.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, strings.Repeat("a", maxChassisLine+10)); err != nil {
		t.Fatal(err)
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(reply, "err ") {
		t.Errorf("reply to an overlong line %q, %v; want an err line", reply, err)
	}
}

// requireIPMISim skips the test when ipmi_sim is not installed, unless
// DYAD_REQUIRE_IPMI is set, which makes that a failure.
func requireIPMISim(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ipmi_sim"); err != nil {
		if os.Getenv("DYAD_REQUIRE_IPMI") != "" {
			t.Fatalf("ipmi_sim is required (DYAD_REQUIRE_IPMI is set) but not installed (Debian package openipmi): %v", err)
		}
		t.Skip("ipmi_sim is not installed (Debian package openipmi); DYAD_REQUIRE_IPMI=1 turns this skip into a failure")
	}
}

// TestBMC starts simulated BMCs for two fake PMs in a namespace of the
// test's own, laid out as a unit's ibiz, and drives them with the IPMI
// client of services/bmc from inside the namespace, where the PMs are.
func TestBMC(t *testing.T) {
	requireIPMISim(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) is not installed on this host")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ns, err := newNamespace(ctx)
	if err != nil {
		t.Skipf("cannot create a network namespace here (needs root): %v", err)
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", BridgeIbiz, "type", "bridge"},
		{"addr", "add", OperatorIP + "/24", "dev", BridgeIbiz},
		{"link", "set", BridgeIbiz, "up"},
	} {
		if err := ns.run(ctx, args...); err != nil {
			ns.remove(context.Background())
			t.Fatal(err)
		}
	}
	u := &Unit{
		log:      slog.New(slog.NewTextHandler(t.Output(), nil)),
		ns:       ns,
		workDir:  t.TempDir(),
		http:     &http.Transport{},
		forwards: map[io.Closer]struct{}{},
	}
	t.Cleanup(func() { u.Close() })

	pm1, pm2 := &fakePower{}, &fakePower{}
	b1, err := u.startBMC(ctx, 1, pm1)
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(ctx)
	defer cancel2()
	b2, err := u.startBMC(ctx2, 2, pm2)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		b    *BMC
		want string
	}{{b1, "10.99.0.254:6231"}, {b2, "10.99.0.254:6232"}} {
		if c.b.Addr != c.want || c.b.User == "" || len(c.b.Password) < 8 {
			t.Errorf("BMC %+v, want address %s and credentials", c.b, c.want)
		}
	}
	if b1.Password == b2.Password {
		t.Error("two BMCs share a password")
	}

	// inNS runs f where the PMs are: sockets opened by f belong to the
	// namespace.
	inNS := func(f func(context.Context) error) error {
		opCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		return ns.do(func() error { return f(opCtx) })
	}
	config := func(b *BMC) bmc.Config { return bmc.Config{Addr: b.Addr, User: b.User, Password: b.Password} }
	steps := []struct {
		name      string
		b         *BMC
		pm        *fakePower
		do        func(context.Context, bmc.Config) error
		wantCalls []string
		wantOn    bool
	}{
		{"pm1 power on", b1, pm1, bmc.PowerOn, []string{"on"}, true},
		{"pm1 soft off", b1, pm1, bmc.SoftOff, []string{"down"}, false},
		{"pm1 power on again", b1, pm1, bmc.PowerOn, []string{"on"}, true},
		{"pm1 reset", b1, pm1, bmc.Reset, []string{"off", "on"}, true},
		{"pm2 power on", b2, pm2, bmc.PowerOn, []string{"on"}, true},
		{"pm1 power off", b1, pm1, bmc.PowerOff, []string{"off"}, false},
	}
	for _, st := range steps {
		if err := inNS(func(ctx context.Context) error { return st.do(ctx, config(st.b)) }); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := st.pm.take(); !slices.Equal(got, st.wantCalls) {
			t.Errorf("%s: PM calls %q, want %q", st.name, got, st.wantCalls)
		}
		var on bool
		if err := inNS(func(ctx context.Context) (err error) { on, err = bmc.PowerStatus(ctx, config(st.b)); return err }); err != nil {
			t.Fatalf("%s: status: %v", st.name, err)
		}
		if on != st.wantOn {
			t.Errorf("%s: status on=%t, want %t", st.name, on, st.wantOn)
		}
	}
	if got := pm1.take(); len(got) != 0 {
		t.Errorf("power status called %q", got)
	}

	bad := config(b1)
	bad.Password = "wrong"
	err = inNS(func(ctx context.Context) error { return bmc.PowerOn(ctx, bad) })
	if !errors.Is(err, bmc.ErrAuth) {
		t.Errorf("power on with a wrong password: %v, want bmc.ErrAuth", err)
	}
	if got := pm1.take(); len(got) != 0 {
		t.Errorf("a refused login powered the PM: %q", got)
	}

	if _, err := u.startBMC(ctx, 1, pm1); err == nil || !strings.Contains(err.Error(), "run already") {
		t.Errorf("second BMC for pm1: %v, want the port taken", err)
	}
	if err := inNS(func(ctx context.Context) error { return bmc.PowerOn(ctx, config(b1)) }); err != nil {
		t.Errorf("first BMC after a refused second one: %v", err)
	}

	// The BMC ends with its context, the unit with the others.
	cancel2()
	select {
	case <-b2.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("ipmi_sim runs on after its context ended")
	}
	if err := WaitFor(ctx, 5*time.Second, "bmc untracked", func(context.Context) (bool, error) {
		u.mu.Lock()
		defer u.mu.Unlock()
		return len(u.forwards) == 1, nil
	}); err != nil {
		t.Error(err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b1.exited:
	default:
		t.Error("ipmi_sim runs on after the unit closed")
	}
	if _, err := u.startBMC(ctx, 1, pm1); err == nil {
		t.Error("BMC started on a closed unit")
	}
}
