package apiclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/webui"
)

type fakeSource struct {
	unit unit.Unit
	nets []unit.Network
	err  error
}

func (f *fakeSource) Networks(context.Context) ([]unit.Network, error) {
	if f.err != nil {
		return nil, f.err
	}
	return f.nets, nil
}

func (f *fakeSource) FixNetwork(_ context.Context, id int) (unit.Network, error) {
	for _, n := range f.nets {
		if n.ID == id {
			if n.Problem != "" {
				return unit.Network{}, fmt.Errorf("%w: %s", webui.ErrConflict, n.Problem)
			}
			return n, nil
		}
	}
	return unit.Network{}, webui.ErrNotFound
}

func (f *fakeSource) RenameNetwork(_ context.Context, id int, name string) (unit.Network, error) {
	if f.err != nil {
		return unit.Network{}, f.err
	}
	if name == "" {
		return unit.Network{}, fmt.Errorf("%w: empty name", webui.ErrInvalid)
	}
	for i, n := range f.nets {
		if n.ID == id {
			f.nets[i].Name = name
			return f.nets[i], nil
		}
	}
	return unit.Network{}, webui.ErrNotFound
}

func (f *fakeSource) Unit(context.Context) (unit.Unit, error) { return f.unit, f.err }

func (f *fakeSource) PM(_ context.Context, id int) (unit.PM, error) {
	if f.err != nil {
		return unit.PM{}, f.err
	}
	for _, pm := range f.unit.PMs {
		if pm.ID == id {
			pm.Hardware = map[string]any{"cpus": float64(2)}
			return pm, nil
		}
	}
	return unit.PM{}, fmt.Errorf("PM %d: %w", id, webui.ErrNotFound)
}

type users struct{}

func (users) Authenticate(_ context.Context, user, password string) error {
	if user != "admin" || password != "admin" {
		return webui.ErrBadCredentials
	}
	return nil
}

func testUnit() unit.Unit {
	t0 := time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)
	return unit.Unit{
		Name: "lab", ManagementIP: "10.99.0.10", Primary: 1, Epoch: 3, ImageVersion: "v1", Time: t0,
		PMs: []unit.PM{
			{ID: 1, Name: "pm1", State: unit.PMRunning, Role: unit.RolePrimary, Paths: []unit.Path{{Name: "priv0", Up: true, LastSeen: t0}}, UptimeSeconds: 10, ImageVersion: "v1"},
			{ID: 2, Name: "pm2", State: unit.PMRunning, Role: unit.RoleSecondary, Paths: []unit.Path{{Name: "priv0", Up: true, LastSeen: t0}}, UptimeSeconds: 20, ImageVersion: "v1"},
		},
		Alerts: []unit.Alert{{ID: "a1", Severity: unit.SevWarning, Source: "pm2", Message: "ibiz0 down", Since: t0}},
	}
}

func newServer(t *testing.T, src webui.Source) *httptest.Server {
	t.Helper()
	s, err := webui.New(webui.Config{
		Source: src, Users: users{}, SessionKey: []byte("0123456789abcdef0123456789abcdef"),
		Node: 2, Role: func() unit.Role { return unit.RoleSecondary },
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

func TestClientReadsState(t *testing.T) {
	want := testUnit()
	ts := newServer(t, &fakeSource{unit: want})
	c := apiclient.New(ts.URL+"/", "admin", "admin", ts.Client())
	ctx := t.Context()

	u, err := c.Unit(ctx)
	if err != nil || !reflect.DeepEqual(u, want) {
		t.Errorf("Unit = %+v, %v; want %+v", u, err, want)
	}
	pms, err := c.PMs(ctx)
	if err != nil || !reflect.DeepEqual(pms, want.PMs) {
		t.Errorf("PMs = %+v, %v", pms, err)
	}
	pm, err := c.PM(ctx, 2)
	if err != nil || pm.Name != "pm2" || !reflect.DeepEqual(pm.Hardware, map[string]any{"cpus": float64(2)}) {
		t.Errorf("PM(2) = %+v, %v", pm, err)
	}
	alerts, err := c.Alerts(ctx)
	if err != nil || !reflect.DeepEqual(alerts, want.Alerts) {
		t.Errorf("Alerts = %+v, %v", alerts, err)
	}
	h, err := c.Health(ctx)
	if err != nil || h != (apiclient.Health{Status: "ok", PM: 2, Role: unit.RoleSecondary}) {
		t.Errorf("Health = %+v, %v", h, err)
	}
}

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name       string
		src        *fakeSource
		user, pass string
		call       func(context.Context, *apiclient.Client) error
		wantStatus int
		wantMsg    string
	}{
		{
			name: "unknown PM", src: &fakeSource{unit: testUnit()}, user: "admin", pass: "admin",
			call:       func(ctx context.Context, c *apiclient.Client) error { _, err := c.PM(ctx, 7); return err },
			wantStatus: 404, wantMsg: "PM 7 not found",
		},
		{
			name: "bad PM id", src: &fakeSource{unit: testUnit()}, user: "admin", pass: "admin",
			call:       func(ctx context.Context, c *apiclient.Client) error { _, err := c.PM(ctx, -1); return err },
			wantStatus: 400, wantMsg: "invalid PM id",
		},
		{
			name: "wrong password", src: &fakeSource{unit: testUnit()}, user: "admin", pass: "nope",
			call:       func(ctx context.Context, c *apiclient.Client) error { _, err := c.Unit(ctx); return err },
			wantStatus: 401, wantMsg: "invalid user or password",
		},
		{
			name: "login wrong password", src: &fakeSource{unit: testUnit()}, user: "admin", pass: "nope",
			call:       func(ctx context.Context, c *apiclient.Client) error { return c.Login(ctx) },
			wantStatus: 401, wantMsg: "invalid user or password",
		},
		{
			name: "source failure", src: &fakeSource{err: errors.New("store closed")}, user: "admin", pass: "admin",
			call:       func(ctx context.Context, c *apiclient.Client) error { _, err := c.PMs(ctx); return err },
			wantStatus: 500, wantMsg: "store closed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newServer(t, tt.src)
			err := tt.call(t.Context(), apiclient.New(ts.URL, tt.user, tt.pass, ts.Client()))
			var apiErr *apiclient.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T), want *APIError", err, err)
			}
			if apiErr.StatusCode != tt.wantStatus || !strings.Contains(apiErr.Message, tt.wantMsg) {
				t.Errorf("APIError = %d %q, want %d containing %q", apiErr.StatusCode, apiErr.Message, tt.wantStatus, tt.wantMsg)
			}
		})
	}
}

func TestSessionReusedAndRenewed(t *testing.T) {
	ts := newServer(t, &fakeSource{unit: testUnit()})
	target, _ := url.Parse(ts.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	logins, basic, expireNext := 0, 0, false
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if r.URL.Path == "/api/v1/login" {
			logins++
		}
		if _, _, ok := r.BasicAuth(); ok {
			basic++
		}
		expire := expireNext && r.URL.Path != "/api/v1/login"
		if expire {
			expireNext = false
		}
		mu.Unlock()
		if expire { // as the server answers an expired session
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"not logged in"}`))
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer counting.Close()

	c := apiclient.New(counting.URL, "admin", "admin", counting.Client())
	for range 5 {
		if _, err := c.PMs(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	if logins != 1 || basic != 0 {
		t.Errorf("5 calls: %d logins, %d requests with a password; want 1 and 0", logins, basic)
	}
	expireNext = true
	mu.Unlock()
	if _, err := c.Unit(t.Context()); err != nil {
		t.Fatalf("after the session expired: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if logins != 2 {
		t.Errorf("an expired session gave %d logins in all, want 2", logins)
	}
}

func TestNonAPIAnswers(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		check   func(error) bool
	}{
		{
			name: "proxy error page",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
			},
			check: func(err error) bool {
				var e *apiclient.APIError
				return errors.As(err, &e) && e.StatusCode == 502 && strings.Contains(e.Message, "bad gateway")
			},
		},
		{
			name:    "not JSON",
			handler: func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello")) },
			check:   func(err error) bool { return err != nil && strings.Contains(err.Error(), "decoding answer") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := httptest.NewServer(tt.handler)
			defer ts.Close()
			_, err := apiclient.New(ts.URL, "admin", "admin", ts.Client()).Health(t.Context())
			if !tt.check(err) {
				t.Errorf("unexpected error: %v", err)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	url := ts.URL
	ts.Close()
	_, err := apiclient.New(url, "admin", "admin", nil).Health(t.Context())
	if err == nil || !strings.Contains(err.Error(), "GET /api/v1/health") {
		t.Errorf("error %v, want one naming the request", err)
	}
}
