package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		c       Config
		wantErr string // substring; empty for a valid config
	}{
		{"host only", Config{Addr: "10.0.0.5", User: "admin", Password: "pw"}, ""},
		{"host and port", Config{Addr: "10.0.0.5:6230", User: "admin", Password: "pw"}, ""},
		{"hostname", Config{Addr: "bmc-1.lab.example", User: "admin", Password: "pw"}, ""},
		{"longest credentials", Config{Addr: "h", User: strings.Repeat("u", 16), Password: strings.Repeat("p", 20)}, ""},
		{"empty address", Config{User: "admin", Password: "pw"}, "address is empty"},
		{"no host", Config{Addr: ":623", User: "admin", Password: "pw"}, "no host"},
		{"port zero", Config{Addr: "10.0.0.5:0", User: "admin", Password: "pw"}, "port"},
		{"port too big", Config{Addr: "10.0.0.5:70000", User: "admin", Password: "pw"}, "port"},
		{"port not a number", Config{Addr: "10.0.0.5:ipmi", User: "admin", Password: "pw"}, "port"},
		{"ipv6", Config{Addr: "fe80::1", User: "admin", Password: "pw"}, "IPv6"},
		{"ipv6 with port", Config{Addr: "[fe80::1]:623", User: "admin", Password: "pw"}, "IPv6"},
		{"two colons", Config{Addr: "a:b:c", User: "admin", Password: "pw"}, "invalid address"},
		{"space in host", Config{Addr: "bad host", User: "admin", Password: "pw"}, "not allowed"},
		{"empty user", Config{Addr: "h", Password: "pw"}, "user is empty"},
		{"long user", Config{Addr: "h", User: strings.Repeat("u", 17), Password: "pw"}, "at most 16"},
		{"control in user", Config{Addr: "h", User: "ad\nmin", Password: "pw"}, "printable"},
		{"empty password", Config{Addr: "h", User: "admin"}, "password is empty"},
		{"long password", Config{Addr: "h", User: "admin", Password: strings.Repeat("p", 21)}, "at most 20"},
		{"non-ASCII password", Config{Addr: "h", User: "admin", Password: "pässword"}, "printable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want an error with %q", err, tt.wantErr)
			}
			// A refused config never reaches the network.
			if err := PowerOff(t.Context(), tt.c); err == nil || errors.Is(err, ErrNoAnswer) {
				t.Errorf("PowerOff with an invalid config = %v, want the validation error", err)
			}
		})
	}
}

// sim is an ipmi_sim of the test's own on loopback. Its chassis control
// program keeps the power state in a file and logs every call.
type sim struct {
	addr  string
	dir   string
	calls string // one line per chassis control call: "get power", "set power 1"
}

const (
	simUser     = "admin"
	simPassword = "s3cret-pw"
)

// chassisScript is the chassis_control program: ipmi_sim runs it as
// "PROG get power" (answer "power:0" or "power:1") and "PROG set NAME VALUE"
// for power, reset and shutdown (soft off).
const chassisScript = `#!/bin/sh
dir=$(dirname "$0")
echo "$*" >>"$dir/calls"
case "$1 $2" in
"get power") echo "power:$(cat "$dir/power")" ;;
"set power") echo "$3" >"$dir/power" ;;
"set shutdown") echo 0 >"$dir/power" ;;
"set reset") ;;
*) echo "unsupported: $*" >&2; exit 1 ;;
esac
`

// simConf is the lan.conf of the test's ipmi_sim (see ipmi_lan(5)); the
// verbs are the address, the port, the chassis program, user and password.
const simConf = `name "dyadtest"
set_working_mc 0x20
  startlan 1
    addr %s %d
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s"
  user 2 true "%s" "%s" admin 10 md5
`

// simEmu is the ipmi_sim command file (see ipmi_sim_cmd(5)): one BMC.
const simEmu = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_enable 0x20
`

// requireIPMISim skips the test when ipmi_sim is not installed, unless
// DYAD_REQUIRE_IPMI is set, which makes that a failure.
func requireIPMISim(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ipmi_sim")
	if err != nil {
		if os.Getenv("DYAD_REQUIRE_IPMI") != "" {
			t.Fatalf("ipmi_sim is required (DYAD_REQUIRE_IPMI is set) but not installed (Debian package openipmi): %v", err)
		}
		t.Skip("ipmi_sim is not installed (Debian package openipmi); DYAD_REQUIRE_IPMI=1 turns this skip into a failure")
	}
	return p
}

func startSim(t *testing.T) *sim {
	t.Helper()
	bin := requireIPMISim(t)
	dir := t.TempDir()
	s := &sim{dir: dir, calls: filepath.Join(dir, "calls")}
	prog := filepath.Join(dir, "chassis")
	write := func(name, data string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("chassis", chassisScript, 0o755)
	write("power", "0\n", 0o644)
	write("sim.emu", simEmu, 0o644)
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The port may be taken between its discovery and ipmi_sim's bind:
	// try a few.
	for try := 0; try < 3; try++ {
		port := freeUDPPort(t)
		write("lan.conf", fmt.Sprintf(simConf, "127.0.0.1", port, prog, simUser, simPassword), 0o644)
		logPath := filepath.Join(dir, "ipmi_sim.log")
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "sim.emu"), "-s", filepath.Join(dir, "state"), "-n")
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logf.Close()
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
		})
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := waitPong(t.Context(), s.addr, exited); err == nil {
			return s
		} else {
			log, _ := os.ReadFile(logPath)
			t.Logf("ipmi_sim on %s: %v; its output:\n%s", s.addr, err, log)
		}
	}
	t.Fatal("ipmi_sim did not start")
	return nil
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// rmcpPing is an RMCP/ASF presence ping, which every IPMI LAN BMC answers.
var rmcpPing = []byte{0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x00, 0x00, 0x00}

// waitPong returns once something answers a presence ping at addr.
func waitPong(ctx context.Context, addr string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for {
		select {
		case <-exited:
			return errors.New("ipmi_sim exited")
		case <-ctx.Done():
			return fmt.Errorf("no pong: %w", ctx.Err())
		default:
		}
		c.Write(rmcpPing)
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && n > 0 {
			return nil
		} else if errors.Is(err, syscall.ECONNREFUSED) {
			// Not bound yet: the refusal comes at once.
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (s *sim) config() Config { return Config{Addr: s.addr, User: simUser, Password: simPassword} }

func (s *sim) callLog(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(s.calls)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(b)), " ", "_"))
}

// TestPower drives a real ipmi_sim over RMCP+ through a power sequence
// and checks both the answers and what reached the chassis program.
func TestPower(t *testing.T) {
	s := startSim(t)
	c := s.config()
	status := func(ctx context.Context, c Config) error {
		on, err := PowerStatus(ctx, c)
		if err != nil {
			return err
		}
		return fmt.Errorf("on=%t", on)
	}
	steps := []struct {
		name     string
		do       func(context.Context, Config) error
		wantOn   bool
		wantCall string // the last chassis program call
	}{
		{"status while off", status, false, "get_power"},
		{"power on", PowerOn, true, "set_power_1"},
		{"status while on", status, true, "get_power"},
		{"power off", PowerOff, false, "set_power_0"},
		{"status after power off", status, false, "get_power"},
		{"power on again", PowerOn, true, "set_power_1"},
		{"soft off", SoftOff, false, "set_shutdown_1"},
		{"power on for reset", PowerOn, true, "set_power_1"},
		{"reset", Reset, true, "set_reset_1"},
	}
	for _, st := range steps {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := st.do(ctx, c)
		cancel()
		if err != nil && !strings.HasPrefix(err.Error(), "on=") {
			t.Fatalf("%s: %v", st.name, err)
		}
		if err != nil && err.Error() != fmt.Sprintf("on=%t", st.wantOn) {
			t.Fatalf("%s: status says %v, want on=%t", st.name, err, st.wantOn)
		}
		calls := s.callLog(t)
		if len(calls) == 0 || calls[len(calls)-1] != st.wantCall {
			t.Fatalf("%s: chassis program calls %q, want the last to be %q", st.name, calls, st.wantCall)
		}
		b, _ := os.ReadFile(filepath.Join(s.dir, "power"))
		if got := strings.TrimSpace(string(b)) == "1"; got != st.wantOn {
			t.Fatalf("%s: chassis power on=%t, want %t", st.name, got, st.wantOn)
		}
	}
}

// TestAuthFailure checks that a refused login is reported as such, names
// the BMC and never reaches the chassis.
func TestAuthFailure(t *testing.T) {
	s := startSim(t)
	tests := []struct {
		name string
		c    Config
	}{
		{"wrong password", Config{Addr: s.addr, User: simUser, Password: "wrong"}},
		{"unknown user", Config{Addr: s.addr, User: "nobody", Password: simPassword}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			start := time.Now()
			err := PowerOff(ctx, tt.c)
			if !errors.Is(err, ErrAuth) {
				t.Fatalf("PowerOff = %v, want ErrAuth", err)
			}
			t.Log(err)
			if want := "bmc " + s.addr + ": power off: authentication failed"; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			// A refusal is an answer: no waiting on timeouts.
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("refusal took %v", d)
			}
			for _, call := range s.callLog(t) {
				if strings.HasPrefix(call, "set") {
					t.Errorf("chassis program called with %q after a refused login", call)
				}
			}
		})
	}
}

// TestNoAnswer checks that a BMC that is not there fails within the
// context's deadline, as ErrNoAnswer.
func TestNoAnswer(t *testing.T) {
	// A socket that reads nothing: datagrams to it vanish, as they do to
	// a BMC that is down behind a switch.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Cleanup, not defer: the subtests run in parallel after this returns.
	t.Cleanup(func() { silent.Close() })
	tests := []struct {
		name     string
		addr     string
		deadline time.Duration
		wantCtx  bool // the error is the context's
	}{
		{"silent, context deadline", silent.LocalAddr().String(), 1500 * time.Millisecond, true},
		// The library gives up after five one-second tries on its own.
		{"silent, library retries", silent.LocalAddr().String(), 20 * time.Second, false},
		{"port closed", net.JoinHostPort("127.0.0.1", strconv.Itoa(freeUDPPort(t))), 10 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), tt.deadline)
			defer cancel()
			start := time.Now()
			_, err := PowerStatus(ctx, Config{Addr: tt.addr, User: simUser, Password: simPassword})
			elapsed := time.Since(start)
			if !errors.Is(err, ErrNoAnswer) {
				t.Fatalf("PowerStatus = %v, want ErrNoAnswer", err)
			}
			if got := errors.Is(err, context.DeadlineExceeded); got != tt.wantCtx {
				t.Errorf("error %v: is DeadlineExceeded %t, want %t", err, got, tt.wantCtx)
			}
			if want := "bmc " + tt.addr + ": power status: no answer"; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
			if elapsed > tt.deadline+200*time.Millisecond {
				t.Errorf("took %v, past the deadline of %v", elapsed, tt.deadline)
			}
		})
	}
}

// TestClassify pins how errors of go-ipmi map to ErrAuth and ErrNoAnswer,
// including the texts looked for where the library cuts the error chain.
func TestClassify(t *testing.T) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name       string
		ctx        context.Context
		connecting bool
		err        error
		want       error
	}{
		{"RAKP mismatch wrapped", context.Background(), true, fmt.Errorf("rakp: %w", client.ErrRAKPAuthentication), ErrAuth},
		{"RAKP mismatch as text", context.Background(), true, fmt.Errorf("connect20 failed, errs: \n%v", client.ErrRAKPAuthentication), ErrAuth},
		{"unauthorized name", context.Background(), true, types.NewRmcpStatusError(types.RmcpStatusCodeUnauthorizedName), ErrAuth},
		{"unauthorized role as text", context.Background(), true, fmt.Errorf("x: %v", types.NewRmcpStatusError(types.RmcpStatusCodeUnauthorizedRoleOfPriLevel)), ErrAuth},
		{"no cipher suite match", context.Background(), true, types.NewRmcpStatusError(types.RmcpStatusCodeNoCipherSuiteMatch), nil},
		{"privilege level refused at login", context.Background(), true, types.NewResponseError(0x81, "x"), ErrAuth},
		{"0x81 of a command", context.Background(), false, types.NewResponseError(0x81, "x"), nil},
		{"insufficient privilege", context.Background(), false, fmt.Errorf("control: %w", types.NewResponseError(0xd4, "x")), ErrAuth},
		{"invalid command", context.Background(), false, types.NewResponseError(0xc1, "x"), nil},
		{"deadline", context.Background(), false, fmt.Errorf("x: %w", context.DeadlineExceeded), ErrNoAnswer},
		{"context done", done, false, errors.New("anything"), ErrNoAnswer},
		{"refused", context.Background(), true, &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNREFUSED)}, ErrNoAnswer},
		{"tries timed out", context.Background(), true, errors.New("IPMI LAN: ... after 5 attempt(s): udp exchange: no datagram matched before deadline"), ErrNoAnswer},
		{"other", context.Background(), true, errors.New("unpacked data is too short"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.ctx, tt.connecting, tt.err); got != tt.want {
				t.Errorf("classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
