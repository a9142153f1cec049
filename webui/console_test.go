package webui

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
)

// guestConsole stands in for the console socket of a VM's QEMU: a real
// unix socket whose accepted connections the test drives.
type guestConsole struct {
	path  string
	conns chan net.Conn
}

func newGuestConsole(t *testing.T) *guestConsole {
	t.Helper()
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "dyad-console")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	g := &guestConsole{path: filepath.Join(dir, "console.sock"), conns: make(chan net.Conn, 4)}
	ln, err := net.Listen("unix", g.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			g.conns <- c
		}
	}()
	return g
}

// accept returns the next connection the server opened to the guest.
func (g *guestConsole) accept(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-g.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not open the VM's console")
		return nil
	}
}

// consoleFake is a VMSource whose running VMs have consoles: DialConsole
// connects to the guestConsole of the kind asked for. VM 1 runs, VM 2 is
// stopped (the state table refuses), VM 3 is migrating (a plain conflict).
type consoleFake struct {
	guests map[string]*guestConsole

	mu    sync.Mutex
	dials []string
}

func newConsoleFake(t *testing.T) *consoleFake {
	return &consoleFake{guests: map[string]*guestConsole{
		consoleSerial: newGuestConsole(t),
		consoleVNC:    newGuestConsole(t),
	}}
}

func (f *consoleFake) dialed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.dials)
}

var consoleTestVMs = []unit.VM{
	{ID: 1, Name: "web", State: string(vm.Running), Node: 1},
	{ID: 2, Name: "db", State: string(vm.Stopped), Node: 2},
	{ID: 3, Name: "moving", State: string(vm.Running), Node: 1},
}

func (f *consoleFake) VMs(context.Context) ([]unit.VM, error) {
	return slices.Clone(consoleTestVMs), nil
}

func (f *consoleFake) VM(_ context.Context, id int) (unit.VM, error) {
	for _, v := range consoleTestVMs {
		if v.ID == id {
			return v, nil
		}
	}
	return unit.VM{}, fmt.Errorf("VM %d: %w", id, ErrNotFound)
}

func (f *consoleFake) DialConsole(ctx context.Context, id int, kind string) (net.Conn, error) {
	f.mu.Lock()
	f.dials = append(f.dials, fmt.Sprintf("%d %s", id, kind))
	f.mu.Unlock()
	switch id {
	case 1:
		g, ok := f.guests[kind]
		if !ok {
			return nil, fmt.Errorf("%w: unknown console kind %q", ErrInvalid, kind)
		}
		var d net.Dialer
		return d.DialContext(ctx, "unix", g.path)
	case 2:
		return nil, fmt.Errorf("VM db has no console: %w", &vm.NotAllowedError{State: vm.Stopped, Command: vm.Console, Allowed: vm.Allowed(vm.Stopped)})
	case 3:
		return nil, fmt.Errorf("%w: VM moving is migrating to PM 2", ErrConflict)
	}
	return nil, fmt.Errorf("VM %d: %w", id, ErrNotFound)
}

func (f *consoleFake) CreateVM(context.Context, unit.VMCreate) (unit.VM, error) {
	return unit.VM{}, errors.New("not in this fake")
}

func (f *consoleFake) ConfigVM(context.Context, int, unit.VMConfig) (unit.VM, error) {
	return unit.VM{}, errors.New("not in this fake")
}

func (f *consoleFake) Command(context.Context, int, string, unit.VMAction) (unit.VM, error) {
	return unit.VM{}, errors.New("not in this fake")
}

func (f *consoleFake) RemoveVM(context.Context, int, bool) error {
	return errors.New("not in this fake")
}

func (f *consoleFake) SerialLog(context.Context, int) ([]byte, error) {
	return nil, errors.New("not in this fake")
}

func newConsoleServer(t *testing.T, vms VMSource) *Server {
	t.Helper()
	s, err := New(Config{
		Source:     &fakeSource{unit: testUnit()},
		VMs:        vms,
		Users:      fakeUsers{users: map[string]string{"admin": "admin"}},
		SessionKey: testKey,
		Node:       1,
		Role:       func() unit.Role { return unit.RolePrimary },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sessionHeader() http.Header {
	h := http.Header{}
	h.Set("Cookie", (&http.Cookie{Name: sessionCookie, Value: signSession(testKey, "admin", time.Now().Add(time.Hour))}).String())
	return h
}

func wsURL(srv *httptest.Server, p string) string {
	return "ws" + strings.TrimPrefix(srv.URL, "http") + p
}

// TestConsoleRoundTrip relays bytes both ways through each console, more
// than one websocket message's worth, and checks the VNC subprotocol.
func TestConsoleRoundTrip(t *testing.T) {
	f := newConsoleFake(t)
	srv := httptest.NewServer(newConsoleServer(t, f).Handler())
	defer srv.Close()

	for _, tc := range []struct {
		kind    string
		offer   []string
		wantSub string
	}{
		{kind: consoleSerial},
		{kind: consoleVNC, offer: []string{"binary"}, wantSub: "binary"},
		{kind: consoleVNC}, // a client that offers no subprotocol still gets the stream
	} {
		t.Run(fmt.Sprintf("%s %v", tc.kind, tc.offer), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			ws, _, err := websocket.Dial(ctx, wsURL(srv, "/api/v1/vms/1/console/"+tc.kind),
				&websocket.DialOptions{HTTPHeader: sessionHeader(), Subprotocols: tc.offer})
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer ws.CloseNow()
			if got := ws.Subprotocol(); got != tc.wantSub {
				t.Errorf("subprotocol %q, want %q", got, tc.wantSub)
			}
			guest := f.guests[tc.kind].accept(t)
			client := websocket.NetConn(ctx, ws, websocket.MessageBinary)

			up := make([]byte, 100<<10)
			down := make([]byte, 150<<10)
			rand.Read(up)
			rand.Read(down)
			errc := make(chan error, 2)
			go func() { // in 1 KiB messages, as keys and pastes come
				for b := up; len(b) > 0; b = b[min(len(b), 1024):] {
					if _, err := client.Write(b[:min(len(b), 1024)]); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			go func() {
				_, err := guest.Write(down)
				errc <- err
			}()
			gotUp := make([]byte, len(up))
			guest.SetReadDeadline(time.Now().Add(15 * time.Second))
			if _, err := io.ReadFull(guest, gotUp); err != nil {
				t.Fatalf("guest reading: %v", err)
			}
			gotDown := make([]byte, len(down))
			if _, err := io.ReadFull(client, gotDown); err != nil {
				t.Fatalf("client reading: %v", err)
			}
			for range 2 {
				if err := <-errc; err != nil {
					t.Fatalf("writing: %v", err)
				}
			}
			if !bytes.Equal(gotUp, up) {
				t.Errorf("the guest got other bytes than the client sent")
			}
			if !bytes.Equal(gotDown, down) {
				t.Errorf("the client got other bytes than the guest sent")
			}

			// The client leaves: the server closes the VM's console, so
			// the next client can have it.
			if err := ws.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Errorf("closing: %v", err)
			}
			if n, err := guest.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("guest read after the client left: %d, %v; want EOF", n, err)
			}
		})
	}
}

// TestConsoleOutlivesHeaderTimeout: the agent's server bounds how long a
// request's headers may take; a console open longer than that still works.
func TestConsoleOutlivesHeaderTimeout(t *testing.T) {
	f := newConsoleFake(t)
	srv := httptest.NewUnstartedServer(newConsoleServer(t, f).Handler())
	srv.Config.ReadHeaderTimeout = 100 * time.Millisecond
	srv.Start()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, wsURL(srv, "/api/v1/vms/1/console/serial"), &websocket.DialOptions{HTTPHeader: sessionHeader()})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer ws.CloseNow()
	guest := f.guests[consoleSerial].accept(t)
	time.Sleep(300 * time.Millisecond)
	if err := ws.Write(ctx, websocket.MessageBinary, []byte("still here\r")); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, guest, len("still here\r")); got != "still here\r" {
		t.Errorf("guest got %q", got)
	}
}

// readAll reads n bytes from c.
func readAll(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d bytes: %v (got %q)", n, err, b)
	}
	return string(b)
}

// TestConsoleVMCloses: when the VM's console ends (the VM stopped), the
// browser gets a normal close with a reason it can show.
func TestConsoleVMCloses(t *testing.T) {
	f := newConsoleFake(t)
	srv := httptest.NewServer(newConsoleServer(t, f).Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, wsURL(srv, "/api/v1/vms/1/console/serial"), &websocket.DialOptions{HTTPHeader: sessionHeader()})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer ws.CloseNow()
	guest := f.guests[consoleSerial].accept(t)
	if _, err := guest.Write([]byte("reboot: Power down\r\n")); err != nil {
		t.Fatal(err)
	}
	guest.Close()
	typ, msg, err := ws.Read(ctx)
	if err != nil || typ != websocket.MessageBinary || string(msg) != "reboot: Power down\r\n" {
		t.Fatalf("first read: %v %q %v, want the guest's last line", typ, msg, err)
	}
	_, _, err = ws.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusNormalClosure || !strings.Contains(ce.Reason, "console closed") {
		t.Fatalf("after the VM's console closed: %v, want a normal close saying why", err)
	}
}

// TestConsoleRefusesText: the consoles carry bytes; a text message closes
// the websocket (and with it the VM's console) instead of being guessed at.
func TestConsoleRefusesText(t *testing.T) {
	f := newConsoleFake(t)
	srv := httptest.NewServer(newConsoleServer(t, f).Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, wsURL(srv, "/api/v1/vms/1/console/serial"), &websocket.DialOptions{HTTPHeader: sessionHeader()})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer ws.CloseNow()
	guest := f.guests[consoleSerial].accept(t)
	// A browser reads all the time, so it answers the server's close at
	// once.
	closed := make(chan error, 1)
	go func() {
		_, _, err := ws.Read(ctx)
		closed <- err
	}()
	if err := ws.Write(ctx, websocket.MessageText, []byte("ls\r")); err != nil {
		t.Fatal(err)
	}
	guest.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := guest.Read(make([]byte, 16)); err != io.EOF {
		t.Errorf("guest read: %d, %v; want EOF and no bytes", n, err)
	}
	err = <-closed
	if got := websocket.CloseStatus(err); got != websocket.StatusUnsupportedData {
		t.Errorf("close status %v (%v), want %v", got, err, websocket.StatusUnsupportedData)
	}
}

// TestConsoleErrors: everything refused before the upgrade is an ordinary
// JSON API error, and the VM's console is not opened for a request that is
// not allowed to have it.
func TestConsoleErrors(t *testing.T) {
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	upgrade := func(r *http.Request) {
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "websocket")
		r.Header.Set("Sec-WebSocket-Version", "13")
		r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	}
	tests := []struct {
		name     string
		noVMs    bool
		path     string
		opts     []reqOpt
		want     int
		wantMsg  string
		wantDial bool
	}{
		{name: "not logged in", path: "/api/v1/vms/1/console/serial", opts: []reqOpt{upgrade}, want: 401},
		{name: "bad session", path: "/api/v1/vms/1/console/vnc", opts: []reqOpt{upgrade, withCookie("forged")}, want: 401},
		{name: "bad id", path: "/api/v1/vms/web/console/serial", opts: []reqOpt{upgrade, ck}, want: 400, wantMsg: "invalid VM id"},
		{name: "unknown VM", path: "/api/v1/vms/9/console/serial", opts: []reqOpt{upgrade, ck}, want: 404, wantMsg: "VM 9", wantDial: true},
		{name: "stopped VM", path: "/api/v1/vms/2/console/vnc", opts: []reqOpt{upgrade, ck}, want: 409, wantMsg: "Stopped", wantDial: true},
		{name: "conflict", path: "/api/v1/vms/3/console/serial", opts: []reqOpt{upgrade, ck}, want: 409, wantMsg: "migrating", wantDial: true},
		{name: "not a websocket", path: "/api/v1/vms/1/console/serial", opts: []reqOpt{ck}, want: 426, wantMsg: "websocket"},
		{name: "other origin", path: "/api/v1/vms/1/console/serial", opts: []reqOpt{upgrade, ck, withHeader("Origin", "http://evil.example")}, want: 403, wantMsg: "cross-origin"},
		{name: "other site", path: "/api/v1/vms/1/console/vnc", opts: []reqOpt{upgrade, ck, withHeader("Sec-Fetch-Site", "cross-site")}, want: 403, wantMsg: "cross-origin"},
		{name: "bad origin", path: "/api/v1/vms/1/console/vnc", opts: []reqOpt{upgrade, ck, withHeader("Origin", "null")}, want: 403, wantMsg: "cross-origin"},
		{name: "unknown kind", path: "/api/v1/vms/1/console/spice", opts: []reqOpt{upgrade, ck}, want: 404},
		{name: "no VMs", noVMs: true, path: "/api/v1/vms/1/console/serial", opts: []reqOpt{upgrade, ck}, want: 404, wantMsg: "no virtual machines"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newConsoleFake(t)
			var vms VMSource = f
			if tc.noVMs {
				vms = nil
			}
			w := do(t, newConsoleServer(t, vms).Handler(), "GET", tc.path, "", tc.opts...)
			if w.Code != tc.want {
				t.Fatalf("GET %s = %d %s, want %d", tc.path, w.Code, w.Body.String(), tc.want)
			}
			if msg := errorMessage(t, w); !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error %q does not contain %q", msg, tc.wantMsg)
			}
			if dialed := len(f.dialed()) > 0; dialed != tc.wantDial {
				t.Errorf("console dialled: %v, want %v", f.dialed(), tc.wantDial)
			}
		})
	}

	t.Run("409 carries the allowed commands", func(t *testing.T) {
		w := do(t, newConsoleServer(t, newConsoleFake(t)).Handler(), "GET", "/api/v1/vms/2/console/serial", "", upgrade, ck)
		var body notAllowedReply
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if body.State != string(vm.Stopped) || !slices.Contains(body.Allowed, string(vm.Start)) {
			t.Errorf("409 body %s, want state Stopped and Start allowed", w.Body.String())
		}
	})
}

// TestConsoleKeepalive: a client that stops answering pings (gone without
// closing) loses the console, which QEMU would otherwise keep from the
// next client.
func TestConsoleKeepalive(t *testing.T) {
	g := newGuestConsole(t)
	ended := make(chan relayEnd, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		console, err := net.Dial("unix", g.path)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer console.Close()
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		ended <- relayConsole(r.Context(), ws, console, 50*time.Millisecond, 200*time.Millisecond)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// The client never reads, so it never answers a ping.
	ws, _, err := websocket.Dial(ctx, wsURL(srv, "/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	guest := g.accept(t)
	guest.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := guest.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("guest read: %v, want EOF once the silent client was dropped", err)
	}
	select {
	case end := <-ended:
		if !strings.Contains(end.reason, "pings") {
			t.Errorf("relay ended with %q, want the missed pings", end.reason)
		}
	case <-ctx.Done():
		t.Fatal("relay did not end")
	}
}

// TestConsolePages: the pages go to the login page without a session, and
// load their scripts from this server only.
func TestConsolePages(t *testing.T) {
	h := newConsoleServer(t, newConsoleFake(t)).Handler()
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	for _, tc := range []struct {
		path, script string
		// inlineStyle: xterm.js writes style elements; noVNC does not.
		inlineStyle bool
	}{
		{"/vms/1/console", "/static/console.js", true},
		{"/vms/1/vnc", "/static/vnc.js", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			w := do(t, h, "GET", tc.path, "")
			if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login" {
				t.Errorf("without a session: %d to %q, want 303 to /login", w.Code, w.Header().Get("Location"))
			}
			w = do(t, h, "GET", tc.path, "", ck)
			if w.Code != 200 {
				t.Fatalf("GET %s = %d %s", tc.path, w.Code, w.Body.String())
			}
			body := w.Body.String()
			for _, want := range []string{`<script type="module" src="` + tc.script + `"></script>`, `data-vm="1"`, "web", `id="console-status"`} {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %q:\n%s", want, body)
				}
			}
			if regexp.MustCompile(`<script>|<script [^>]*src="(https?:)?//`).MatchString(body) {
				t.Errorf("page has an inline or foreign script:\n%s", body)
			}
			csp := w.Header().Get("Content-Security-Policy")
			if !strings.Contains(csp, "script-src 'self';") {
				t.Errorf("CSP %q does not keep scripts to this server", csp)
			}
			if got := strings.Contains(csp, "style-src 'self' 'unsafe-inline';"); got != tc.inlineStyle {
				t.Errorf("CSP %q: inline style allowed %v, want %v", csp, got, tc.inlineStyle)
			}
			if w.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", w.Header().Get("Cache-Control"))
			}
			for _, bad := range []struct {
				path string
				want int
			}{
				{strings.Replace(tc.path, "/1/", "/9/", 1), 404},
				{strings.Replace(tc.path, "/1/", "/x/", 1), 404},
			} {
				if w := do(t, h, "GET", bad.path, "", ck); w.Code != bad.want {
					t.Errorf("GET %s = %d, want %d", bad.path, w.Code, bad.want)
				}
			}
		})
	}
	t.Run("no VMs", func(t *testing.T) {
		h := newConsoleServer(t, nil).Handler()
		if w := do(t, h, "GET", "/vms/1/console", "", ck); w.Code != 404 {
			t.Errorf("GET /vms/1/console on a server without VMs = %d, want 404", w.Code)
		}
	})
}

// requireAssets fails the test when the vendor assets are missing and the
// build demands them (make test sets DYAD_REQUIRE_ASSETS); plain go test
// on a fresh clone skips instead.
func requireAssets(t *testing.T) {
	t.Helper()
	missing := missingConsoleAssets(assets)
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("console assets missing from the embedded files: %v (run make webui-assets)", missing)
	if os.Getenv("DYAD_REQUIRE_ASSETS") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// TestConsoleAssets: the console's own files and the third-party ones are
// served with script and style types, and no folder is listed.
func TestConsoleAssets(t *testing.T) {
	h := newConsoleServer(t, newConsoleFake(t)).Handler()
	check := func(t *testing.T, p string) {
		t.Helper()
		w := do(t, h, "GET", p, "")
		if w.Code != 200 {
			t.Errorf("GET %s = %d", p, w.Code)
			return
		}
		ct := w.Header().Get("Content-Type")
		switch path.Ext(p) {
		case ".js", ".mjs":
			// Browsers run a module only with a JavaScript type.
			if !strings.Contains(ct, "javascript") {
				t.Errorf("GET %s: Content-Type %q, want JavaScript", p, ct)
			}
		case ".css":
			if !strings.HasPrefix(ct, "text/css") {
				t.Errorf("GET %s: Content-Type %q, want text/css", p, ct)
			}
		}
	}
	t.Run("own", func(t *testing.T) {
		for _, name := range consoleStatic {
			check(t, "/static/"+name)
		}
	})
	t.Run("vendor", func(t *testing.T) {
		requireAssets(t)
		for _, name := range consoleAssets {
			check(t, "/static/vendor/"+name)
		}
	})
	t.Run("no listing", func(t *testing.T) {
		for _, p := range []string{"/static/vendor/", "/static/vendor/novnc/", "/static/vendor/novnc/core", "/static/vendor/../console.html", "/static/vendor/%2e%2e/templates/console.html", "/static/"} {
			if w := do(t, h, "GET", p, ""); w.Code != 404 {
				t.Errorf("GET %s = %d %q, want 404", p, w.Code, w.Body.String())
			}
		}
	})
}

// importRE finds the module of a static import or re-export statement; a
// statement starts a line and may span several.
var importRE = regexp.MustCompile(`(?m)^(?:import\s+(?:[\w$*{}\s,]+?\s+from\s*)?|export\s+(?:\*(?:\s+as\s+[\w$]+)?|\{[^}]*\})\s*from\s*)['"]([^'"]+)['"]`)

// TestConsoleModulesResolve follows every ES module import of the console
// scripts and of noVNC through the embedded files: a file the copy into
// the vendor folder missed would break the page in the browser only.
func TestConsoleModulesResolve(t *testing.T) {
	requireAssets(t)
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	queue := []string{"console.js", "vnc.js"}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if seen[name] {
			continue
		}
		seen[name] = true
		src, err := fs.ReadFile(static, name)
		if err != nil {
			t.Errorf("module %s: %v", name, err)
			continue
		}
		for _, m := range importRE.FindAllSubmatch(src, -1) {
			spec := string(m[1])
			var target string
			switch {
			case strings.HasPrefix(spec, "/static/"):
				target = strings.TrimPrefix(spec, "/static/")
			case strings.HasPrefix(spec, "./"), strings.HasPrefix(spec, "../"):
				target = path.Join(path.Dir(name), spec)
			default:
				t.Errorf("module %s imports %q: a bare name the browser cannot load", name, spec)
				continue
			}
			queue = append(queue, target)
		}
	}
	if !seen["vendor/novnc/core/rfb.js"] || !seen["vendor/novnc/vendor/pako/lib/zlib/inflate.js"] {
		t.Errorf("the import walk missed noVNC: saw %d modules", len(seen))
	}
	t.Logf("%d modules resolve", len(seen))
}

// browserPage is a page of a headless Chromium driven over the DevTools
// protocol. The console tests wait on the page's state in real time:
// --dump-dom with a virtual time budget fires noVNC's handshake timers
// early and may dump before some fifty modules have loaded.
type browserPage struct {
	t      *testing.T
	ws     *websocket.Conn
	nextID int
	// log holds the page's console messages, exceptions and browser log
	// entries (a Content-Security-Policy refusal is one).
	log []string
}

// openBrowserPage starts Chromium and opens url in it; it is closed when
// the test ends.
func openBrowserPage(t *testing.T, url string) *browserPage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	cmd := exec.CommandContext(ctx, chromiumPath,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--window-size=1024,768", "--remote-debugging-port=0", "--user-data-dir="+t.TempDir(), "about:blank")
	cmd.WaitDelay = 10 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	// Chromium prints where its DevTools endpoint listens.
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := regexp.MustCompile(`DevTools listening on (ws://\S+)`).FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	p := &browserPage{t: t}
	t.Cleanup(func() {
		if p.ws != nil {
			p.call("Browser.close", nil)
			p.ws.CloseNow()
		}
		if err := cmd.Wait(); err != nil && ctx.Err() == nil {
			t.Logf("chromium: %v", err)
		}
		cancel()
	})
	var browserURL string
	select {
	case browserURL = <-found:
	case <-time.After(time.Minute):
		cancel()
		t.Fatal("chromium did not open its DevTools endpoint")
	}
	// The page target of about:blank.
	host := strings.TrimPrefix(browserURL, "ws://")
	host = host[:strings.Index(host, "/")]
	resp, err := http.Get("http://" + host + "/json/list")
	if err != nil {
		t.Fatal(err)
	}
	var targets []struct{ Type, WebSocketDebuggerURL string }
	err = json.NewDecoder(resp.Body).Decode(&targets)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range targets {
		if tg.Type == "page" {
			if p.ws, _, err = websocket.Dial(ctx, tg.WebSocketDebuggerURL, nil); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if p.ws == nil {
		t.Fatalf("chromium has no page: %+v", targets)
	}
	p.ws.SetReadLimit(32 << 20)
	for _, m := range []string{"Runtime.enable", "Log.enable", "Page.enable"} {
		if _, err := p.call(m, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.call("Page.navigate", map[string]string{"url": url}); err != nil {
		t.Fatal(err)
	}
	return p
}

// call sends one DevTools command and returns its result, keeping the
// events that come before it.
func (p *browserPage) call(method string, params any) (json.RawMessage, error) {
	p.nextID++
	id := p.nextID
	req, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.ws.Write(ctx, websocket.MessageText, req); err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	for {
		_, data, err := p.ws.Read(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		var msg struct {
			ID     int             `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(data, &msg); err != nil {
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		switch {
		case msg.ID == id && msg.Error != nil:
			return nil, fmt.Errorf("%s: %s", method, msg.Error.Message)
		case msg.ID == id:
			return msg.Result, nil
		case msg.Method == "Runtime.consoleAPICalled", msg.Method == "Runtime.exceptionThrown", msg.Method == "Log.entryAdded":
			p.log = append(p.log, msg.Method+" "+string(msg.Params))
		}
	}
}

// eval evaluates a JavaScript expression in the page and returns its value
// as a string.
func (p *browserPage) eval(expr string) (string, error) {
	res, err := p.call("Runtime.evaluate", map[string]any{"expression": "String(" + expr + ")", "returnByValue": true})
	if err != nil {
		return "", err
	}
	var r struct {
		Result struct {
			Value string `json:"value"`
		} `json:"result"`
	}
	err = json.Unmarshal(res, &r)
	return r.Result.Value, err
}

// waitFor polls expr until it evaluates to want and returns the page's DOM.
func (p *browserPage) waitFor(expr, want string, timeout time.Duration) (dom string, ok bool) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := p.eval(expr)
		if err != nil {
			p.t.Fatalf("evaluating %s: %v", expr, err)
		}
		if got == want || time.Now().After(deadline) {
			dom, err := p.eval("document.documentElement.outerHTML")
			if err != nil {
				p.t.Fatal(err)
			}
			if got != want {
				p.t.Errorf("%s is %q after %v, want %q", expr, got, timeout, want)
			}
			return dom, got == want
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot saves the page as name in $DYAD_SCREENSHOT_DIR, when set, for
// a person to look at.
func (p *browserPage) screenshot(name string) {
	p.t.Helper()
	dir := os.Getenv("DYAD_SCREENSHOT_DIR")
	if dir == "" {
		return
	}
	res, err := p.call("Page.captureScreenshot", map[string]string{"format": "png"})
	if err != nil {
		p.t.Fatal(err)
	}
	var shot struct {
		Data []byte `json:"data"` // base64 in JSON
	}
	if err := json.Unmarshal(res, &shot); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), shot.Data, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// checkLog fails on a script error or a resource the page was refused.
func (p *browserPage) checkLog() {
	p.t.Helper()
	for _, m := range p.log {
		if strings.Contains(m, "Content Security Policy") || strings.Contains(m, "exceptionThrown") || strings.Contains(m, "Failed to load") {
			p.t.Errorf("browser: %s", m)
		}
	}
}

// browserServer serves s to Chromium as a browser that has logged in.
func browserServer(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	cookie := signSession(testKey, "admin", time.Now().Add(time.Hour))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := r.Cookie(sessionCookie); err != nil {
			r.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
		}
		s.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestSerialConsoleInBrowser opens the serial console page in Chromium:
// xterm.js shows what the guest printed, and answers the guest's terminal
// query (Device Attributes) through the websocket, which carries bytes the
// other way.
func TestSerialConsoleInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no Chromium at %s (Debian package chromium): %v", chromiumPath, err)
	}
	requireAssets(t)
	f := newConsoleFake(t)
	srv := browserServer(t, newConsoleServer(t, f))
	reply := make(chan string, 1)
	guestConn := make(chan net.Conn, 1)
	go func() {
		var c net.Conn
		select {
		case c = <-f.guests[consoleSerial].conns:
			guestConn <- c
		case <-time.After(time.Minute):
			reply <- "the page did not open the console"
			return
		}
		c.Write([]byte("GUEST START boot=7 n=0\r\n\x1b[1;32mDURABLE\x1b[0m boot=7 n=1\r\n\x1b[c"))
		c.SetReadDeadline(time.Now().Add(time.Minute))
		var got []byte
		buf := make([]byte, 64)
		for !bytes.Contains(got, []byte("c")) {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		reply <- string(got)
	}()
	p := openBrowserPage(t, srv.URL+"/vms/1/console")
	p.waitFor(`document.querySelector(".xterm-rows")?.textContent.includes("boot=7 n=1")`, "true", time.Minute)
	page, _ := p.waitFor(`document.getElementById("console-status").dataset.state`, "connected", time.Minute)
	p.checkLog()
	p.screenshot("serial-console.png")
	for _, want := range []string{"GUEST START boot=7 n=0", `DURABLE</span>`, "boot=7 n=1", "xterm-rows"} {
		if !strings.Contains(page, want) {
			t.Errorf("console DOM lacks %q", want)
		}
	}
	// xterm.js colours through classes its run-time style sheet defines.
	if !strings.Contains(page, `class="xterm-bold xterm-fg-10"`) || !strings.Contains(page, ".xterm-fg-10 { color:") {
		t.Errorf("the guest's colours are not rendered")
	}
	var guest net.Conn
	select {
	case guest = <-guestConn:
	case <-time.After(time.Minute):
		t.Fatal("the page did not open the console")
	}
	select {
	case got := <-reply:
		if !strings.HasPrefix(got, "\x1b[?") {
			t.Errorf("the guest got %q from the browser, want a Device Attributes answer", got)
		}
	case <-time.After(time.Minute):
		t.Errorf("the guest got nothing from the browser")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s\nbrowser log:\n%s", page, strings.Join(p.log, "\n"))
		return
	}

	// The VM's console ends (the VM restarts): the page says why, with the
	// VM's state from the API, and connects again.
	guest.Close()
	p.waitFor(`document.getElementById("console-status").dataset.state`, "disconnected", time.Minute)
	status, err := p.eval(`document.getElementById("console-status").textContent`)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"the VM's console closed", "the VM is Running", "Reconnecting"} {
		if !strings.Contains(status, want) {
			t.Errorf("status %q does not say %q", status, want)
		}
	}
	p.waitFor(`document.getElementById("console-status").dataset.state`, "connected", time.Minute)
	select {
	case <-f.guests[consoleSerial].conns:
	case <-time.After(time.Minute):
		t.Errorf("the page did not open the console again")
	}
	p.checkLog()
}

// fakeRFB plays a VNC server's side of the RFB 3.8 handshake without
// authentication, then reports the first message type the client sent.
func fakeRFB(c net.Conn, name string) (byte, error) {
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.Write([]byte("RFB 003.008\n")); err != nil {
		return 0, err
	}
	version := make([]byte, 12)
	if _, err := io.ReadFull(c, version); err != nil {
		return 0, fmt.Errorf("reading the client's version: %w", err)
	}
	if string(version) != "RFB 003.008\n" {
		return 0, fmt.Errorf("client version %q", version)
	}
	if _, err := c.Write([]byte{1, 1}); err != nil { // one security type: None
		return 0, err
	}
	choice := make([]byte, 1)
	if _, err := io.ReadFull(c, choice); err != nil || choice[0] != 1 {
		return 0, fmt.Errorf("security type %v, %v; want None (1)", choice, err)
	}
	if _, err := c.Write([]byte{0, 0, 0, 0}); err != nil { // SecurityResult OK
		return 0, err
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil { // ClientInit
		return 0, fmt.Errorf("reading ClientInit: %w", err)
	}
	var init bytes.Buffer
	binary.Write(&init, binary.BigEndian, struct {
		Width, Height                     uint16
		BPP, Depth, BigEndian, TrueColour uint8
		RedMax, GreenMax, BlueMax         uint16
		RedShift, GreenShift, BlueShift   uint8
		Pad                               [3]byte
		NameLen                           uint32
	}{640, 480, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0, [3]byte{}, uint32(len(name))})
	init.WriteString(name)
	if _, err := c.Write(init.Bytes()); err != nil {
		return 0, err
	}
	msg := make([]byte, 1)
	if _, err := io.ReadFull(c, msg); err != nil {
		return 0, fmt.Errorf("reading the client's first message: %w", err)
	}
	return msg[0], nil
}

// TestVNCConsoleInBrowser opens the graphical console page in Chromium:
// noVNC connects through the websocket to a fake VNC server, completes the
// RFB handshake and sends its first request.
func TestVNCConsoleInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no Chromium at %s (Debian package chromium): %v", chromiumPath, err)
	}
	requireAssets(t)
	f := newConsoleFake(t)
	srv := browserServer(t, newConsoleServer(t, f))
	first := make(chan error, 1)
	go func() {
		select {
		case c := <-f.guests[consoleVNC].conns:
			typ, err := fakeRFB(c, "dyad-test-desktop")
			// RFB client messages: 0 SetPixelFormat, 2 SetEncodings, 3
			// FramebufferUpdateRequest.
			if err == nil && typ != 0 && typ != 2 && typ != 3 {
				err = fmt.Errorf("first client message type %d", typ)
			}
			first <- err
		case <-time.After(time.Minute):
			first <- errors.New("the page did not open the console")
		}
	}()
	p := openBrowserPage(t, srv.URL+"/vms/1/vnc")
	page, _ := p.waitFor(`document.getElementById("console-status").dataset.state`, "connected", time.Minute)
	p.checkLog()
	p.screenshot("vnc-console.png")
	for _, want := range []string{"Connected to dyad-test-desktop.", `<canvas width="640" height="480"`} {
		if !strings.Contains(page, want) {
			t.Errorf("VNC page DOM lacks %q", want)
		}
	}
	select {
	case err := <-first:
		if err != nil {
			t.Errorf("RFB handshake: %v", err)
		}
	case <-time.After(time.Minute):
		t.Errorf("the fake VNC server heard nothing")
	}

	// A stopped VM: the handshake is refused (409), and the page asks the
	// API why, since the browser does not show the answer.
	stopped := openBrowserPage(t, srv.URL+"/vms/2/vnc")
	stopped.waitFor(`document.getElementById("console-status").dataset.state`, "disconnected", time.Minute)
	status, err := stopped.eval(`document.getElementById("console-status").textContent`)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status, "the VM is Stopped") {
		t.Errorf("status for a stopped VM %q, want it to say the VM is Stopped", status)
	}
	if t.Failed() {
		t.Logf("DOM:\n%s\nbrowser log:\n%s", page, strings.Join(p.log, "\n"))
	}
}
