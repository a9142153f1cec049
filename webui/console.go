package webui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/gin-gonic/gin"
)

// The consoles of a VM: its first serial port in xterm.js and its display in
// noVNC. The browser (or dyadctl) speaks a websocket of binary messages to
// /api/v1/vms/:id/console/{serial,vnc}; the server relays the bytes to and
// from the stream VMSource.DialConsole opens. The server reads nothing of
// the guest's bytes: it is a pipe, so it has no parser to harden.

// Console kinds, as VMSource.DialConsole names them.
const (
	consoleSerial = "serial"
	consoleVNC    = "vnc"
)

// vncSubprotocol is the websocket subprotocol noVNC offers for binary RFB.
const vncSubprotocol = "binary"

// consoleKeepalive is how often an idle console websocket is pinged, and
// consolePongWait how long a pong may take. A browser that went away without
// closing (a laptop lid, a dropped link) would otherwise hold the VM's
// console: QEMU serves one client per console.
const (
	consoleKeepalive = 30 * time.Second
	consolePongWait  = 15 * time.Second
)

// vendorDir holds the third-party browser code `make webui-assets` copies
// from webui/node_modules (git keeps only its README).
const vendorDir = "assets/static/vendor"

// consoleAssets are the files the console pages cannot work without; the
// server warns at start when a build lacks them.
var consoleAssets = []string{
	"xterm/xterm.mjs",
	"xterm/xterm.css",
	"xterm/addon-fit.mjs",
	"novnc/core/rfb.js",
}

// consoleStatic are the console pages' own scripts and style.
var consoleStatic = []string{"console.js", "vnc.js", "consolews.js", "console.css"}

func (s *Server) consoleRoutes(e *gin.Engine, api *gin.RouterGroup) {
	api.GET("/vms/:id/console/serial", s.consoleSocket(consoleSerial))
	api.GET("/vms/:id/console/vnc", s.consoleSocket(consoleVNC))
	e.GET("/vms/:id/console", s.consolePage(consoleSerial))
	e.GET("/vms/:id/vnc", s.consolePage(consoleVNC))

	// Each own asset is routed by name, like the dashboard's. The vendor
	// tree (noVNC is some fifty ES modules importing each other) is served
	// through a file system that refuses directories, so nothing lists it.
	static := http.FS(filesOnly{fsys: assets, dir: "assets/static"})
	for _, name := range consoleStatic {
		e.StaticFileFS("/static/"+name, name, static)
	}
	vendor := http.FS(filesOnly{fsys: assets, dir: vendorDir})
	serveVendor := func(c *gin.Context) { c.FileFromFS(c.Param("path"), vendor) }
	e.GET("/static/vendor/*path", serveVendor)
	e.HEAD("/static/vendor/*path", serveVendor)

	if missing := missingConsoleAssets(assets); len(missing) > 0 {
		s.log.Warn("webui: console assets missing from this build; the VM console pages will not work (build with make webui-assets)",
			"missing", missing)
	}
}

// missingConsoleAssets lists the consoleAssets fsys lacks.
func missingConsoleAssets(fsys fs.FS) []string {
	var missing []string
	for _, name := range consoleAssets {
		if st, err := fs.Stat(fsys, path.Join(vendorDir, name)); err != nil || st.IsDir() {
			missing = append(missing, name)
		}
	}
	return missing
}

// filesOnly serves the regular files under dir of fsys and reports every
// directory as missing, so an http.FileServer on it lists nothing.
type filesOnly struct {
	fsys fs.FS
	dir  string
}

func (f filesOnly) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	file, err := f.fsys.Open(path.Join(f.dir, name))
	if err != nil {
		return nil, err
	}
	st, err := file.Stat()
	if err != nil || !st.Mode().IsRegular() {
		file.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return file, nil
}

// consoleSocket answers the websocket of one console kind. Everything that
// can fail before the upgrade (a bad id, an unknown or stopped VM) is an
// ordinary JSON error, which a client sees as the handshake's answer.
func (s *Server) consoleSocket(kind string) gin.HandlerFunc {
	return func(c *gin.Context) {
		id, ok := vmID(c)
		if !ok {
			return
		}
		r := c.Request
		// CrossOriginProtection lets every GET pass, and a websocket
		// handshake is a GET that a page of any site may make with the
		// operator's cookie. Refuse it before the console is opened.
		if err := sameOrigin(r); err != nil {
			s.log.Info("webui: cross-origin console request refused", "vm", id, "kind", kind, "err", err, "client", c.ClientIP())
			apiError(c, http.StatusForbidden, "cross-origin request refused: "+err.Error())
			return
		}
		if !isWebsocket(r) {
			c.Header("Connection", "Upgrade")
			c.Header("Upgrade", "websocket")
			apiError(c, http.StatusUpgradeRequired, "GET "+r.URL.Path+" is a websocket (binary messages): send a websocket handshake")
			return
		}
		console, err := s.cfg.VMs.DialConsole(r.Context(), id, kind)
		if err != nil {
			s.vmFailed(c, err, "open the "+kind+" console of VM "+strconv.Itoa(id), vmNotFound(id))
			return
		}
		defer console.Close()
		opts := &websocket.AcceptOptions{}
		if kind == consoleVNC {
			opts.Subprotocols = []string{vncSubprotocol}
		}
		ws, err := websocket.Accept(c.Writer, r, opts)
		if err != nil {
			// Accept has answered the client itself.
			s.log.Info("webui: console websocket refused", "vm", id, "kind", kind, "err", err, "client", c.ClientIP())
			return
		}
		s.log.Info("webui: console opened", "vm", id, "kind", kind, "client", c.ClientIP())
		start := time.Now()
		end := relayConsole(r.Context(), ws, console, consoleKeepalive, consolePongWait)
		s.log.Info("webui: console closed", "vm", id, "kind", kind, "client", c.ClientIP(),
			"duration", time.Since(start).Round(time.Millisecond), "to_vm", end.toVM, "from_vm", end.fromVM, "reason", end.reason)
	}
}

// sameOrigin refuses a request whose Origin names another host than the
// one it was sent to, or that the browser marks as made by another site.
// Requests without these headers are not from a browser page (dyadctl,
// curl) and pass; authentication still applies to them.
func sameOrigin(r *http.Request) error {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return fmt.Errorf("Sec-Fetch-Site is %q", site)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return fmt.Errorf("invalid Origin %q", origin)
	}
	if !strings.EqualFold(u.Host, r.Host) {
		return fmt.Errorf("Origin %q is not this server (%q)", origin, r.Host)
	}
	return nil
}

// isWebsocket reports whether r asks for a websocket upgrade.
func isWebsocket(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// relayEnd tells how a console relay ended.
type relayEnd struct {
	toVM, fromVM int64 // bytes relayed each way
	reason       string
}

// relayed is what one direction of a relay copied before it stopped.
type relayed struct {
	fromVM bool
	n      int64
	err    error
}

func (e *relayEnd) add(r relayed) {
	if r.fromVM {
		e.fromVM = r.n
	} else {
		e.toVM = r.n
	}
}

// relayConsole copies bytes both ways between the websocket and the VM's
// console until either side ends, the client stops answering pings, or ctx
// ends. It closes both; the browser is told why when the VM's side ended.
func relayConsole(ctx context.Context, ws *websocket.Conn, console net.Conn, keepalive, pongWait time.Duration) relayEnd {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// NetConn turns every Write into one binary message and refuses text
	// messages; it lifts the 32 KiB read limit (noVNC's messages are small,
	// but a pasted text may not be).
	client := websocket.NetConn(ctx, ws, websocket.MessageBinary)

	done := make(chan relayed, 2)
	go func() {
		n, err := io.Copy(console, client)
		done <- relayed{fromVM: false, n: n, err: err}
	}()
	go func() {
		n, err := io.Copy(client, console)
		done <- relayed{fromVM: true, n: n, err: err}
	}()
	pingFailed := make(chan error, 1)
	go func() {
		t := time.NewTicker(keepalive)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			pctx, pcancel := context.WithTimeout(ctx, pongWait)
			err := ws.Ping(pctx)
			pcancel()
			if err != nil {
				if ctx.Err() == nil {
					pingFailed <- err
				}
				return
			}
		}
	}()

	var end relayEnd
	closeReason := ""
	abrupt := false // no close handshake with a client that stopped answering
	pending := 2
	select {
	case r := <-done:
		pending--
		end.add(r)
		switch {
		case r.fromVM:
			end.reason = "the VM's console ended"
			if r.err != nil {
				end.reason += ": " + r.err.Error()
			}
			closeReason = "the VM's console closed (is the VM still running?)"
		case r.err == nil:
			end.reason = "the client closed the console"
		default:
			end.reason = "the client's side failed: " + r.err.Error()
		}
	case err := <-pingFailed:
		end.reason = "the client stopped answering pings: " + err.Error()
		abrupt = true
	case <-ctx.Done():
		end.reason = "the request ended"
	}
	// The VM's console goes first: the close handshake with the client
	// may take seconds, and the next client may be waiting for the console.
	console.Close()
	if abrupt {
		ws.CloseNow()
	} else {
		ws.Close(websocket.StatusNormalClosure, closeReason)
	}
	cancel()
	for ; pending > 0; pending-- {
		end.add(<-done)
	}
	return end
}

// consolePageData is what console.html and vnc.html show.
type consolePageData struct {
	VM unit.VM
}

// consolePage serves the browser page of one console kind. Like the
// dashboard it sends a visitor who is not logged in to the login page.
func (s *Server) consolePage(kind string) gin.HandlerFunc {
	page := "console.html"
	if kind == consoleVNC {
		page = "vnc.html"
	}
	return func(c *gin.Context) {
		if s.cfg.VMs == nil {
			c.String(http.StatusNotFound, "404 page not found\n")
			return
		}
		ok, err := s.loggedIn(c)
		if err != nil {
			s.log.Error("webui: checking credentials", "err", err)
			c.String(http.StatusInternalServerError, "cannot check credentials\n")
			return
		}
		if !ok {
			c.Redirect(http.StatusSeeOther, "/login")
			return
		}
		c.Header("Cache-Control", "no-store")
		id, err := strconv.Atoi(c.Param("id"))
		if err != nil || id < 1 {
			c.String(http.StatusNotFound, "404 page not found\n")
			return
		}
		v, err := s.cfg.VMs.VM(c.Request.Context(), id)
		switch {
		case errors.Is(err, ErrNotFound):
			c.String(http.StatusNotFound, vmNotFound(id)+"\n")
			return
		case err != nil:
			s.log.Error("webui: reading VM", "vm", id, "err", err)
			c.String(http.StatusInternalServerError, "cannot read VM "+strconv.Itoa(id)+"\n")
			return
		}
		if kind == consoleSerial {
			allowInlineStyle(c)
		}
		s.render(c, http.StatusOK, page, consolePageData{VM: v})
	}
}

// allowInlineStyle lets the page's scripts add <style> elements: xterm.js
// keeps its colours, cursor and cell sizes in style elements it writes at
// run time, and offers no nonce. Scripts stay restricted to this server, and
// the page's own markup comes from html/template, which escapes what it
// shows, so inline style gives an injection nothing to work with.
func allowInlineStyle(c *gin.Context) {
	h := c.Writer.Header()
	csp := h.Get("Content-Security-Policy")
	h.Set("Content-Security-Policy", strings.Replace(csp, "style-src 'self'", "style-src 'self' 'unsafe-inline'", 1))
}
