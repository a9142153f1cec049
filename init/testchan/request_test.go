package testchan

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		line    string
		want    Request
		errHas  string
		timeout time.Duration
	}{
		{line: `{"id":1,"op":"exec","argv":["/bin/dyadctl","pm","list"],"timeout_ms":10000}`,
			want: Request{ID: 1, Op: "exec", Argv: []string{"/bin/dyadctl", "pm", "list"}, TimeoutMS: 10000}, timeout: 10 * time.Second},
		{line: `{"id":2,"op":"exec","argv":["x"]}`, want: Request{ID: 2, Op: "exec", Argv: []string{"x"}}, timeout: DefaultTimeout},
		{line: `{"id":3,"op":"read","path":"/proc/uptime"}`, want: Request{ID: 3, Op: "read", Path: "/proc/uptime"}},
		{line: `{"id":4,"op":"log","service":"dyad-agent"}`, want: Request{ID: 4, Op: "log", Service: "dyad-agent"}},
		{line: `{"id":5,"op":"poweroff"}`, want: Request{ID: 5, Op: "poweroff"}},
		{line: `{"id":6,"op":"reboot"}`, want: Request{ID: 6, Op: "reboot"}},
		{line: `{"id":7,"op":"ping"}`, want: Request{ID: 7, Op: "ping"}},
		{line: `{"id":8,"op":"exec","argv":[]}`, want: Request{ID: 8}, errHas: "non-empty argv"},
		{line: `{"id":9,"op":"exec","argv":["a\u0000b"]}`, want: Request{ID: 9}, errHas: "NUL"},
		{line: `{"id":10,"op":"exec","argv":["a"],"timeout_ms":-1}`, want: Request{ID: 10}, errHas: "out of range"},
		{line: `{"id":11,"op":"read","path":"rel"}`, want: Request{ID: 11}, errHas: "absolute"},
		{line: `{"id":12,"op":"log"}`, want: Request{ID: 12}, errHas: "needs a service"},
		{line: `{"id":13}`, want: Request{ID: 13}, errHas: "missing op"},
		{line: `{"id":14,"op":"ping","extra":1}`, errHas: "unknown field"},
		{line: `{"id":15,"op":"ping"} {"id":16}`, want: Request{ID: 15}, errHas: "more than one"},
		{line: `[1,2]`, errHas: "bad request JSON"},
		{line: ``, errHas: "bad request JSON"},
	} {
		got, err := ParseRequest([]byte(tc.line))
		if tc.errHas == "" && err != nil || tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)) {
			t.Errorf("%s: err = %v, want %q", tc.line, err, tc.errHas)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, want %+v", tc.line, got, tc.want)
		}
		if tc.timeout != 0 && got.Timeout() != tc.timeout {
			t.Errorf("%s: timeout %v, want %v", tc.line, got.Timeout(), tc.timeout)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"id":1,"op":"exec","argv":["/bin/dyadctl","pm","list"],"timeout_ms":10000}`,
		`{"id":3,"op":"read","path":"/proc/uptime"}`,
		`{"id":4,"op":"log","service":"dyad-agent"}`,
		`{"id":7,"op":"ping"}`,
		`{"id":8,"op":"exec","argv":[]}`,
		`not json`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := ParseRequest(line)
		if err != nil {
			return
		}
		// A valid request survives a round trip unchanged.
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseRequest(b)
		if err != nil || !reflect.DeepEqual(req, again) {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", b, again, err, req)
		}
		if req.Op == OpExec && (req.Timeout() <= 0 || req.Timeout() > MaxTimeout) {
			t.Fatalf("accepted timeout %v", req.Timeout())
		}
	})
}
