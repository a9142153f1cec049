package scenario

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
)

const chromium = "/usr/bin/chromium"

// dashboardInBrowser loads the unit's dashboard in headless Chromium and
// returns the DOM after the page's script has run. Chromium cannot log in
// by itself from the command line, so it talks to a loopback proxy that
// logs in through the real API once and adds the session cookie to every
// request it forwards into the lab namespace.
func dashboardInBrowser(t *testing.T, ctx context.Context, u *harness.Unit) (dom string, screenshot string) {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("no browser: %s is missing (make deps installs Debian's chromium)", chromium)
	}
	hc := u.HTTPClient()
	resp, err := hc.Post(mgmtURL+"/api/v1/login", "application/json",
		strings.NewReader(`{"user":"admin","password":"admin"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %s", resp.Status)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "dyad_session" {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatal("login set no dyad_session cookie")
	}

	target, _ := url.Parse(mgmtURL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = hc.Transport
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.AddCookie(cookie)
		proxy.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	dir := t.TempDir()
	screenshot = filepath.Join(dir, "dashboard.png")
	if p := os.Getenv("DYAD_SCREENSHOT"); p != "" {
		screenshot = p
	}
	run := func(args ...string) []byte {
		ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir=" + filepath.Join(dir, "profile"), "--window-size=1280,800",
			// Lets the dashboard's script fetch /api/v1/unit before the dump.
			"--virtual-time-budget=5000"}
		out, err := exec.CommandContext(ctx, chromium, append(append(base, args...), "http://"+ln.Addr().String()+"/")...).Output()
		if err != nil {
			t.Fatalf("chromium %v: %v", args, err)
		}
		return out
	}
	dom = string(run("--dump-dom"))
	run("--screenshot=" + screenshot)
	return dom, screenshot
}
