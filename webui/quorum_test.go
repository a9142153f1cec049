package webui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

// waitingUnit is the test unit on a PM that lost its peer and waits for the
// quorum lease the server does not grant.
func waitingUnit() unit.Unit {
	u := testUnit()
	u.Quorum = unit.Quorum{
		Servers: []string{"10.99.0.200:7413", "10.99.0.201:7413"},
		Verdict: "wait",
		Reason:  "waiting for the quorum lease",
		Holder:  2,
		Error:   "quorum server 10.99.0.200:7413: i/o timeout",
	}
	return u
}

// quorumFake is a Source and a QuorumSource over one unit, so that the
// dashboard shows what Force Quorum changed. err, when set, fails
// ForceQuorum.
type quorumFake struct {
	*fakeSource
	mu    sync.Mutex
	u     unit.Unit
	err   error
	calls int
}

func newQuorumFake(u unit.Unit) *quorumFake {
	return &quorumFake{fakeSource: &fakeSource{unit: u}, u: u}
}

func (f *quorumFake) Unit(context.Context) (unit.Unit, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.u, nil
}

func (f *quorumFake) ForceQuorum(context.Context) (unit.Unit, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return unit.Unit{}, f.err
	}
	f.u.Quorum.Verdict, f.u.Quorum.Reason, f.u.Quorum.Forced = "run", "an operator forced quorum on this PM", true
	return f.u, nil
}

func (f *quorumFake) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// newQuorumServer serves f as the unit's Source and QuorumSource (none
// when q is nil), logging into log when not nil.
func newQuorumServer(t testing.TB, f *quorumFake, q QuorumSource, log *slog.Logger) *Server {
	t.Helper()
	s, err := New(Config{
		Source:     f,
		Quorum:     q,
		Users:      fakeUsers{users: map[string]string{"admin": "admin"}},
		SessionKey: testKey,
		Node:       1,
		Role:       func() unit.Role { return unit.RolePrimary },
		Log:        log,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

const forceQuorumPath = "/api/v1/unit/actions/force-quorum"

func TestForceQuorumAPI(t *testing.T) {
	risk := "Force Quorum lets this PM run the unit's VMs alone without proof that its peer is down. " +
		"If the peer is running them, both PMs write the same volumes (split brain) and one side's writes must later be discarded. " +
		`Send {"confirm": true} to proceed.`
	tests := []struct {
		name     string
		method   string // POST when empty
		body     string
		srcErr   error
		want     int
		wantMsg  string // the error message, whole when it is the risk
		wantBody string // a part of a 200 answer
		calls    int
	}{
		{name: "confirmed", body: `{"confirm": true}`, want: 200, wantBody: `"quorum":{"servers":["10.99.0.200:7413","10.99.0.201:7413"],"verdict":"run","reason":"an operator forced quorum on this PM","holder":2,"forced":true`, calls: 1},
		{name: "confirmed compact", body: `{"confirm":true}` + "\n", want: 200, wantBody: `"forced":true`, calls: 1},
		{name: "no body", want: 400, wantMsg: risk},
		{name: "blank body", body: " \n", want: 400, wantMsg: risk},
		{name: "empty object", body: `{}`, want: 400, wantMsg: risk},
		{name: "confirm false", body: `{"confirm": false}`, want: 400, wantMsg: risk},
		{name: "confirm null", body: `{"confirm": null}`, want: 400, wantMsg: risk},
		{name: "confirm as string", body: `{"confirm": "true"}`, want: 400, wantMsg: `invalid JSON body (want {"confirm": true})`},
		{name: "confirm as number", body: `{"confirm": 1}`, want: 400, wantMsg: "invalid JSON body"},
		{name: "unknown field", body: `{"confirm": true, "node": 2}`, want: 400, wantMsg: `unknown field "node"`},
		{name: "trailing data", body: `{"confirm": true} {"confirm": true}`, want: 400, wantMsg: "trailing data"},
		{name: "array", body: `[true]`, want: 400, wantMsg: "invalid JSON body"},
		{name: "oversized", body: `{"confirm": true, "pad": "` + strings.Repeat("a", maxStorageBody) + `"}`, want: 400, wantMsg: "larger than"},
		{name: "refused", body: `{"confirm": true}`, srcErr: fmt.Errorf("%w: the peer PM is heard: nothing to force", ErrConflict),
			want: 409, wantMsg: "conflict: the peer PM is heard: nothing to force", calls: 1},
		{name: "failed", body: `{"confirm": true}`, srcErr: errors.New("cannot write quorum-forced: read-only file system"),
			want: 500, wantMsg: "cannot force quorum: cannot write quorum-forced: read-only file system", calls: 1},
		{name: "GET", method: "GET", want: 405, wantMsg: "method GET not allowed"},
	}
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newQuorumFake(waitingUnit())
			f.err = tt.srcErr
			h := newQuorumServer(t, f, f, nil).Handler()
			method := tt.method
			if method == "" {
				method = "POST"
			}
			w := do(t, h, method, forceQuorumPath, tt.body, ck, withHeader("Content-Type", "application/json"))
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.want, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			if got := f.callCount(); got != tt.calls {
				t.Errorf("%d calls reached ForceQuorum, want %d", got, tt.calls)
			}
			if tt.want != 200 {
				msg := errorMessage(t, w)
				if tt.wantMsg == risk && msg != risk || !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("error %q, want %q", msg, tt.wantMsg)
				}
				return
			}
			if !strings.Contains(w.Body.String(), tt.wantBody) {
				t.Errorf("body %s\nlacks %s", w.Body, tt.wantBody)
			}
			var u unit.Unit
			if err := json.Unmarshal(w.Body.Bytes(), &u); err != nil || u.Name != "lab" || len(u.PMs) != 2 {
				t.Errorf("answer is not the unit: %v %s", err, w.Body)
			}
		})
	}
}

// TestForceQuorumRefusedEarly: without login, without a QuorumSource or
// from another site's page, nothing reaches ForceQuorum.
func TestForceQuorumRefusedEarly(t *testing.T) {
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	f := newQuorumFake(waitingUnit())
	with := newQuorumServer(t, f, f, nil).Handler()
	without := newQuorumServer(t, f, nil, nil).Handler()
	tests := []struct {
		name    string
		h       http.Handler
		opts    []reqOpt
		want    int
		wantMsg string
	}{
		{name: "not logged in", h: with, want: 401, wantMsg: "not logged in"},
		{name: "wrong password", h: with, opts: []reqOpt{withBasic("admin", "nope")}, want: 401, wantMsg: "not logged in"},
		{name: "not logged in without quorum control", h: without, want: 401, wantMsg: "not logged in"},
		{name: "no quorum control", h: without, opts: []reqOpt{ck}, want: 501, wantMsg: "force quorum not available"},
		{name: "cross-site", h: with, opts: []reqOpt{ck, withHeader("Sec-Fetch-Site", "cross-site"), withHeader("Content-Type", "text/plain")},
			want: 403, wantMsg: "cross-origin request refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(t, tt.h, "POST", forceQuorumPath, `{"confirm": true}`, tt.opts...)
			if w.Code != tt.want || !strings.Contains(errorMessage(t, w), tt.wantMsg) {
				t.Errorf("status %d %s, want %d %q", w.Code, w.Body, tt.want, tt.wantMsg)
			}
		})
	}
	if n := f.callCount(); n != 0 {
		t.Errorf("%d refused requests reached ForceQuorum", n)
	}
	// The same-origin page of the dashboard may.
	w := do(t, with, "POST", forceQuorumPath, `{"confirm":true}`, ck, withHeader("Sec-Fetch-Site", "same-origin"), withHeader("Content-Type", "application/json"))
	if w.Code != 200 || f.callCount() != 1 {
		t.Errorf("same-origin Force Quorum: %d %s, %d calls", w.Code, w.Body, f.callCount())
	}
}

// TestForceQuorumLogsUser: overriding split-brain protection is logged
// with the operator who did it.
func TestForceQuorumLogsUser(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	f := newQuorumFake(waitingUnit())
	h := newQuorumServer(t, f, f, log).Handler()
	if w := do(t, h, "POST", forceQuorumPath, `{"confirm":true}`, withBasic("admin", "admin")); w.Code != 200 {
		t.Fatalf("status %d %s", w.Code, w.Body)
	}
	for _, want := range []string{`level=WARN msg="webui: Force Quorum requested" user=admin`, `msg="webui: Force Quorum done" user=admin verdict=run`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, buf.String())
		}
	}
}

// FuzzForceQuorumBody checks that no body crashes the parser and that only
// a body that says confirm: true, and nothing else, is accepted.
func FuzzForceQuorumBody(f *testing.F) {
	for _, s := range []string{
		`{"confirm": true}`, `{"confirm":true}`, `{"confirm": false}`, `{}`, ``, ` `, `null`, `[]`, `true`,
		`{"confirm": "true"}`, `{"confirm": 1}`, `{"Confirm": true}`, `{"CONFIRM": true}`, `{"confirm": true, "x": 1}`,
		`{"confirm": true}}`, `{"confirm": true}]`, `{"confirm": false, "confirm": true}`, `{"confirm": true, "confirm": false}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		err := parseForceQuorum(body)
		if err != nil {
			if msg := err.Error(); !strings.Contains(msg, "split brain") && !strings.HasPrefix(msg, "invalid") {
				t.Fatalf("parseForceQuorum(%q) = %q: neither the risk nor what is invalid", body, msg)
			}
			return
		}
		// Accepted: one JSON object with no field but confirm (matched
		// without case, as encoding/json does), which reads as true.
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil || m == nil {
			t.Fatalf("parseForceQuorum accepted %q, which is not one JSON object", body)
		}
		for k := range m {
			if !strings.EqualFold(k, "confirm") {
				t.Fatalf("parseForceQuorum accepted %q with field %q", body, k)
			}
		}
		var req struct{ Confirm bool }
		if json.Unmarshal(body, &req) != nil || !req.Confirm {
			t.Fatalf("parseForceQuorum accepted %q, which does not confirm", body)
		}
	})
}

func TestDashboardQuorum(t *testing.T) {
	ck := withCookie(signSession(testKey, "admin", time.Now().Add(time.Hour)))
	tests := []struct {
		name      string
		quorum    unit.Quorum
		noControl bool
		want      []string
		wantNot   []string
	}{
		{
			name:   "waiting",
			quorum: waitingUnit().Quorum,
			want: []string{`id="quorum"`, ">10.99.0.200:7413, 10.99.0.201:7413<", `class="badge quorum-wait" data-quorum="verdict">wait<`,
				`data-quorum="holder">PM 2<`, ">waiting for the quorum lease<", ">quorum server 10.99.0.200:7413: i/o timeout<",
				`<div id="force-quorum" class="force-quorum">`, `id="force-quorum-button"`,
				`data-risk="Force Quorum lets this PM run the unit&#39;s VMs alone without proof that its peer is down. If the peer is running them, both PMs write the same volumes (split brain)`},
		},
		{
			name:   "holding the lease",
			quorum: unit.Quorum{Servers: []string{"q1:7413"}, Verdict: "run", Reason: "this PM holds the quorum lease", Holder: 1, LeaseSeconds: 3.4},
			want: []string{">q1:7413<", `quorum-run" data-quorum="verdict">run<`, `data-quorum="holder">PM 1 (3s left)<`,
				`<div id="force-quorum" class="force-quorum" hidden>`, `data-quorum="error" hidden>`},
		},
		{
			name:   "forced",
			quorum: unit.Quorum{Servers: []string{"q1:7413"}, Verdict: "run", Reason: "an operator forced quorum on this PM", Forced: true},
			want:   []string{`data-quorum="verdict">run (forced)<`, `data-quorum="holder">none<`},
		},
		{
			name:   "no quorum servers",
			quorum: unit.Quorum{Verdict: "run", Reason: "both PMs are heard"},
			want:   []string{`data-quorum="servers">none configured<`, ">both PMs are heard<"},
		},
		{
			name:      "waiting without quorum control",
			quorum:    waitingUnit().Quorum,
			noControl: true,
			want:      []string{`id="quorum"`, ">wait<"},
			wantNot:   []string{`id="force-quorum"`, "force-quorum-button"},
		},
		{
			name:    "escapes",
			quorum:  unit.Quorum{Servers: []string{"<b>q</b>"}, Verdict: "wait", Reason: "<script>x</script>"},
			want:    []string{"&lt;b&gt;q&lt;/b&gt;", "&lt;script&gt;x&lt;/script&gt;"},
			wantNot: []string{"<b>q</b>", "<script>x</script>"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := testUnit()
			u.Quorum = tt.quorum
			f := newQuorumFake(u)
			var q QuorumSource = f
			if tt.noControl {
				q = nil
			}
			w := do(t, newQuorumServer(t, f, q, nil).Handler(), "GET", "/", "", ck)
			if w.Code != 200 {
				t.Fatalf("status %d", w.Code)
			}
			body := w.Body.String()
			for _, want := range tt.want {
				if !strings.Contains(body, want) {
					t.Errorf("dashboard lacks %q", want)
				}
			}
			for _, bad := range tt.wantNot {
				if strings.Contains(body, bad) {
					t.Errorf("dashboard has %q", bad)
				}
			}
			if t.Failed() {
				t.Logf("dashboard:\n%s", body)
			}
		})
	}
}

// TestForceQuorumInBrowser clicks Force Quorum in a real Chromium: a
// cancelled confirmation sends nothing; an accepted one forces quorum, and
// the page shows the new verdict and hides the button.
func TestForceQuorumInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no Chromium at %s (Debian package chromium): %v", chromiumPath, err)
	}
	f := newQuorumFake(waitingUnit())
	srv := browserServer(t, newQuorumServer(t, f, f, nil))
	p := openBrowserPage(t, srv.URL+"/")
	p.waitFor(`document.getElementById("force-quorum")?.hidden`, "false", time.Minute)
	// "complete" comes after the deferred dashboard.js has run, so the
	// button has its handler by then.
	p.waitFor(`document.readyState`, "complete", time.Minute)
	p.screenshot("quorum-wait.png")

	// The page asks with the risk; the operator says no.
	if _, err := p.eval(`(window.asked = [], window.confirm = function (m) { window.asked.push(m); return false; }, document.getElementById("force-quorum-button").click(), 1)`); err != nil {
		t.Fatal(err)
	}
	asked, err := p.eval(`window.asked.join("|")`)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(asked, "both PMs write the same volumes (split brain)") || !strings.Contains(asked, "Force quorum on this PM?") {
		t.Errorf("the confirmation asked %q, want the risk", asked)
	}
	// The page asks before anything else and sends synchronously after a
	// yes, showing "Forcing quorum…" first: a status still hidden now
	// means nothing was sent.
	if hidden, err := p.eval(`document.getElementById("quorum-status").hidden`); err != nil || hidden != "true" {
		t.Fatalf("a cancelled confirmation went on to send Force Quorum (status hidden %q, %v)", hidden, err)
	}
	if n := f.callCount(); n != 0 {
		t.Fatalf("a cancelled confirmation sent Force Quorum (%d calls)", n)
	}

	// The operator says yes.
	if _, err := p.eval(`(window.confirm = function () { return true; }, document.getElementById("force-quorum-button").click(), 1)`); err != nil {
		t.Fatal(err)
	}
	dom, _ := p.waitFor(`document.getElementById("quorum-status").textContent`, "Quorum forced: this PM runs the unit's VMs alone.", time.Minute)
	if n := f.callCount(); n != 1 {
		t.Errorf("%d calls reached ForceQuorum, want 1", n)
	}
	p.waitFor(`document.querySelector('[data-quorum="verdict"]').textContent`, "run (forced)", time.Minute)
	p.waitFor(`document.getElementById("force-quorum").hidden`, "true", time.Minute)
	p.checkLog()
	p.screenshot("force-quorum.png")
	if t.Failed() {
		t.Logf("DOM:\n%s\nbrowser log:\n%s", dom, strings.Join(p.log, "\n"))
	}
}
