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
		{line: `{"id":17,"op":"pwrite","path":"/dev/vdb","offset":4096,"length":8192,"seed":-3,"direct":true,"timeout_ms":60000}`,
			want: Request{ID: 17, Op: "pwrite", Path: "/dev/vdb", Offset: 4096, Length: 8192, Seed: -3, Direct: true, TimeoutMS: 60000}},
		{line: `{"id":18,"op":"pwrite","path":"/tmp/f","offset":1,"length":3}`, want: Request{ID: 18, Op: "pwrite", Path: "/tmp/f", Offset: 1, Length: 3}},
		{line: `{"id":19,"op":"pwrite","path":"/dev/vdb","offset":1,"length":4096,"direct":true}`, want: Request{ID: 19}, errHas: "multiples of 4096"},
		{line: `{"id":20,"op":"pwrite","path":"/dev/vdb","length":4294967297}`, want: Request{ID: 20}, errHas: "length 4294967297 out of range"},
		{line: `{"id":21,"op":"pwrite","path":"/dev/vdb","length":0}`, want: Request{ID: 21}, errHas: "length 0 out of range"},
		{line: `{"id":22,"op":"pwrite","path":"/dev/vdb","offset":-1,"length":1}`, want: Request{ID: 22}, errHas: "negative"},
		{line: `{"id":23,"op":"pwrite","path":"/dev/vdb","offset":9223372036854775807,"length":1}`, want: Request{ID: 23}, errHas: "overflows"},
		{line: `{"id":24,"op":"pwrite","path":"dev/vdb","length":1}`, want: Request{ID: 24}, errHas: "absolute path"},
		{line: `{"id":25,"op":"sha256","path":"/dev/drbd1","offset":5,"length":4294967296}`, want: Request{ID: 25, Op: "sha256", Path: "/dev/drbd1", Offset: 5, Length: 4294967296}},
		{line: `{"id":26,"op":"sha256","path":"/dev/a\u0000b","length":1}`, want: Request{ID: 26}, errHas: "absolute path"},
		{line: `{"id":27,"op":"sha256","path":"/dev/vdb","length":1,"timeout_ms":-5}`, want: Request{ID: 27}, errHas: "timeout_ms -5"},
		{line: `{"id":28,"op":"dwrite","path":"/dev/drbd1","block_size":4096,"count":1000,"direct":true,"dsync":true}`,
			want: Request{ID: 28, Op: "dwrite", Path: "/dev/drbd1", BlockSize: 4096, Count: 1000, Direct: true, DSync: true}},
		{line: `{"id":29,"op":"dwrite","path":"/dev/drbd1","block_size":512,"count":2,"direct":true}`, want: Request{ID: 29}, errHas: "multiples of 4096"},
		{line: `{"id":30,"op":"dwrite","path":"/dev/drbd1","block_size":67108864,"count":65}`, want: Request{ID: 30}, errHas: "length 4362076160 out of range"},
		{line: `{"id":31,"op":"dwrite","path":"/dev/drbd1","block_size":67108865,"count":1}`, want: Request{ID: 31}, errHas: "block_size 67108865 out of range"},
		{line: `{"id":32,"op":"dwrite","path":"/dev/drbd1","block_size":1,"count":1048577}`, want: Request{ID: 32}, errHas: "count 1048577 out of range"},
		{line: `{"id":33,"op":"dwrite","path":"/dev/drbd1","block_size":4096}`, want: Request{ID: 33}, errHas: "count 0 out of range"},
		{line: `{"id":34,"op":"writefile","path":"/run/drbd/r1.res","data":"cmVzb3VyY2U="}`,
			want: Request{ID: 34, Op: "writefile", Path: "/run/drbd/r1.res", Data: []byte("resource")}},
		{line: `{"id":35,"op":"writefile","path":"/tmp/empty","data":""}`, want: Request{ID: 35, Op: "writefile", Path: "/tmp/empty"}},
		{line: `{"id":36,"op":"writefile","path":"/etc/passwd","data":""}`, want: Request{ID: 36}, errHas: "under /run/ or /tmp/"},
		{line: `{"id":37,"op":"writefile","path":"/run/../etc/passwd"}`, want: Request{ID: 37}, errHas: "must be clean"},
		{line: `{"id":38,"op":"writefile","path":"/run"}`, want: Request{ID: 38}, errHas: "under /run/"},
		{line: `{"id":39,"op":"ping","argv":[]}`, want: Request{ID: 39, Op: "ping"}},
		{line: `{"id":40,"op":"killpid","path":"/run/dyad/vm/x/qemu.pid","signal":"KILL"}`,
			want: Request{ID: 40, Op: "killpid", Path: "/run/dyad/vm/x/qemu.pid", Signal: "KILL"}},
		{line: `{"id":41,"op":"killpid","path":"/run/q.pid","signal":"SEGV"}`, want: Request{ID: 41}, errHas: `unknown signal "SEGV"`},
		{line: `{"id":42,"op":"killpid","path":"/run/q.pid"}`, want: Request{ID: 42}, errHas: `unknown signal ""`},
		{line: `{"id":43,"op":"killpid","path":"q.pid","signal":"TERM"}`, want: Request{ID: 43}, errHas: "absolute path"},
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
		`{"id":17,"op":"pwrite","path":"/dev/vdb","offset":4096,"length":8192,"seed":-3,"direct":true,"timeout_ms":60000}`,
		`{"id":19,"op":"pwrite","path":"/dev/vdb","offset":1,"length":4096,"direct":true}`,
		`{"id":23,"op":"pwrite","path":"/dev/vdb","offset":9223372036854775807,"length":1}`,
		`{"id":25,"op":"sha256","path":"/dev/drbd1","offset":5,"length":4294967296}`,
		`{"id":28,"op":"dwrite","path":"/dev/drbd1","block_size":4096,"count":1000,"direct":true,"dsync":true}`,
		`{"id":30,"op":"dwrite","path":"/dev/drbd1","block_size":67108864,"count":65}`,
		`{"id":34,"op":"writefile","path":"/run/drbd/r1.res","data":"cmVzb3VyY2U="}`,
		`{"id":35,"op":"writefile","path":"/tmp/empty","data":""}`,
		`{"id":37,"op":"writefile","path":"/run/../etc/passwd"}`,
		`{"id":39,"op":"ping","argv":[]}`,
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
		switch req.Op {
		case OpPWrite, OpSHA256:
			if req.Offset < 0 || req.Length <= 0 || req.Length > MaxIOBytes || req.Offset+req.Length < req.Offset {
				t.Fatalf("accepted range %d+%d", req.Offset, req.Length)
			}
		case OpDWrite:
			if req.BlockSize <= 0 || req.Count <= 0 || req.BlockSize*req.Count > MaxIOBytes || req.BlockSize*req.Count/req.Count != req.BlockSize {
				t.Fatalf("accepted %d writes of %d bytes", req.Count, req.BlockSize)
			}
		case OpWriteFile:
			if !strings.HasPrefix(req.Path, "/run/") && !strings.HasPrefix(req.Path, "/tmp/") || strings.Contains(req.Path, "/../") {
				t.Fatalf("accepted writefile path %q", req.Path)
			}
		}
	})
}
