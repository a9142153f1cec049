package testchan

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/init/reap"
	"golang.org/x/sys/unix"
)

type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (c *client) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, line+"\n"); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) recv() Response {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		c.t.Fatalf("bad response %q: %v", line, err)
	}
	return resp
}

func (c *client) call(line string) Response {
	c.t.Helper()
	c.send(line)
	return c.recv()
}

type harness struct {
	*client
	shutdowns chan bool
	served    chan error
}

func newHarness(t *testing.T, maxOutput int) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := reap.New()
	go r.Run(ctx, log)
	h := &harness{shutdowns: make(chan bool, 2), served: make(chan error, 1)}
	s := &Server{
		Log:    log,
		Reaper: r,
		Env:    []string{"PATH=/bin:/usr/bin:/sbin"},
		Logs: func(name string) ([]byte, bool) {
			if name == "dyad-agent" {
				return []byte("agent line 1\nagent line 2\n"), true
			}
			return nil, false
		},
		Shutdown:  func(reboot bool) { h.shutdowns <- reboot },
		MaxOutput: maxOutput,
	}
	srv, cli := net.Pipe()
	go func() { h.served <- s.Serve(ctx, srv) }()
	h.client = &client{t: t, conn: cli, r: bufio.NewReader(cli)}
	t.Cleanup(func() {
		cli.Close()
		if err := <-h.served; err == nil {
			t.Error("Serve returned nil after the peer closed")
		}
		srv.Close()
		cancel()
	})
	return h
}

func TestExec(t *testing.T) {
	h := newHarness(t, 0)
	for _, tc := range []struct {
		name     string
		req      string
		exit     int
		stdout   string
		stderr   string
		errorHas string
	}{
		{"echo", `{"id":1,"op":"exec","argv":["/bin/echo","hello","world"]}`, 0, "hello world\n", "", ""},
		{"false", `{"id":2,"op":"exec","argv":["/bin/false"],"timeout_ms":5000}`, 1, "", "", ""},
		{"stderr and code", `{"id":3,"op":"exec","argv":["/bin/sh","-c","echo out; echo err >&2; exit 3"]}`, 3, "out\n", "err\n", ""},
		{"found on PATH", `{"id":4,"op":"exec","argv":["echo","via path"]}`, 0, "via path\n", "", ""},
		{"missing binary", `{"id":5,"op":"exec","argv":["/nonexistent/dyadctl"]}`, -1, "", "", "no such file"},
		{"not on PATH", `{"id":9,"op":"exec","argv":["dyad-no-such-command"]}`, -1, "", "", "not found in path"},
		{"env is the server's", `{"id":6,"op":"exec","argv":["/bin/sh","-c","echo $PATH"]}`, 0, "/bin:/usr/bin:/sbin\n", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, _ := strconv.Atoi(strings.Split(strings.Split(tc.req, `"id":`)[1], ",")[0])
			resp := h.call(tc.req)
			if resp.ID != int64(id) {
				t.Errorf("id = %d, want %d", resp.ID, id)
			}
			if resp.Exit == nil || *resp.Exit != tc.exit {
				t.Errorf("exit = %v, want %d", resp.Exit, tc.exit)
			}
			if string(resp.Stdout) != tc.stdout || string(resp.Stderr) != tc.stderr {
				t.Errorf("stdout %q stderr %q, want %q %q", resp.Stdout, resp.Stderr, tc.stdout, tc.stderr)
			}
			if (tc.errorHas == "") != (resp.Error == "") || !strings.Contains(strings.ToLower(resp.Error), tc.errorHas) {
				t.Errorf("error = %q, want it to contain %q", resp.Error, tc.errorHas)
			}
		})
	}
}

func TestExecTimeoutKillsGroup(t *testing.T) {
	h := newHarness(t, 0)
	start := time.Now()
	resp := h.call(`{"id":7,"op":"exec","argv":["/bin/sh","-c","/bin/sleep 60 & echo $!; wait"],"timeout_ms":300}`)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("timeout of 300ms took %v", took)
	}
	if resp.Exit == nil || *resp.Exit != 128+9 || !strings.Contains(resp.Error, "timed out") {
		t.Errorf("exit %v error %q, want 137 and a timeout", resp.Exit, resp.Error)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(resp.Stdout)))
	if err != nil {
		t.Fatalf("grandchild pid %q: %v", resp.Stdout, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		// Gone, or a zombie waiting for whoever inherited it.
		if err != nil || strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d survived the timeout: %s", pid, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExecOutputCapped(t *testing.T) {
	h := newHarness(t, 1000)
	resp := h.call(`{"id":8,"op":"exec","argv":["/bin/sh","-c","head -c 50000 /dev/zero; echo done >&2"]}`)
	if resp.Exit == nil || *resp.Exit != 0 {
		t.Errorf("exit = %v, want 0", resp.Exit)
	}
	if len(resp.Stdout) != 1000 || string(resp.Stderr) != "done\n" {
		t.Errorf("stdout %d bytes, stderr %q; want 1000 and done", len(resp.Stdout), resp.Stderr)
	}
	if !strings.Contains(resp.Error, "stdout truncated to 1000 bytes (49000 dropped)") {
		t.Errorf("error = %q", resp.Error)
	}
}

func TestPingDuringExec(t *testing.T) {
	h := newHarness(t, 0)
	h.send(`{"id":1,"op":"exec","argv":["/bin/sleep","1"]}`)
	h.send(`{"id":2,"op":"ping"}`)
	if first := h.recv(); first.ID != 2 {
		t.Errorf("first answer is for %d, want the ping (2)", first.ID)
	}
	if second := h.recv(); second.ID != 1 || second.Exit == nil || *second.Exit != 0 {
		t.Errorf("second answer = %+v, want exec 1 exit 0", second)
	}
}

func TestReadLogPingShutdown(t *testing.T) {
	h := newHarness(t, 0)
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, []byte("content\x00\xff"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		req      string
		id       int64
		data     string
		errorHas string
	}{
		{"read", `{"id":10,"op":"read","path":"` + file + `"}`, 10, "content\x00\xff", ""},
		{"read proc", `{"id":11,"op":"read","path":"/proc/self/comm"}`, 11, "", ""},
		{"read missing", `{"id":12,"op":"read","path":"/nonexistent"}`, 12, "", "no such file"},
		{"log", `{"id":13,"op":"log","service":"dyad-agent"}`, 13, "agent line 1\nagent line 2\n", ""},
		{"log unknown", `{"id":14,"op":"log","service":"nope"}`, 14, "", "unknown service"},
		{"ping", `{"id":15,"op":"ping"}`, 15, "", ""},
		{"bad json", `{"id":16,"op":`, 0, "", "bad request json"},
		{"unknown op", `{"id":17,"op":"format-disk"}`, 17, "", "unknown op"},
		{"relative read", `{"id":18,"op":"read","path":"etc/passwd"}`, 18, "", "absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.call(tc.req)
			if resp.ID != tc.id {
				t.Errorf("id = %d, want %d", resp.ID, tc.id)
			}
			if tc.name == "read proc" {
				if len(resp.Data) == 0 {
					t.Error("no data from /proc")
				}
			} else if string(resp.Data) != tc.data {
				t.Errorf("data = %q, want %q", resp.Data, tc.data)
			}
			if (tc.errorHas == "") != (resp.Error == "") || !strings.Contains(strings.ToLower(resp.Error), tc.errorHas) {
				t.Errorf("error = %q, want it to contain %q", resp.Error, tc.errorHas)
			}
			if resp.Exit != nil {
				t.Errorf("non-exec response carries exit %d", *resp.Exit)
			}
		})
	}
	for _, tc := range []struct {
		op     string
		reboot bool
	}{{"poweroff", false}, {"reboot", true}} {
		resp := h.call(`{"id":20,"op":"` + tc.op + `"}`)
		if resp.ID != 20 || resp.Error != "" {
			t.Errorf("%s: response %+v", tc.op, resp)
		}
		select {
		case reboot := <-h.shutdowns:
			if reboot != tc.reboot {
				t.Errorf("%s: shutdown reboot=%v", tc.op, reboot)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no shutdown requested", tc.op)
		}
	}
}

func TestRequestTooLong(t *testing.T) {
	h := newHarness(t, 0)
	go h.send(`{"id":1,"op":"exec","argv":["` + strings.Repeat("a", maxRequest) + `"]}`)
	if resp := h.recv(); !strings.Contains(resp.Error, "longer than") {
		t.Errorf("response = %+v", resp)
	}
	if resp := h.call(`{"id":2,"op":"ping"}`); resp.ID != 2 || resp.Error != "" {
		t.Errorf("ping after an overlong line: %+v", resp)
	}
}

func TestFindPort(t *testing.T) {
	sys := t.TempDir()
	for port, name := range map[string]string{"vport0p0": "org.qemu.guest_agent.0\n", "vport1p1": "dyad.test\n"} {
		if err := os.MkdirAll(filepath.Join(sys, port), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sys, port, "name"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := FindPort(sys, "/dev", "dyad.test")
	if err != nil || got != "/dev/vport1p1" {
		t.Errorf("FindPort = %q, %v", got, err)
	}
	if _, err := FindPort(sys, "/dev", "other"); err == nil {
		t.Error("found a port that does not exist")
	}
}

// openRawPty returns the master of a new pseudo terminal in raw mode and the
// path of its slave: a real character device the server can open like the
// virtio port.
func openRawPty(t *testing.T) (*os.File, string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo terminals on this host (/dev/ptmx): %v", err)
	}
	t.Cleanup(func() { master.Close() })
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	// cfmakeraw: no echo, no line editing, no newline translation.
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	return master, "/dev/pts/" + strconv.Itoa(n)
}

// The port appears after ServePort started, as when virtio_console loads
// late; a pseudo terminal stands in for the virtio character device.
func TestServePortFindsLatePort(t *testing.T) {
	host, slave := openRawPty(t)
	sys, dev := t.TempDir(), t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &Server{Log: log, Reaper: reap.New()}
	done := make(chan struct{})
	go func() {
		s.ServePort(ctx, Port{SysPorts: sys, Dev: dev, Name: "dyad.test", Interval: 10 * time.Millisecond})
		close(done)
	}()
	if err := os.MkdirAll(filepath.Join(sys, "vport2p1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(slave, filepath.Join(dev, "vport2p1")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sys, "vport2p1", "name"), []byte("dyad.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(host, `{"id":42,"op":"ping"}`+"\n"); err != nil {
		t.Fatal(err)
	}
	if err := host.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(host).ReadBytes('\n')
	if err != nil || string(line) != `{"id":42}`+"\n" {
		t.Errorf("answer %q, %v", line, err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ServePort did not return after cancel")
	}
}

// While the host end is away a virtio-serial read returns EOF, as a regular
// file does at its end. The port must stay open across that: reopening it
// loses (on the real device) or repeats (here) requests, and strands the
// answers of requests in flight.
func TestServePortWaitsForHostOnEOF(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	port := filepath.Join(dev, "vport0p1")
	if err := os.MkdirAll(filepath.Join(sys, "vport0p1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sys, "vport0p1", "name"), []byte("dyad.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	first := `{"id":1,"op":"ping"}` + "\n"
	if err := os.WriteFile(port, []byte(first), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Reaper: reap.New()}
	done := make(chan struct{})
	go func() {
		s.ServePort(ctx, Port{SysPorts: sys, Dev: dev, Name: "dyad.test", Interval: 5 * time.Millisecond})
		close(done)
	}()
	// waitFor polls the port file until it holds want; nothing may follow.
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, err := os.ReadFile(port)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) == want {
				return
			}
			if len(b) > len(want) || time.Now().After(deadline) {
				t.Fatalf("port holds %q, want %q", b, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(first + `{"id":1}` + "\n")

	f, err := os.OpenFile(port, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	second := `{"id":2,"op":"ping"}` + "\n"
	if _, err := f.WriteString(second); err != nil {
		t.Fatal(err)
	}
	f.Close()
	waitFor(first + `{"id":1}` + "\n" + second + `{"id":2}` + "\n")
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ServePort did not return after cancel")
	}
}
