package apiclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
	"github.com/dyad-ha/dyad/webui"
)

// consoleVMs gives the running VMs of clientVMs a console: a pipe to a
// guest that answers each chunk it reads with "<kind>:" and the chunk in
// upper case, and goes away on "bye".
type consoleVMs struct {
	*clientVMs
	mu    sync.Mutex
	dials []string
}

func (f *consoleVMs) DialConsole(ctx context.Context, id int, kind string) (net.Conn, error) {
	v, err := f.VM(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := vm.Check(vm.State(v.State), vm.Console); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.dials = append(f.dials, fmt.Sprintf("%d %s", id, kind))
	f.mu.Unlock()
	client, guest := net.Pipe()
	go func() {
		defer guest.Close()
		buf := make([]byte, 4096)
		for {
			n, err := guest.Read(buf)
			if err != nil || string(buf[:n]) == "bye" {
				return
			}
			if _, err := guest.Write(append([]byte(kind+":"), bytes.ToUpper(buf[:n])...)); err != nil {
				return
			}
		}
	}()
	return client, nil
}

// startConsoleAPI serves f behind a handler that counts logins and, when
// refuseNext is set, answers the next console request 401 as for an
// expired session.
type consoleAPI struct {
	mu         sync.Mutex
	logins     int
	refuseNext bool
}

func startConsoleAPI(t *testing.T, f webui.VMSource) (*apiclient.Client, *consoleAPI) {
	t.Helper()
	s, err := webui.New(webui.Config{
		Source: &fakeSource{unit: testUnit()}, VMs: f, Users: users{},
		SessionKey: []byte("0123456789abcdef0123456789abcdef"),
		Node:       1, Role: func() unit.Role { return unit.RolePrimary },
	})
	if err != nil {
		t.Fatal(err)
	}
	api := &consoleAPI{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.mu.Lock()
		if r.URL.Path == "/api/v1/login" {
			api.logins++
		}
		refuse := api.refuseNext && strings.Contains(r.URL.Path, "/console/")
		if refuse {
			api.refuseNext = false
		}
		api.mu.Unlock()
		if refuse {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"not logged in"}`))
			return
		}
		s.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	// A client timeout shorter than the session: it bounds the handshake
	// only.
	hc := ts.Client()
	hc.Timeout = 2 * time.Second
	return apiclient.New(ts.URL, "admin", "admin", hc), api
}

func TestDialConsole(t *testing.T) {
	f := &consoleVMs{clientVMs: testClientVMs()}
	c, api := startConsoleAPI(t, f)
	ctx := t.Context()

	for _, kind := range []string{"serial", "vnc"} {
		t.Run(kind, func(t *testing.T) {
			conn, err := c.DialConsole(ctx, 1, kind)
			if err != nil {
				t.Fatalf("DialConsole: %v", err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			for _, line := range []string{"root\r", "uname -a\r"} {
				if _, err := conn.Write([]byte(line)); err != nil {
					t.Fatal(err)
				}
				want := kind + ":" + strings.ToUpper(line)
				got := make([]byte, len(want))
				if _, err := io.ReadFull(conn, got); err != nil || string(got) != want {
					t.Fatalf("read %q, %v; want %q", got, err, want)
				}
			}
		})
	}
	// The console outlives the client's Timeout: only the handshake is
	// bounded by it.
	t.Run("outlives the client timeout", func(t *testing.T) {
		conn, err := c.DialConsole(ctx, 1, "serial")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		time.Sleep(2500 * time.Millisecond)
		if _, err := conn.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len("serial:X"))
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != "serial:X" {
			t.Fatalf("read %q, %v", got, err)
		}
	})
	if want := []string{"1 serial", "1 vnc", "1 serial"}; !slices.Equal(f.dials, want) {
		t.Errorf("dials %v, want %v", f.dials, want)
	}

	t.Run("refusals", func(t *testing.T) {
		tests := []struct {
			id          int
			kind        string
			wantStatus  int
			wantAllowed []string
		}{
			{id: 9, kind: "serial", wantStatus: 404},
			{id: 3, kind: "serial", wantStatus: 409, wantAllowed: []string{"Start", "Config", "Export", "Boot From CD", "Remove", "Snapshot"}},
			{id: 2, kind: "vnc", wantStatus: 409, wantAllowed: []string{}},
		}
		for _, tc := range tests {
			conn, err := c.DialConsole(ctx, tc.id, tc.kind)
			var ae *apiclient.APIError
			if !errors.As(err, &ae) {
				if conn != nil {
					conn.Close()
				}
				t.Errorf("DialConsole(%d, %s) = %v, want an *APIError", tc.id, tc.kind, err)
				continue
			}
			if ae.StatusCode != tc.wantStatus || ae.Message == "" {
				t.Errorf("DialConsole(%d, %s): %v, want status %d with a message", tc.id, tc.kind, ae, tc.wantStatus)
			}
			if tc.wantAllowed != nil && !slices.Equal(ae.Allowed, tc.wantAllowed) {
				t.Errorf("DialConsole(%d, %s): allowed %q, want %q", tc.id, tc.kind, ae.Allowed, tc.wantAllowed)
			}
		}
		if _, err := c.DialConsole(ctx, 1, "spice"); err == nil || !strings.Contains(err.Error(), "want serial or vnc") {
			t.Errorf("DialConsole(spice) = %v, want a refusal naming the kinds", err)
		}
	})

	t.Run("expired session", func(t *testing.T) {
		api.mu.Lock()
		before := api.logins
		api.refuseNext = true
		api.mu.Unlock()
		conn, err := c.DialConsole(ctx, 1, "serial")
		if err != nil {
			t.Fatalf("DialConsole after the session expired: %v", err)
		}
		conn.Close()
		api.mu.Lock()
		defer api.mu.Unlock()
		if api.logins != before+1 {
			t.Errorf("%d logins after the session expired, want %d", api.logins, before+1)
		}
	})

	t.Run("unit closes", func(t *testing.T) {
		conn, err := c.DialConsole(ctx, 1, "serial")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte("bye")); err != nil { // the guest goes away
			t.Fatal(err)
		}
		if n, err := conn.Read(make([]byte, 16)); err != io.EOF {
			t.Errorf("read after the guest went away: %d, %v; want io.EOF", n, err)
		}
	})
}
