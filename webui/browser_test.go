package webui

import (
	"bytes"
	"context"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

const chromiumPath = "/usr/bin/chromium"

// countingSource returns the test unit with the epoch set to the number of
// calls, so the page shows whether the script has refreshed it.
type countingSource struct {
	mu    sync.Mutex
	calls uint64
}

func (c *countingSource) Unit(context.Context) (unit.Unit, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	u := testUnit()
	u.Epoch = c.calls
	return u, nil
}

func (c *countingSource) PM(ctx context.Context, id int) (unit.PM, error) {
	return (&fakeSource{unit: testUnit()}).PM(ctx, id)
}

func (c *countingSource) Networks(ctx context.Context) ([]unit.Network, error) {
	return nil, nil
}

func (c *countingSource) FixNetwork(ctx context.Context, id int) (unit.Network, error) {
	return unit.Network{}, ErrNotFound
}

func (c *countingSource) RenameNetwork(ctx context.Context, id int, name string) (unit.Network, error) {
	return unit.Network{}, ErrNotFound
}

// countingStorage advances the resync of volume 2 by one percent a call, so
// the page shows whether the script has refreshed the storage section.
type countingStorage struct {
	*fakeStorage
	calls int
}

func (c *countingStorage) Volumes(context.Context) ([]unit.Volume, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	vols := append([]unit.Volume(nil), c.vols...)
	sync := *vols[1].Sync
	sync.Percent = float64(42 + c.calls)
	vols[1].Sync = &sync
	return vols, nil
}

// chromium runs headless Chromium with args and returns its stdout.
func chromium(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(),
	}
	cmd := exec.CommandContext(ctx, chromiumPath, append(base, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\nstderr:\n%s", args, err, stderr.String())
	}
	return stdout.Bytes()
}

// TestDashboardInBrowser renders the console in a real Chromium: the login
// page, the dashboard after its script has refreshed it, and a screenshot
// (saved at $DYAD_SCREENSHOT when set).
func TestDashboardInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no Chromium at %s (Debian package chromium): %v", chromiumPath, err)
	}
	src := &countingSource{}
	s, err := New(Config{
		Source:     src,
		Storage:    &countingStorage{fakeStorage: testStorage()},
		Users:      fakeUsers{users: map[string]string{"admin": "admin"}},
		SessionKey: testKey,
		Node:       1,
		Role:       func() unit.Role { return unit.RolePrimary },
	})
	if err != nil {
		t.Fatal(err)
	}
	cookie := signSession(testKey, "admin", time.Now().Add(time.Hour))
	// Chromium cannot be given a cookie on its command line, so the test
	// stands in for a browser that has logged in.
	loggedIn := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := r.Cookie(sessionCookie); err != nil {
			r.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
		}
		s.Handler().ServeHTTP(w, r)
	})
	plain := httptest.NewServer(s.Handler())
	defer plain.Close()
	withSession := httptest.NewServer(loggedIn)
	defer withSession.Close()

	t.Run("login page", func(t *testing.T) {
		dom := string(chromium(t, "--dump-dom", plain.URL+"/login"))
		for _, want := range []string{`id="login-form"`, `action="/api/v1/login"`, `name="password"`} {
			if !strings.Contains(dom, want) {
				t.Errorf("login DOM lacks %q:\n%s", want, dom)
			}
		}
	})

	t.Run("dashboard refreshes", func(t *testing.T) {
		// Virtual time lets the 2 s refresh timer fire without waiting for it.
		dom := string(chromium(t, "--virtual-time-budget=7000", "--dump-dom", withSession.URL+"/"))
		for _, want := range []string{"pm1", "pm2", "running", "booting", "priv0 up", "ibiz0 down", "heartbeat path ibiz0 down"} {
			if !strings.Contains(dom, want) {
				t.Errorf("dashboard DOM lacks %q", want)
			}
		}
		if !regexp.MustCompile(`data-refreshed="[1-9]`).MatchString(dom) {
			t.Errorf("the script did not refresh the dashboard")
		}
		m := regexp.MustCompile(`data-field="epoch">(\d+)<`).FindStringSubmatch(dom)
		if m == nil || m[1] == "1" {
			t.Errorf("epoch shown is %v, want a value fetched after the first render", m)
		}
		for _, want := range []string{"web-boot", "db-data", "sg1", "PM 1 vdb, PM 2 vdb", "(ETA 12s)", "PM 1 Inconsistent"} {
			if !strings.Contains(dom, want) {
				t.Errorf("storage section lacks %q", want)
			}
		}
		m = regexp.MustCompile(`Syncing (\d+)% \(ETA 12s\)`).FindStringSubmatch(dom)
		if m == nil || m[1] == "43" {
			t.Errorf("resync shown is %v, want a value fetched after the first render", m)
		}
		if strings.Contains(dom, "Cannot refresh") {
			t.Errorf("the page shows a refresh error")
		}
		if t.Failed() {
			t.Logf("DOM:\n%s", dom)
		}
	})

	t.Run("screenshot", func(t *testing.T) {
		out := os.Getenv("DYAD_SCREENSHOT")
		if out == "" {
			out = filepath.Join(t.TempDir(), "dashboard.png")
		}
		chromium(t, "--screenshot="+out, "--window-size=1280,800", "--virtual-time-budget=3000", withSession.URL+"/")
		f, err := os.Open(out)
		if err != nil {
			t.Fatalf("no screenshot: %v", err)
		}
		defer f.Close()
		img, err := png.Decode(f)
		if err != nil {
			t.Fatalf("screenshot %s is not a PNG: %v", out, err)
		}
		b := img.Bounds()
		if b.Dx() != 1280 || b.Dy() != 800 {
			t.Errorf("screenshot is %dx%d, want 1280x800", b.Dx(), b.Dy())
		}
		// A rendered page has many colours; a blank or failed one has few.
		colours := map[[4]uint32]bool{}
		for y := b.Min.Y; y < b.Max.Y; y += 4 {
			for x := b.Min.X; x < b.Max.X; x += 4 {
				r, g, bl, a := img.At(x, y).RGBA()
				colours[[4]uint32{r, g, bl, a}] = true
			}
		}
		if len(colours) < 10 {
			t.Errorf("screenshot has only %d colours: page not rendered", len(colours))
		}
		t.Logf("screenshot: %s (%d colours sampled)", out, len(colours))
	})
}
