package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/vm"
)

// consoleCtlVMs gives the VMs of ctlVMs whose state has a console one: a
// pipe whose guest end the test gets from guests.
type consoleCtlVMs struct {
	*ctlVMs
	guests chan net.Conn
}

func (f *consoleCtlVMs) DialConsole(ctx context.Context, id int, kind string) (net.Conn, error) {
	v, err := f.VM(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := vm.Check(vm.State(v.State), vm.Console); err != nil {
		return nil, err
	}
	if kind != "serial" {
		return nil, errors.New("dyadctl asked for console " + kind)
	}
	client, guest := net.Pipe()
	f.guests <- guest
	return client, nil
}

func startConsoleVMs(t *testing.T) (*apiclient.Client, *consoleCtlVMs) {
	t.Helper()
	f := &consoleCtlVMs{ctlVMs: testCtlVMs(), guests: make(chan net.Conn, 4)}
	env := startVMs(t, f)
	return apiclient.New(env("DYAD_URL"), "admin", "secret", nil), f
}

// syncBuffer is a bytes.Buffer the session and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until out shows want.
func waitFor(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q never showed %q", out.String(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readGuest reads n bytes the guest got.
func readGuest(t *testing.T, guest net.Conn, n int) string {
	t.Helper()
	guest.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(guest, b); err != nil {
		t.Fatalf("guest reading %d bytes: %v (got %q)", n, err, b)
	}
	return string(b)
}

// TestVMConsoleSession runs sessions from a pipe and ends them each way a
// session ends.
func TestVMConsoleSession(t *testing.T) {
	c, f := startConsoleVMs(t)
	tests := []struct {
		name string
		ref  string
		// end ends the session once the guest's greeting showed and the
		// first keys arrived.
		end     func(cancel context.CancelFunc, keys *io.PipeWriter, guest net.Conn)
		wantEnd string
		// wantKeys are what the guest gets after "ls\r": Ctrl-] and what
		// follows it stay here.
		wantKeys string
	}{
		{
			name: "Ctrl-] quits", ref: "web",
			end:      func(_ context.CancelFunc, keys *io.PipeWriter, _ net.Conn) { keys.Write([]byte("exit\r\x1dafter")) },
			wantEnd:  "Console detached; the VM keeps running.",
			wantKeys: "exit\r",
		},
		{
			name: "the unit closes", ref: "1",
			end:     func(_ context.CancelFunc, _ *io.PipeWriter, guest net.Conn) { guest.Close() },
			wantEnd: "The unit closed the console",
		},
		{
			name: "end of input", ref: "web",
			end:     func(_ context.CancelFunc, keys *io.PipeWriter, _ net.Conn) { keys.Close() },
			wantEnd: "End of input; console detached.",
		},
		{
			name: "interrupted", ref: "web",
			end:     func(cancel context.CancelFunc, _ *io.PipeWriter, _ net.Conn) { cancel() },
			wantEnd: "Interrupted; console detached.",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			keys, keysW := io.Pipe()
			defer keysW.Close()
			out := &syncBuffer{}
			done := make(chan error, 1)
			go func() { done <- runVMConsole(ctx, c, []string{tc.ref}, keys, out) }()

			var guest net.Conn
			select {
			case guest = <-f.guests:
			case err := <-done:
				t.Fatalf("session ended before opening the console: %v", err)
			}
			defer guest.Close()
			waitFor(t, out, "Connected to the serial console of VM web (id 1). Ctrl-] quits.")
			if _, err := guest.Write([]byte("GUEST START boot=3 n=0\r\n")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, out, "GUEST START boot=3 n=0\r\n")
			// Ctrl-C is the guest's: it interrupts the guest's program, not
			// the session.
			if _, err := keysW.Write([]byte("ls\r\x03")); err != nil {
				t.Fatal(err)
			}
			if got := readGuest(t, guest, 4); got != "ls\r\x03" {
				t.Errorf("guest got %q, want %q", got, "ls\r\x03")
			}

			go tc.end(cancel, keysW, guest)
			if tc.wantKeys != "" {
				if got := readGuest(t, guest, len(tc.wantKeys)); got != tc.wantKeys {
					t.Errorf("guest got %q, want %q", got, tc.wantKeys)
				}
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("session: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the session did not end")
			}
			if !strings.Contains(out.String(), tc.wantEnd) {
				t.Errorf("output %q does not say %q", out.String(), tc.wantEnd)
			}
			// The session closed the console: nothing more reaches the
			// guest (not what followed Ctrl-]).
			guest.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := guest.Read(make([]byte, 16)); err == nil || n > 0 {
				t.Errorf("guest read %d bytes, %v after the session; want the console closed", n, err)
			}
		})
	}
}

func TestVMConsoleRefusals(t *testing.T) {
	c, _ := startConsoleVMs(t)
	tests := []struct {
		args      []string
		wantUsage bool
		want      string
	}{
		{args: nil, wantUsage: true, want: "one VM name or id"},
		{args: []string{"web", "db"}, wantUsage: true, want: "one VM name or id"},
		{args: []string{"nope"}, want: `no VM with id or name "nope"`},
		// A stopped VM has no console; the refusal says what is allowed.
		{args: []string{"db"}, want: "dyadctl vm start db"},
		{args: []string{"new"}, want: "409"}, // Busy
	}
	for _, tc := range tests {
		err := runVMConsole(t.Context(), c, tc.args, strings.NewReader(""), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, errUsage) != tc.wantUsage {
			t.Errorf("vm console %q: %v; want an error with %q (usage error: %v)", tc.args, err, tc.want, tc.wantUsage)
		}
	}
}

// openPTY opens a pseudo-terminal pair; the test plays the keyboard on
// the master side, the session reads the other.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatalf("unlocking the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("opening the pseudo-terminal: %v", err)
	}
	// The master goes first: that hangs up a read left on the terminal.
	t.Cleanup(func() {
		m.Close()
		s.Close()
	})
	return m, s
}

// TestVMConsoleRawTerminal: on a terminal, keys reach the guest one by one
// without Enter and unechoed, and the terminal is as before afterwards.
func TestVMConsoleRawTerminal(t *testing.T) {
	master, tty := openPTY(t)
	fd := int(tty.Fd())
	before, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if before.Lflag&unix.ICANON == 0 || before.Lflag&unix.ECHO == 0 {
		t.Fatalf("a new pseudo-terminal is not in line mode: lflag %#x", before.Lflag)
	}
	c, f := startConsoleVMs(t)
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- runVMConsole(t.Context(), c, []string{"web"}, tty, out) }()
	guest := <-f.guests
	defer guest.Close()
	waitFor(t, out, "Ctrl-] quits.")

	during, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if during.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
		t.Errorf("terminal not raw during the session: lflag %#x", during.Lflag)
	}
	// No Enter: in line mode the guest would get nothing yet. Ctrl-C is a
	// byte for the guest, not a signal.
	if _, err := master.Write([]byte("q\x03")); err != nil {
		t.Fatal(err)
	}
	if got := readGuest(t, guest, 2); got != "q\x03" {
		t.Errorf("guest got %q, want %q", got, "q\x03")
	}
	if _, err := master.Write([]byte{escapeKey}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("session: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Ctrl-] did not end the session")
	}
	after, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Errorf("terminal not restored:\n got %+v\nwant %+v", *after, *before)
	}
	if !term.IsTerminal(fd) {
		t.Errorf("the terminal is gone")
	}
}

// TestVMConsoleCommand: "dyadctl vm console" reaches the session (only a
// refusal is tried): a VM without a console fails with the commands its
// state allows.
func TestVMConsoleCommand(t *testing.T) {
	f := &consoleCtlVMs{ctlVMs: testCtlVMs(), guests: make(chan net.Conn, 1)}
	env := startVMs(t, f)
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"vm", "console", "db"}, strings.NewReader(""), &stdout, &stderr, env)
	if code != exitFail || !strings.Contains(stderr.String(), "dyadctl vm start db") {
		t.Errorf("vm console db: exit %d, stderr %q; want %d and the allowed commands", code, stderr.String(), exitFail)
	}
}
