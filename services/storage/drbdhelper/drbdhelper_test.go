package drbdhelper

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// kernelEnv is the environment drbd_khelper gives the helper once the
// connection has addresses.
var kernelEnv = []string{
	"HOME=/", "TERM=linux", "PATH=/sbin:/usr/sbin:/bin:/usr/bin",
	"DRBD_PEER_AF=ipv4", "DRBD_PEER_ADDRESS=169.254.42.2",
}

func TestParseCall(t *testing.T) {
	peer := map[string]string{"DRBD_PEER_AF": "ipv4", "DRBD_PEER_ADDRESS": "169.254.42.2"}
	tests := []struct {
		name    string
		args    []string
		env     []string
		want    Call
		wantErr string
	}{
		{
			name: "fence-peer names the resource",
			args: []string{"fence-peer", "r3"}, env: kernelEnv,
			want: Call{Cmd: "fence-peer", Arg: "r3", Resource: "r3", Minor: -1, Env: peer},
		},
		{
			name: "device command names the minor",
			args: []string{"before-resync-target", "minor-3"}, env: kernelEnv,
			want: Call{Cmd: "before-resync-target", Arg: "minor-3", Minor: 3, Env: peer},
		},
		{
			name: "no addresses yet: empty environment slots",
			args: []string{"local-io-error", "minor-0"}, env: []string{"HOME=/", "TERM=linux", "PATH=/bin", "", ""},
			want: Call{Cmd: "local-io-error", Arg: "minor-0", Minor: 0},
		},
		{
			name: "drbdadm-style environment fills in the other half",
			args: []string{"split-brain", "minor-7"}, env: []string{"DRBD_RESOURCE=r7", "DRBD_MINOR=7", "DRBD_VOLUME=0", "OTHER=x"},
			want: Call{Cmd: "split-brain", Arg: "minor-7", Resource: "r7", Minor: 7,
				Env: map[string]string{"DRBD_RESOURCE": "r7", "DRBD_MINOR": "7", "DRBD_VOLUME": "0"}},
		},
		{
			name: "resource with a minor from the environment",
			args: []string{"unfence-peer", "r2"}, env: []string{"DRBD_MINOR=2"},
			want: Call{Cmd: "unfence-peer", Arg: "r2", Resource: "r2", Minor: 2, Env: map[string]string{"DRBD_MINOR": "2"}},
		},
		{
			name: "garbled minor in the environment is ignored",
			args: []string{"fence-peer", "r2"}, env: []string{"DRBD_MINOR=x"},
			want: Call{Cmd: "fence-peer", Arg: "r2", Resource: "r2", Minor: -1, Env: map[string]string{"DRBD_MINOR": "x"}},
		},
		{
			name: "IPv6 peer",
			args: []string{"fence-peer", "r1"}, env: []string{"DRBD_PEER_AF=ipv6", "DRBD_PEER_ADDRESS=fe80::1"},
			want: Call{Cmd: "fence-peer", Arg: "r1", Resource: "r1", Minor: -1,
				Env: map[string]string{"DRBD_PEER_AF": "ipv6", "DRBD_PEER_ADDRESS": "fe80::1"}},
		},
		{name: "no arguments", args: nil, wantErr: "want 2 arguments"},
		{name: "one argument", args: []string{"fence-peer"}, wantErr: "want 2 arguments"},
		{name: "three arguments", args: []string{"fence-peer", "r1", "x"}, wantErr: "want 2 arguments"},
		{name: "unknown command", args: []string{"quorum-lost", "r1"}, wantErr: "unknown helper command"},
		{name: "empty command", args: []string{"", "r1"}, wantErr: "unknown helper command"},
		{name: "negative minor", args: []string{"split-brain", "minor--1"}, wantErr: "not a number"},
		{name: "minor with a sign", args: []string{"split-brain", "minor-+1"}, wantErr: "not a number"},
		{name: "minor with leading zero", args: []string{"split-brain", "minor-01"}, wantErr: "not a number"},
		{name: "huge minor", args: []string{"split-brain", "minor-1048576"}, wantErr: "not a number"},
		{name: "empty minor", args: []string{"split-brain", "minor-"}, wantErr: "not a number"},
		{name: "empty resource", args: []string{"fence-peer", ""}, wantErr: "want 1..128"},
		{name: "resource with a space", args: []string{"fence-peer", "r 1"}, wantErr: "printable ASCII"},
		{name: "resource with a slash", args: []string{"fence-peer", "../r1"}, wantErr: "printable ASCII"},
		{name: "resource with a newline", args: []string{"fence-peer", "r1\nfake log line"}, wantErr: "printable ASCII"},
		{name: "long resource", args: []string{"fence-peer", strings.Repeat("r", 129)}, wantErr: "want 1..128"},
		{name: "bad DRBD_RESOURCE", args: []string{"split-brain", "minor-1"}, env: []string{"DRBD_RESOURCE=a b"}, wantErr: "resource"},
		{name: "odd variable name", args: []string{"split-brain", "minor-1"}, env: []string{"DRBD_x=1"}, wantErr: "not a DRBD_ one"},
		{name: "long variable", args: []string{"split-brain", "minor-1"}, env: []string{"DRBD_X=" + strings.Repeat("x", 1025)}, wantErr: "bytes long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCall(tt.args, tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseCall = %+v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseCall = %+v\nwant        %+v", got, tt.want)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	if Timeout(CmdFencePeer) != 60*time.Second || Timeout(CmdSplitBrain) != 10*time.Second {
		t.Errorf("Timeout: fence-peer %v, split-brain %v", Timeout(CmdFencePeer), Timeout(CmdSplitBrain))
	}
}

// listen starts a server with h on a socket in a temporary directory and
// returns its path; the server stops with the test.
func listen(t *testing.T, h Handler, ioTimeout time.Duration) (string, *bytes.Buffer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "helper.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, log, ln, h, ioTimeout) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path, &logs.buf
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func TestAskServe(t *testing.T) {
	var mu sync.Mutex
	var calls []Call
	path, _ := listen(t, func(ctx context.Context, c Call) int {
		mu.Lock()
		calls = append(calls, c)
		mu.Unlock()
		if _, ok := ctx.Deadline(); !ok {
			t.Error("handler context without a deadline")
		}
		switch c.Cmd {
		case CmdFencePeer:
			return FencePeerOutdated
		case CmdPriLost:
			return 300 // clamped
		}
		return 0
	}, time.Second)

	ctx := context.Background()
	fence, err := ParseCall([]string{"fence-peer", "r3"}, kernelEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Ask(ctx, path, fence); err != nil || got != FencePeerOutdated {
		t.Errorf("Ask(fence-peer) = %d, %v", got, err)
	}
	sb := Call{Cmd: CmdSplitBrain, Arg: "minor-3", Minor: 3}
	if got, err := Ask(ctx, path, sb); err != nil || got != 0 {
		t.Errorf("Ask(split-brain) = %d, %v", got, err)
	}
	if got, err := Ask(ctx, path, Call{Cmd: CmdPriLost, Arg: "minor-1", Minor: 1}); err != nil || got != 255 {
		t.Errorf("Ask(pri-lost) = %d, %v", got, err)
	}
	// Concurrent calls each get their own answer.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if got, err := Ask(ctx, path, fence); err != nil || got != FencePeerOutdated {
				t.Errorf("concurrent Ask = %d, %v", got, err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 23 || !reflect.DeepEqual(calls[0], fence) || !reflect.DeepEqual(calls[1], sb) {
		t.Errorf("handler saw %d calls, first %+v, %+v", len(calls), calls[0], calls[1])
	}
}

func TestAskErrors(t *testing.T) {
	ctx := context.Background()
	c := Call{Cmd: CmdFencePeer, Arg: "r1", Resource: "r1", Minor: -1}
	if _, err := Ask(ctx, filepath.Join(t.TempDir(), "none.sock"), c); err == nil || !strings.Contains(err.Error(), "reach the agent") {
		t.Errorf("Ask without an agent: %v", err)
	}
	if _, err := Ask(ctx, "/nonexistent", Call{Cmd: "nope", Arg: "r1", Minor: -1}); err == nil || !strings.Contains(err.Error(), "unknown") {
		t.Errorf("Ask with an invalid call: %v", err)
	}

	// An agent that never answers: the context ends the wait.
	blocked := make(chan struct{})
	path, _ := listen(t, func(ctx context.Context, c Call) int {
		<-blocked
		return 4
	}, time.Second)
	defer close(blocked)
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := Ask(tctx, path, c); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ask to a silent agent: %v", err)
	}
	cctx, cancel2 := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel2)
	if _, err := Ask(cctx, path, c); !errors.Is(err, context.Canceled) {
		t.Errorf("Ask cancelled: %v", err)
	}
}

// fakeAgent answers every connection with reply after reading a line.
func fakeAgent(t *testing.T, answer string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			readLine(conn)
			io.WriteString(conn, answer)
			conn.Close()
		}
	}()
	return path
}

func TestAskBadAnswers(t *testing.T) {
	c := Call{Cmd: CmdFencePeer, Arg: "r1", Resource: "r1", Minor: -1}
	for _, tt := range []struct{ answer, want string }{
		{"", "unexpected EOF"},
		{"{}\n", "no exit code"},
		{`{"exit":256}` + "\n", "no exit code"},
		{`{"exit":-1}` + "\n", "no exit code"},
		{`{"exit":"4"}` + "\n", "decode"},
		{`{"exit":4,"more":1}` + "\n", "unknown field"},
		{`{"exit":4} {"exit":5}` + "\n", "data after"},
		{`{"exit":1,"error":"nope"}` + "\n", "refused the call: nope"},
		{strings.Repeat(" ", MaxMessage+10), "longer than"},
	} {
		_, err := Ask(context.Background(), fakeAgent(t, tt.answer), c)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("answer %.40q: %v, want an error containing %q", tt.answer, err, tt.want)
		}
	}
	// A last line without its newline still counts.
	if got, err := Ask(context.Background(), fakeAgent(t, `{"exit":5}`), c); err != nil || got != 5 {
		t.Errorf("answer without newline: %d, %v", got, err)
	}
}

// rawExchange sends raw bytes to the server and returns its reply line.
func rawExchange(t *testing.T, path, req string) reply {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	line, err := readLine(conn)
	if err != nil {
		t.Fatal(err)
	}
	var rep reply
	if err := json.Unmarshal(line, &rep); err != nil || rep.Exit == nil {
		t.Fatalf("reply %q: %v", line, err)
	}
	return rep
}

func TestServeBadRequests(t *testing.T) {
	called := make(chan Call, 10)
	path, logs := listen(t, func(_ context.Context, c Call) int {
		called <- c
		return 0
	}, 200*time.Millisecond)
	for _, tt := range []struct{ name, req, want string }{
		{"not JSON", "hello\n", "decode request"},
		{"unknown command", `{"cmd":"rm -rf","arg":"r1","minor":-1}` + "\n", "unknown helper command"},
		{"missing minor", `{"cmd":"fence-peer","arg":"r1","resource":"r1"}` + "\n", "without minor"},
		{"unknown field", `{"cmd":"fence-peer","arg":"r1","resource":"r1","minor":-1,"x":1}` + "\n", "unknown field"},
		{"trailing data", `{"cmd":"fence-peer","arg":"r1","resource":"r1","minor":-1}{}` + "\n", "data after"},
		{"neither resource nor minor", `{"cmd":"split-brain","arg":"x","minor":-1}` + "\n", "neither"},
		{"minor out of range", `{"cmd":"split-brain","arg":"minor-9","minor":-2}` + "\n", "out of range"},
		{"bad env", `{"cmd":"split-brain","arg":"minor-9","minor":9,"env":{"PATH":"/"}}` + "\n", "not a DRBD_ one"},
		{"too long", `{"cmd":"split-brain","arg":"minor-9","minor":9,"env":{"DRBD_X":"` + strings.Repeat("x", MaxMessage) + `"}}` + "\n", "longer than"},
		{"empty", "\n", "decode request"},
		{"no line before the deadline", `{"cmd":"split-brain"`, "i/o timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rep := rawExchange(t, path, tt.req)
			if *rep.Exit != 1 || !strings.Contains(rep.Error, tt.want) {
				t.Errorf("reply exit %d, error %q; want 1 and %q", *rep.Exit, rep.Error, tt.want)
			}
		})
	}
	select {
	case c := <-called:
		t.Errorf("handler called with %+v", c)
	default:
	}
	if !strings.Contains(logs.String(), "bad request") {
		t.Errorf("no log line for bad requests: %q", logs.String())
	}
	// The server still answers good requests.
	rep := rawExchange(t, path, `{"cmd":"split-brain","arg":"minor-9","minor":9}`+"\n")
	if *rep.Exit != 0 || rep.Error != "" {
		t.Errorf("good request after bad ones: %+v", rep)
	}
}

func TestServeStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, nil, ln, func(ctx context.Context, c Call) int {
			close(started)
			<-ctx.Done() // a handler in progress sees the end
			return 4
		})
	}()
	asked := make(chan error, 1)
	go func() {
		_, err := Ask(context.Background(), path, Call{Cmd: CmdFencePeer, Arg: "r1", Resource: "r1", Minor: -1})
		asked <- err
	}()
	<-started
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if err := <-asked; err != nil {
		t.Errorf("the call in progress got no answer: %v", err)
	}
	if _, err := net.Dial("unix", path); err == nil {
		t.Error("the socket still accepts after Serve returned")
	}
}

func TestServeListenerClosed(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := Serve(context.Background(), nil, ln, nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve on a closed listener = %v", err)
	}
}

func FuzzReadCall(f *testing.F) {
	f.Add([]byte(`{"cmd":"fence-peer","arg":"r3","resource":"r3","minor":-1,"env":{"DRBD_PEER_AF":"ipv4"}}` + "\n"))
	f.Add([]byte(`{"cmd":"split-brain","arg":"minor-3","minor":3}`))
	f.Add([]byte(`{"cmd":"split-brain","arg":"minor-3","minor":3}{}`))
	f.Add([]byte(`{"cmd":"split-brain","minor":1e400}`))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := readCall(bytes.NewReader(data))
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("readCall accepted an invalid call %+v: %v", c, err)
		}
		// What was accepted survives a round trip through Ask's encoder.
		var buf bytes.Buffer
		if err := writeLine(&buf, c); err != nil {
			return // over MaxMessage once re-encoded
		}
		back, err := readCall(&buf)
		if err != nil || !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip of %+v: %+v, %v", c, back, err)
		}
	})
}

func FuzzParseCall(f *testing.F) {
	f.Add("fence-peer", "r3", "DRBD_PEER_AF=ipv4\x00DRBD_PEER_ADDRESS=10.0.0.2")
	f.Add("split-brain", "minor-3", "DRBD_RESOURCE=r3\x00\x00HOME=/")
	f.Add("pri-lost", "minor-", "DRBD_MINOR=-5")
	f.Fuzz(func(t *testing.T, cmd, arg, env string) {
		c, err := ParseCall([]string{cmd, arg}, strings.Split(env, "\x00"))
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseCall returned an invalid call %+v: %v", c, err)
		}
		if c.Cmd != cmd || c.Arg != arg {
			t.Fatalf("ParseCall changed the arguments: %+v", c)
		}
	})
}
