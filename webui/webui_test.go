package webui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// fakeSource serves a fixed unit; err, when set, fails every call.
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
				return unit.Network{}, fmt.Errorf("%w: %s", ErrConflict, n.Problem)
			}
			return n, nil
		}
	}
	return unit.Network{}, ErrNotFound
}

func (f *fakeSource) RenameNetwork(_ context.Context, id int, name string) (unit.Network, error) {
	if f.err != nil {
		return unit.Network{}, f.err
	}
	if name == "" {
		return unit.Network{}, fmt.Errorf("%w: empty name", ErrInvalid)
	}
	for i, n := range f.nets {
		if n.ID == id {
			f.nets[i].Name = name
			return f.nets[i], nil
		}
	}
	return unit.Network{}, ErrNotFound
}

func (f *fakeSource) Unit(context.Context) (unit.Unit, error) {
	if f.err != nil {
		return unit.Unit{}, f.err
	}
	return f.unit, nil
}

func (f *fakeSource) PM(_ context.Context, id int) (unit.PM, error) {
	if f.err != nil {
		return unit.PM{}, f.err
	}
	for _, pm := range f.unit.PMs {
		if pm.ID == id {
			pm.Hardware = map[string]any{"cpu": "QEMU Virtual CPU", "memory_mib": float64(2048)}
			return pm, nil
		}
	}
	return unit.PM{}, fmt.Errorf("PM %d: %w", id, ErrNotFound)
}

// fakeUsers accepts the users of its map; err, when set, fails every call.
type fakeUsers struct {
	users map[string]string
	err   error
}

func (f fakeUsers) Authenticate(_ context.Context, user, password string) error {
	if f.err != nil {
		return f.err
	}
	if p, ok := f.users[user]; !ok || p != password {
		return fmt.Errorf("user %q: %w", user, ErrBadCredentials)
	}
	return nil
}

func testUnit() unit.Unit {
	t0 := time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)
	return unit.Unit{
		Name:         "lab",
		ManagementIP: "10.99.0.10",
		Primary:      1,
		Epoch:        7,
		ImageVersion: "0.1.0-test",
		Time:         t0,
		PMs: []unit.PM{
			{
				ID: 1, Name: "pm1", State: unit.PMRunning, Role: unit.RolePrimary,
				Paths: []unit.Path{
					{Name: unit.PathPriv0, Up: true, LastSeen: t0},
					{Name: unit.PathIbiz0, Up: true, LastSeen: t0},
				},
				UptimeSeconds: 93784, ImageVersion: "0.1.0-test", Addresses: []string{"10.99.0.1/24"},
			},
			{
				ID: 2, Name: "pm2", State: unit.PMBooting, Activity: "joining", Role: unit.RoleSecondary,
				Paths:         []unit.Path{{Name: unit.PathPriv0, Up: true, LastSeen: t0}, {Name: unit.PathIbiz0}},
				UptimeSeconds: 42, ImageVersion: "0.1.0-test",
			},
		},
		Alerts: []unit.Alert{
			{ID: "path-ibiz0-pm2", Severity: unit.SevWarning, Source: "pm2", Message: "heartbeat path ibiz0 down", Since: t0},
			{ID: "pm2-booting", Severity: unit.SevCritical, Source: "unit", Message: "unit not redundant", Since: t0},
		},
	}
}

func newTestServer(t testing.TB, src Source) *Server {
	t.Helper()
	s, err := New(Config{
		Source:     src,
		Users:      fakeUsers{users: map[string]string{"admin": "admin"}},
		SessionKey: testKey,
		Node:       1,
		Role:       func() unit.Role { return unit.RolePrimary },
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

type reqOpt func(*http.Request)

func withBasic(u, p string) reqOpt { return func(r *http.Request) { r.SetBasicAuth(u, p) } }

func withCookie(v string) reqOpt {
	return func(r *http.Request) { r.AddCookie(&http.Cookie{Name: sessionCookie, Value: v}) }
}

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func do(t testing.TB, h http.Handler, method, target, body string, opts ...reqOpt) *httptest.ResponseRecorder {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	for _, o := range opts {
		o(r)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func errorMessage(t testing.TB, w *httptest.ResponseRecorder) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", w.Body.String(), err)
	}
	if e.Error == "" {
		t.Fatalf("error body %q has no error message", w.Body.String())
	}
	return e.Error
}

func TestNewRejectsBadConfig(t *testing.T) {
	good := func() Config {
		return Config{
			Source: &fakeSource{}, Users: fakeUsers{}, SessionKey: testKey, Node: 1,
			Role: func() unit.Role { return unit.RoleNone },
		}
	}
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"no source", func(c *Config) { c.Source = nil }},
		{"no users", func(c *Config) { c.Users = nil }},
		{"short key", func(c *Config) { c.SessionKey = []byte("short") }},
		{"no role", func(c *Config) { c.Role = nil }},
		{"no node", func(c *Config) { c.Node = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.mutate(&cfg)
			if _, err := New(cfg); err == nil {
				t.Fatal("New accepted a bad config")
			}
		})
	}
	if _, err := New(good()); err != nil {
		t.Fatalf("New(good config): %v", err)
	}
}

func TestHealthIsUnauthenticated(t *testing.T) {
	h := newTestServer(t, &fakeSource{unit: testUnit()}).Handler()
	w := do(t, h, "GET", "/api/v1/health", "")
	if w.Code != http.StatusOK {
		t.Fatalf("status %d, body %s", w.Code, w.Body)
	}
	var got healthReply
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if want := (healthReply{Status: "ok", PM: 1, Role: unit.RolePrimary}); got != want {
		t.Fatalf("health = %+v, want %+v", got, want)
	}
}

func TestAuth(t *testing.T) {
	now := time.Now()
	good := signSession(testKey, "admin", now.Add(time.Hour))
	tampered := signSession(testKey, "root", now.Add(time.Hour))
	tampered = b64.EncodeToString([]byte("admin")) + tampered[strings.IndexByte(tampered, '.'):]
	tests := []struct {
		name      string
		opts      []reqOpt
		want      int
		challenge bool
	}{
		{name: "no credentials", want: 401, challenge: true},
		{name: "no credentials from console script", opts: []reqOpt{withHeader(consoleHeader, "1")}, want: 401},
		{name: "basic ok", opts: []reqOpt{withBasic("admin", "admin")}, want: 200},
		{name: "basic wrong password", opts: []reqOpt{withBasic("admin", "nope")}, want: 401, challenge: true},
		{name: "basic unknown user", opts: []reqOpt{withBasic("eve", "admin")}, want: 401, challenge: true},
		{name: "cookie ok", opts: []reqOpt{withCookie(good)}, want: 200},
		{name: "cookie tampered user", opts: []reqOpt{withCookie(tampered)}, want: 401, challenge: true},
		{name: "cookie tampered signature", opts: []reqOpt{withCookie(good[:len(good)-2] + "AA")}, want: 401, challenge: true},
		{name: "cookie expired", opts: []reqOpt{withCookie(signSession(testKey, "admin", now.Add(-time.Second)))}, want: 401, challenge: true},
		{name: "cookie other key", opts: []reqOpt{withCookie(signSession([]byte("another-unit-key-0123456789"), "admin", now.Add(time.Hour)))}, want: 401, challenge: true},
		{name: "cookie garbage", opts: []reqOpt{withCookie("garbage")}, want: 401, challenge: true},
		{name: "bad cookie but basic ok", opts: []reqOpt{withCookie("garbage"), withBasic("admin", "admin")}, want: 200},
	}
	h := newTestServer(t, &fakeSource{unit: testUnit()}).Handler()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(t, h, "GET", "/api/v1/unit", "", tt.opts...)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.want, w.Body)
			}
			if w.Code == 401 {
				errorMessage(t, w)
			}
			if got := w.Header().Get("WWW-Authenticate") != ""; got != tt.challenge {
				t.Errorf("Basic challenge sent = %v, want %v", got, tt.challenge)
			}
		})
	}
}

func TestAuthUserDatabaseFailure(t *testing.T) {
	s, err := New(Config{
		Source: &fakeSource{unit: testUnit()}, Users: fakeUsers{err: errors.New("database closed")},
		SessionKey: testKey, Node: 1, Role: func() unit.Role { return unit.RolePrimary },
	})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	if w := do(t, h, "GET", "/api/v1/unit", "", withBasic("admin", "admin")); w.Code != 500 {
		t.Errorf("basic auth with failing user database: status %d, want 500", w.Code)
	}
	if w := do(t, h, "POST", "/api/v1/login", `{"user":"admin","password":"admin"}`); w.Code != 500 {
		t.Errorf("login with failing user database: status %d, want 500", w.Code)
	}
	// A valid session does not need the user database.
	ck := signSession(testKey, "admin", time.Now().Add(time.Hour))
	if w := do(t, h, "GET", "/api/v1/unit", "", withCookie(ck)); w.Code != 200 {
		t.Errorf("cookie with failing user database: status %d, want 200", w.Code)
	}
}

func TestLogin(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		want        int
		wantMsg     string
	}{
		{name: "ok", body: `{"user":"admin","password":"admin"}`, want: 200},
		{name: "wrong password", body: `{"user":"admin","password":"x"}`, want: 401, wantMsg: "invalid user or password"},
		{name: "unknown user", body: `{"user":"eve","password":"admin"}`, want: 401, wantMsg: "invalid user or password"},
		{name: "not JSON", body: `user=admin`, want: 400, wantMsg: "invalid JSON body"},
		{name: "empty body", body: ``, want: 400, wantMsg: "invalid JSON body"},
		{name: "missing user", body: `{"password":"admin"}`, want: 400, wantMsg: `missing field "user"`},
		{name: "missing password", body: `{"user":"admin"}`, want: 400, wantMsg: `missing field "password"`},
		{name: "wrong type", body: `{"user":1,"password":"admin"}`, want: 400, wantMsg: "invalid JSON body"},
		{name: "unknown field", body: `{"user":"admin","password":"admin","admin":true}`, want: 400, wantMsg: "unknown field"},
		{name: "trailing data", body: `{"user":"admin","password":"admin"}{}`, want: 400, wantMsg: "trailing data"},
		{name: "long password", body: `{"user":"admin","password":"` + strings.Repeat("a", 300) + `"}`, want: 400, wantMsg: "longer than"},
		{name: "oversized body", body: `{"user":"admin","password":"` + strings.Repeat("a", 5000) + `"}`, want: 413, wantMsg: "larger than"},
	}
	h := newTestServer(t, &fakeSource{unit: testUnit()}).Handler()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := tt.contentType
			if ct == "" {
				ct = "application/json"
			}
			w := do(t, h, "POST", "/api/v1/login", tt.body, withHeader("Content-Type", ct))
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.want, w.Body)
			}
			if tt.want != 200 {
				if msg := errorMessage(t, w); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("error %q does not contain %q", msg, tt.wantMsg)
				}
				if len(w.Result().Cookies()) != 0 {
					t.Errorf("failed login set a cookie")
				}
				return
			}
			cookies := w.Result().Cookies()
			if len(cookies) != 1 || cookies[0].Name != sessionCookie {
				t.Fatalf("cookies = %v, want one %s", cookies, sessionCookie)
			}
			c := cookies[0]
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
				t.Errorf("cookie attributes: HttpOnly=%v SameSite=%v Path=%q", c.HttpOnly, c.SameSite, c.Path)
			}
			if ttl := time.Until(c.Expires); ttl < 11*time.Hour || ttl > 12*time.Hour+time.Minute {
				t.Errorf("cookie expires in %v, want 12h", ttl)
			}
			if c.MaxAge != 12*3600 {
				t.Errorf("cookie Max-Age = %d, want %d", c.MaxAge, 12*3600)
			}
			// The cookie opens the API.
			if w := do(t, h, "GET", "/api/v1/pms", "", withCookie(c.Value)); w.Code != 200 {
				t.Errorf("GET /api/v1/pms with login cookie: status %d", w.Code)
			}
		})
	}
}

func TestLoginForm(t *testing.T) {
	h := newTestServer(t, &fakeSource{unit: testUnit()}).Handler()
	form := withHeader("Content-Type", "application/x-www-form-urlencoded")
	w := do(t, h, "POST", "/api/v1/login", url.Values{"user": {"admin"}, "password": {"admin"}}.Encode(), form)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		t.Fatalf("form login: status %d Location %q, want 303 to /", w.Code, w.Header().Get("Location"))
	}
	if len(w.Result().Cookies()) != 1 {
		t.Fatal("form login set no cookie")
	}
	w = do(t, h, "POST", "/api/v1/login", url.Values{"user": {"admin"}, "password": {"bad"}}.Encode(), form)
	loc, _ := url.Parse(w.Header().Get("Location"))
	if w.Code != http.StatusSeeOther || loc.Path != "/login" || loc.Query().Get("error") != "invalid user or password" {
		t.Fatalf("bad form login: status %d Location %q, want 303 to /login with the error", w.Code, w.Header().Get("Location"))
	}
	// The login page shows the error, escaped.
	w = do(t, h, "GET", "/login?error="+url.QueryEscape("<b>bad</b>"), "")
	if !strings.Contains(w.Body.String(), "&lt;b&gt;bad&lt;/b&gt;") {
		t.Errorf("login page does not show the escaped error:\n%s", w.Body)
	}
}

func TestLogout(t *testing.T) {
	h := newTestServer(t, &fakeSource{unit: testUnit()}).Handler()
	w := do(t, h, "POST", "/api/v1/logout", "")
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	c := w.Result().Cookies()
	if len(c) != 1 || c[0].Name != sessionCookie || c[0].MaxAge >= 0 {
		t.Fatalf("logout cookies = %v, want %s deleted", c, sessionCookie)
	}
	w = do(t, h, "POST", "/api/v1/logout", "", withHeader("Content-Type", "application/x-www-form-urlencoded"))
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login" {
		t.Fatalf("form logout: status %d Location %q", w.Code, w.Header().Get("Location"))
	}
}

func TestStateEndpoints(t *testing.T) {
	u := testUnit()
	pm2 := u.PMs[1]
	pm2.Hardware = map[string]any{"cpu": "QEMU Virtual CPU", "memory_mib": float64(2048)}
	tests := []struct {
		name    string
		srcErr  error
		path    string
		want    int
		wantMsg string
		decode  func([]byte) (any, error)
		wantVal any
	}{
		{name: "unit", path: "/api/v1/unit", want: 200, decode: decodeAs[unit.Unit], wantVal: u},
		{name: "pms", path: "/api/v1/pms", want: 200, decode: decodeAs[[]unit.PM], wantVal: u.PMs},
		{name: "alerts", path: "/api/v1/alerts", want: 200, decode: decodeAs[[]unit.Alert], wantVal: u.Alerts},
		{name: "pm good id", path: "/api/v1/pms/2", want: 200, decode: decodeAs[unit.PM], wantVal: pm2},
		{name: "pm bad id", path: "/api/v1/pms/two", want: 400, wantMsg: `invalid PM id "two"`},
		{name: "pm zero id", path: "/api/v1/pms/0", want: 400, wantMsg: "invalid PM id"},
		{name: "pm negative id", path: "/api/v1/pms/-1", want: 400, wantMsg: "invalid PM id"},
		{name: "pm huge id", path: "/api/v1/pms/99999999999999999999", want: 400, wantMsg: "invalid PM id"},
		{name: "pm unknown", path: "/api/v1/pms/3", want: 404, wantMsg: "PM 3 not found"},
		{name: "unit source error", srcErr: errors.New("store closed"), path: "/api/v1/unit", want: 500, wantMsg: "store closed"},
		{name: "pms source error", srcErr: errors.New("store closed"), path: "/api/v1/pms", want: 500, wantMsg: "store closed"},
		{name: "alerts source error", srcErr: errors.New("store closed"), path: "/api/v1/alerts", want: 500, wantMsg: "store closed"},
		{name: "pm source error", srcErr: errors.New("store closed"), path: "/api/v1/pms/1", want: 500, wantMsg: "store closed"},
		{name: "unknown API path", path: "/api/v1/vms", want: 404, wantMsg: "no such API endpoint"},
		{name: "unknown API version", path: "/api/v2/unit", want: 404, wantMsg: "no such API endpoint"},
		{name: "trailing slash", path: "/api/v1/unit/", want: 404, wantMsg: "no such API endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestServer(t, &fakeSource{unit: testUnit(), err: tt.srcErr}).Handler()
			w := do(t, h, "GET", tt.path, "", withBasic("admin", "admin"))
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.want, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			if tt.want != 200 {
				if msg := errorMessage(t, w); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("error %q does not contain %q", msg, tt.wantMsg)
				}
				return
			}
			got, err := tt.decode(w.Body.Bytes())
			if err != nil {
				t.Fatalf("decoding %s: %v", w.Body, err)
			}
			if !reflect.DeepEqual(got, tt.wantVal) {
				t.Errorf("got  %+v\nwant %+v", got, tt.wantVal)
			}
		})
	}
}

func decodeAs[T any](b []byte) (any, error) {
	var v T
	err := json.Unmarshal(b, &v)
	return v, err
}

func TestEmptyListsAreArrays(t *testing.T) {
	h := newTestServer(t, &fakeSource{unit: unit.Unit{Name: "empty"}}).Handler()
	for _, p := range []string{"/api/v1/pms", "/api/v1/alerts"} {
		w := do(t, h, "GET", p, "", withBasic("admin", "admin"))
		if got := strings.TrimSpace(w.Body.String()); got != "[]" {
			t.Errorf("GET %s = %s, want []", p, got)
		}
	}
	w := do(t, h, "GET", "/api/v1/unit", "", withBasic("admin", "admin"))
	if !strings.Contains(w.Body.String(), `"pms":[]`) || !strings.Contains(w.Body.String(), `"alerts":[]`) {
		t.Errorf("GET /api/v1/unit = %s, want empty arrays", w.Body)
	}
}

func TestWrongMethodOnAPI(t *testing.T) {
	h := newTestServer(t, &fakeSource{unit: testUnit()}).Handler()
	w := do(t, h, "DELETE", "/api/v1/unit", "", withBasic("admin", "admin"))
	if w.Code != http.StatusMethodNotAllowed {
		t.Fatalf("status %d, want 405", w.Code)
	}
	errorMessage(t, w)
}

func TestDashboard(t *testing.T) {
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	t.Run("not logged in", func(t *testing.T) {
		h := newTestServer(t, &fakeSource{unit: testUnit()}).Handler()
		w := do(t, h, "GET", "/", "")
		if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login" {
			t.Fatalf("status %d Location %q, want 303 to /login", w.Code, w.Header().Get("Location"))
		}
	})
	t.Run("renders state", func(t *testing.T) {
		h := newTestServer(t, &fakeSource{unit: testUnit()}).Handler()
		w := do(t, h, "GET", "/", "", ck)
		if w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
		body := w.Body.String()
		for _, want := range []string{
			"pm1", "pm2", ">running<", ">booting<", "joining", "10.99.0.10", ">7<", "pm1 (PM 1)",
			"priv0 up", "ibiz0 down", "1d 2h", "42s", "0.1.0-test",
			"heartbeat path ibiz0 down", "sev-critical", "sev-warning",
			`src="/static/dashboard.js"`, `action="/api/v1/logout"`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("dashboard lacks %q", want)
			}
		}
		if t.Failed() {
			t.Logf("dashboard:\n%s", body)
		}
	})
	t.Run("escapes names", func(t *testing.T) {
		u := testUnit()
		u.PMs[0].Name = "<script>alert(1)</script>"
		h := newTestServer(t, &fakeSource{unit: u}).Handler()
		body := do(t, h, "GET", "/", "", ck).Body.String()
		if strings.Contains(body, "<script>alert(1)") || !strings.Contains(body, "&lt;script&gt;") {
			t.Errorf("PM name not escaped")
		}
	})
	t.Run("source error", func(t *testing.T) {
		h := newTestServer(t, &fakeSource{err: errors.New("store closed")}).Handler()
		w := do(t, h, "GET", "/", "", ck)
		if w.Code != 500 || !strings.Contains(w.Body.String(), "store closed") {
			t.Fatalf("status %d body %s, want 500 with the cause", w.Code, w.Body)
		}
	})
}

func TestLoginPage(t *testing.T) {
	h := newTestServer(t, &fakeSource{unit: testUnit()}).Handler()
	w := do(t, h, "GET", "/login", "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), `action="/api/v1/login"`) {
		t.Fatalf("status %d body %s", w.Code, w.Body)
	}
	w = do(t, h, "GET", "/login", "", withBasic("admin", "admin"))
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		t.Fatalf("logged in: status %d Location %q, want 303 to /", w.Code, w.Header().Get("Location"))
	}
}

func TestStaticAssets(t *testing.T) {
	h := newTestServer(t, &fakeSource{unit: testUnit()}).Handler()
	tests := []struct{ path, ctype, contains string }{
		{"/static/style.css", "text/css", ".pms"},
		{"/static/dashboard.js", "javascript", "/api/v1/unit"},
	}
	for _, tt := range tests {
		w := do(t, h, "GET", tt.path, "")
		if w.Code != 200 || !strings.Contains(w.Header().Get("Content-Type"), tt.ctype) || !strings.Contains(w.Body.String(), tt.contains) {
			t.Errorf("GET %s: status %d type %q", tt.path, w.Code, w.Header().Get("Content-Type"))
		}
	}
	for _, p := range []string{"/static/nope.js", "/static/", "/static/../templates/login.html"} {
		if w := do(t, h, "GET", p, ""); w.Code != 404 {
			t.Errorf("GET %s: status %d, want 404", p, w.Code)
		}
	}
}

func TestClassToken(t *testing.T) {
	tests := map[string]string{
		"running":                  "running",
		"running (in Maintenance)": "running-in-maintenance",
		"powered off":              "powered-off",
		"":                         "",
		`"><x`:                     "x",
	}
	for in, want := range tests {
		if got := classToken(in); got != want {
			t.Errorf("classToken(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCrossOriginPosts checks that another site's page cannot make the
// browser log the operator in or out: the SameSite cookie does not cover
// these posts, which need no cookie.
func TestCrossOriginPosts(t *testing.T) {
	form := withHeader("Content-Type", "application/x-www-form-urlencoded")
	creds := url.Values{"user": {"admin"}, "password": {"admin"}}.Encode()
	tests := []struct {
		name   string
		path   string
		body   string
		opts   []reqOpt
		want   int
		cookie bool // whether the answer may set the session cookie
	}{
		{name: "login from another site", path: "/api/v1/login", body: creds, opts: []reqOpt{form, withHeader("Sec-Fetch-Site", "cross-site")}, want: 403},
		{name: "login from another origin, old browser", path: "/api/v1/login", body: creds, opts: []reqOpt{form, withHeader("Origin", "http://evil.example")}, want: 403},
		{name: "JSON login as text/plain from another site", path: "/api/v1/login", body: `{"user":"admin","password":"admin"}`, opts: []reqOpt{withHeader("Content-Type", "text/plain"), withHeader("Sec-Fetch-Site", "cross-site")}, want: 403},
		{name: "logout from another site", path: "/api/v1/logout", opts: []reqOpt{form, withHeader("Sec-Fetch-Site", "same-site")}, want: 403},
		{name: "login from the console", path: "/api/v1/login", body: creds, opts: []reqOpt{form, withHeader("Sec-Fetch-Site", "same-origin"), withHeader("Origin", "http://example.com")}, want: 303, cookie: true},
		{name: "logout from the console", path: "/api/v1/logout", opts: []reqOpt{form, withHeader("Sec-Fetch-Site", "same-origin")}, want: 303, cookie: true},
		{name: "login from a non-browser client", path: "/api/v1/login", body: creds, opts: []reqOpt{form}, want: 303, cookie: true},
	}
	h := newTestServer(t, &fakeSource{unit: testUnit()}).Handler()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(t, h, "POST", tt.path, tt.body, tt.opts...)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.want, w.Body)
			}
			if w.Code == 403 {
				errorMessage(t, w)
			}
			if got := len(w.Result().Cookies()) > 0; got != tt.cookie {
				t.Errorf("session cookie touched = %v, want %v", got, tt.cookie)
			}
		})
	}
	// Reading stays possible from anywhere the session cookie is sent.
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	if w := do(t, h, "GET", "/api/v1/unit", "", ck, withHeader("Sec-Fetch-Site", "cross-site")); w.Code != 200 {
		t.Errorf("GET with Sec-Fetch-Site cross-site: status %d, want 200", w.Code)
	}
}

func TestNetworksAPI(t *testing.T) {
	src := &fakeSource{unit: testUnit(), nets: []unit.Network{
		{ID: 1, Name: "network1", Ports: []unit.NetworkPort{{PM: 1, Port: "biz1", Up: true}, {PM: 2, Port: "biz1", Up: true}}},
		{ID: 2, Name: "network2", Ports: []unit.NetworkPort{{PM: 1, Port: "biz2"}}, Problem: "pm1 biz2: no peer port in the same L2 domain"},
	}}
	h := newTestServer(t, src).Handler()
	auth := withBasic("admin", "admin")
	tests := []struct {
		method, target, body string
		want                 int
		wantBody             string
	}{
		{"GET", "/api/v1/networks", "", 200, `"problem":"pm1 biz2: no peer port in the same L2 domain"`},
		{"PATCH", "/api/v1/networks/1", `{"name":"office"}`, 200, `"name":"office"`},
		{"PATCH", "/api/v1/networks/9", `{"name":"x"}`, 404, "network 9 not found"},
		{"PATCH", "/api/v1/networks/zero", `{"name":"x"}`, 400, "invalid network id"},
		{"PATCH", "/api/v1/networks/1", `{"name":""}`, 400, "empty name"},
		{"PATCH", "/api/v1/networks/1", `{}`, 400, `missing \"name\"`},
		{"PATCH", "/api/v1/networks/1", `{"name":"a","id":3}`, 400, "unknown field"},
		{"PATCH", "/api/v1/networks/1", `{"name":"a"} {}`, 400, "trailing data"},
		{"PATCH", "/api/v1/networks/1", `{"name":"` + strings.Repeat("a", 5000) + `"}`, 400, "invalid body"},
		{"POST", "/api/v1/networks/2/actions/fix", "", 409, "no peer port"},
		{"POST", "/api/v1/networks/1/actions/fix", "", 200, `"id":1`},
		{"POST", "/api/v1/networks/9/actions/fix", "", 404, "not found"},
	}
	for _, tt := range tests {
		w := do(t, h, tt.method, tt.target, tt.body, auth)
		if w.Code != tt.want || !strings.Contains(w.Body.String(), tt.wantBody) {
			t.Errorf("%s %s %.40s: %d %s, want %d with %q", tt.method, tt.target, tt.body, w.Code, w.Body.String(), tt.want, tt.wantBody)
		}
	}
	if src.nets[0].Name != "office" {
		t.Errorf("rename did not reach the source: %+v", src.nets[0])
	}
	if w := do(t, h, "GET", "/api/v1/networks", ""); w.Code != 401 {
		t.Errorf("networks without login: %d", w.Code)
	}
}
