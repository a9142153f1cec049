package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/webui"
)

// ctlQuorum is a QuorumSource over a unit that waits for the lease; err,
// when set, refuses.
type ctlQuorum struct {
	mu    sync.Mutex
	u     unit.Unit
	err   error
	calls int
}

func newCtlQuorum() *ctlQuorum {
	u := testUnit()
	u.Quorum = unit.Quorum{Servers: []string{"10.99.0.200:7413"}, Verdict: "wait", Reason: "waiting for the quorum lease", Holder: 2}
	return &ctlQuorum{u: u}
}

func (f *ctlQuorum) Unit(context.Context) (unit.Unit, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.u, nil
}

func (f *ctlQuorum) ForceQuorum(context.Context) (unit.Unit, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return unit.Unit{}, f.err
	}
	f.u.Quorum = unit.Quorum{Servers: f.u.Quorum.Servers, Verdict: "run", Reason: "an operator forced quorum on this PM", Forced: true}
	return f.u, nil
}

func (f *ctlQuorum) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// quorumSource shows the unit of a ctlQuorum, so that dyadctl's question
// shows the quorum it is about to force.
type quorumSource struct {
	*fakeSource
	q *ctlQuorum
}

func (s quorumSource) Unit(ctx context.Context) (unit.Unit, error) { return s.q.Unit(ctx) }

// startQuorum serves the webui with q as its QuorumSource (none when nil).
func startQuorum(t *testing.T, f *ctlQuorum, q webui.QuorumSource) func(string) string {
	t.Helper()
	s, err := webui.New(webui.Config{
		Source: quorumSource{&fakeSource{unit: testUnit()}, f}, Quorum: q, Users: users{},
		SessionKey: []byte("0123456789abcdef0123456789abcdef"),
		Node:       1, Role: func() unit.Role { return unit.RolePrimary },
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	env := map[string]string{"DYAD_URL": ts.URL, "DYAD_PASSWORD": "secret"}
	return func(k string) string { return env[k] }
}

func TestForceQuorumCommand(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		stdin     string
		noControl bool
		srcErr    error
		code      int
		want      string // stdout, whole
		wantErr   string // a part of stderr
		calls     int
	}{
		{
			name: "yes", args: []string{"unit", "force-quorum", "--yes"}, code: 0, calls: 1,
			want: "Quorum forced: pm1 (PM 1) runs the unit's VMs alone until its peer is heard again.\n" +
				"Quorum: 10.99.0.200:7413 — run (forced): an operator forced quorum on this PM\n",
		},
		{name: "yes first", args: []string{"unit", "force-quorum", "--yes=true"}, code: 0, calls: 1, want: "Quorum forced: pm1 (PM 1)"},
		// A script piping "yes" has not read the risk: only --yes will do.
		{name: "piped yes", args: []string{"unit", "force-quorum"}, stdin: "yes\n", code: 2,
			wantErr: "dyadctl: unit force-quorum: not confirmed: stdin is not a terminal, so dyadctl cannot ask; once you have made sure the peer PM is down, run again with --yes"},
		{name: "no stdin", args: []string{"unit", "force-quorum"}, code: 2, wantErr: "stdin is not a terminal"},
		{name: "yes false", args: []string{"unit", "force-quorum", "--yes=false"}, code: 2, wantErr: "stdin is not a terminal"},
		{name: "argument", args: []string{"unit", "force-quorum", "pm2", "--yes"}, code: 2, wantErr: "unit force-quorum takes no arguments"},
		{name: "unknown flag", args: []string{"unit", "force-quorum", "--force"}, code: 2, wantErr: "flag provided but not defined: -force"},
		{name: "refused", args: []string{"unit", "force-quorum", "--yes"}, srcErr: fmt.Errorf("%w: the peer PM is heard: nothing to force", webui.ErrConflict),
			code: 1, calls: 1, wantErr: "dyadctl: unit force-quorum --yes: dyad API: 409 Conflict: conflict: the peer PM is heard: nothing to force"},
		{name: "no quorum control", args: []string{"unit", "force-quorum", "--yes"}, noControl: true, code: 1, wantErr: "501 Not Implemented: force quorum not available"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCtlQuorum()
			f.err = tt.srcErr
			var q webui.QuorumSource = f
			if tt.noControl {
				q = nil
			}
			env := startQuorum(t, f, q)
			code, out, errOut := runCmdIn(t, env, strings.NewReader(tt.stdin), tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, errOut)
			}
			if tt.code == 0 && !strings.HasPrefix(out, tt.want) || tt.code != 0 && out != "" {
				t.Errorf("stdout %q, want %q", out, tt.want)
			}
			if !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr %q lacks %q", errOut, tt.wantErr)
			}
			if n := f.callCount(); n != tt.calls {
				t.Errorf("%d calls reached ForceQuorum, want %d", n, tt.calls)
			}
		})
	}
}

func TestForceQuorumJSON(t *testing.T) {
	f := newCtlQuorum()
	env := startQuorum(t, f, f)
	code, out, errOut := runCmd(t, env, "--json", "unit", "force-quorum", "--yes")
	var u unit.Unit
	if err := json.Unmarshal([]byte(out), &u); code != 0 || err != nil {
		t.Fatalf("exit %d, %v; stdout %q stderr %q", code, err, out, errOut)
	}
	if !u.Quorum.Forced || u.Quorum.Verdict != "run" || u.Name != "lab" {
		t.Errorf("--json printed %+v, want the forced unit", u)
	}
}

// TestForceQuorumAsks answers the question on a terminal: only "yes"
// forces quorum, and the question shows the unit's quorum and the risk
// on stderr.
func TestForceQuorumAsks(t *testing.T) {
	tests := []struct {
		name    string
		answer  string
		code    int
		calls   int
		wantOut string
		wantErr string // a part of stderr after the question
	}{
		{name: "yes", answer: "yes\n", code: 0, calls: 1, wantOut: "Quorum forced: pm1 (PM 1)"},
		{name: "yes with spaces", answer: "  yes \n", code: 0, calls: 1, wantOut: "Quorum forced: pm1 (PM 1)"},
		{name: "no", answer: "no\n", code: 1, wantErr: "dyadctl: unit force-quorum: not confirmed: nothing was changed"},
		{name: "y", answer: "y\n", code: 1, wantErr: "not confirmed"},
		{name: "upper case", answer: "YES\n", code: 1, wantErr: "not confirmed"},
		{name: "empty", answer: "\n", code: 1, wantErr: "not confirmed"},
	}
	const question = "Quorum: 10.99.0.200:7413 — wait: waiting for the quorum lease\n\n" +
		"Force Quorum lets this PM run the unit's VMs alone without proof that its peer is down.\n" +
		"If the peer is running them, both PMs write the same volumes (split brain) and one\n" +
		"side's writes must later be discarded. Make sure the peer PM is powered off first.\n\n" +
		"Type yes to force quorum: "
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			master, tty := openPTY(t)
			f := newCtlQuorum()
			env := startQuorum(t, f, f)
			stdout, stderr := &syncBuffer{}, &syncBuffer{}
			done := make(chan int, 1)
			go func() { done <- run(t.Context(), []string{"unit", "force-quorum"}, tty, stdout, stderr, env) }()
			waitFor(t, stderr, "Type yes to force quorum: ")
			if got := stderr.String(); got != question {
				t.Errorf("question:\n%s\nwant:\n%s", got, question)
			}
			if n := f.callCount(); n != 0 {
				t.Fatalf("Force Quorum sent before the answer")
			}
			if _, err := master.Write([]byte(tt.answer)); err != nil {
				t.Fatal(err)
			}
			var code int
			select {
			case code = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("dyadctl did not end after the answer")
			}
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr.String())
			}
			if !strings.HasPrefix(stdout.String(), tt.wantOut) || tt.wantOut == "" && stdout.String() != "" {
				t.Errorf("stdout %q, want %q", stdout.String(), tt.wantOut)
			}
			if after := strings.TrimPrefix(stderr.String(), question); !strings.Contains(after, tt.wantErr) || tt.wantErr == "" && after != "" {
				t.Errorf("stderr after the question %q, want %q", after, tt.wantErr)
			}
			if n := f.callCount(); n != tt.calls {
				t.Errorf("%d calls reached ForceQuorum, want %d", n, tt.calls)
			}
		})
	}
}

// TestForceQuorumInterrupted: Ctrl-C at the question (the context ends)
// forces nothing, though the terminal read cannot be cancelled.
func TestForceQuorumInterrupted(t *testing.T) {
	_, tty := openPTY(t)
	f := newCtlQuorum()
	env := startQuorum(t, f, f)
	ctx, cancel := context.WithCancel(t.Context())
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"unit", "force-quorum"}, tty, stdout, stderr, env) }()
	waitFor(t, stderr, "Type yes to force quorum: ")
	cancel()
	select {
	case code := <-done:
		if code != exitFail || !strings.Contains(stderr.String(), "not confirmed: nothing was changed: interrupted") {
			t.Errorf("exit %d, stderr %q; want %d and interrupted", code, stderr.String(), exitFail)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dyadctl did not end when interrupted")
	}
	if n := f.callCount(); n != 0 {
		t.Errorf("an interrupted question sent Force Quorum")
	}
}

func TestQuorumLine(t *testing.T) {
	tests := []struct {
		q    unit.Quorum
		want string
	}{
		{unit.Quorum{}, "none — unknown"},
		{unit.Quorum{Verdict: "run", Reason: "both PMs are heard"}, "none — run: both PMs are heard"},
		{unit.Quorum{Servers: []string{"q1:7413", "q2:7413"}, Verdict: "wait", Reason: "waiting for the quorum lease"},
			"q1:7413, q2:7413 — wait: waiting for the quorum lease"},
		{unit.Quorum{Servers: []string{"q1:7413"}, Verdict: "run", Reason: "an operator forced quorum on this PM", Forced: true},
			"q1:7413 — run (forced): an operator forced quorum on this PM"},
		{unit.Quorum{Servers: []string{"q1:7413"}, Verdict: "lose", Reason: "PM 2 holds the quorum lease and keeps renewing it", Holder: 2},
			"q1:7413 — lose: PM 2 holds the quorum lease and keeps renewing it"},
	}
	for _, tt := range tests {
		if got := quorumLine(tt.q); got != tt.want {
			t.Errorf("quorumLine(%+v) = %q, want %q", tt.q, got, tt.want)
		}
	}
}

func TestUnitShowQuorum(t *testing.T) {
	u := testUnit()
	u.Quorum = unit.Quorum{Servers: []string{"10.99.0.200:7413"}, Verdict: "wait", Reason: "waiting for the quorum lease",
		Error: "quorum server 10.99.0.200:7413: i/o timeout"}
	env := start(t, &fakeSource{unit: u})
	code, out, errOut := runCmd(t, env, "unit", "show")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	want := "Time:           2026-11-22 05:00:00 UTC\n" +
		"Quorum:         10.99.0.200:7413 — wait: waiting for the quorum lease\n" +
		"Quorum error:   quorum server 10.99.0.200:7413: i/o timeout\n\nPMs:"
	if !strings.Contains(out, want) {
		t.Errorf("unit show:\n%s\nlacks:\n%s", out, want)
	}
	if strings.Contains(out, "Lease holder") {
		t.Errorf("unit show names a lease holder when there is none:\n%s", out)
	}
}

func TestHelpListsForceQuorum(t *testing.T) {
	code, _, errOut := runCmd(t, func(string) string { return "" }, "-h")
	if code != 0 || !strings.Contains(errOut, "unit force-quorum [--yes]") || !strings.Contains(errOut, "split brain") {
		t.Errorf("exit %d, help %q", code, errOut)
	}
}
