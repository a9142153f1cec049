package apiclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"

	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/webui"
)

// forcer is a QuorumSource answering with its unit or its error.
type forcer struct {
	u   unit.Unit
	err error
}

func (f forcer) ForceQuorum(context.Context) (unit.Unit, error) { return f.u, f.err }

// bodies records the bodies of the requests to one path.
type bodies struct {
	mu   sync.Mutex
	path string
	got  []string
}

func (b *bodies) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == b.path {
			data, _ := io.ReadAll(r.Body)
			b.mu.Lock()
			b.got = append(b.got, r.Method+" "+string(data))
			b.mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(data))
		}
		h.ServeHTTP(w, r)
	})
}

func TestClientForceQuorum(t *testing.T) {
	forced := testUnit()
	forced.Quorum = unit.Quorum{Servers: []string{"10.99.0.200:7413"}, Verdict: "run", Reason: "an operator forced quorum on this PM", Forced: true}
	tests := []struct {
		name       string
		q          webui.QuorumSource // nil: the unit has no quorum control
		want       unit.Unit
		wantStatus int    // 0 for success
		wantMsg    string // the server's message, verbatim
	}{
		{name: "forced", q: forcer{u: forced}, want: forced},
		{name: "refused", q: forcer{err: fmt.Errorf("%w: the peer PM is heard: nothing to force", webui.ErrConflict)},
			wantStatus: 409, wantMsg: "conflict: the peer PM is heard: nothing to force"},
		{name: "failed", q: forcer{err: errors.New("disk full")}, wantStatus: 500, wantMsg: "cannot force quorum: disk full"},
		{name: "no quorum control", wantStatus: 501, wantMsg: "force quorum not available on this unit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := webui.New(webui.Config{
				Source: &fakeSource{unit: testUnit()}, Quorum: tt.q, Users: users{},
				SessionKey: []byte("0123456789abcdef0123456789abcdef"),
				Node:       1, Role: func() unit.Role { return unit.RolePrimary },
			})
			if err != nil {
				t.Fatal(err)
			}
			rec := &bodies{path: "/api/v1/unit/actions/force-quorum"}
			ts := httptest.NewServer(rec.wrap(s.Handler()))
			defer ts.Close()
			c := apiclient.New(ts.URL, "admin", "admin", ts.Client())

			u, err := c.ForceQuorum(t.Context())
			if want := []string{`POST {"confirm":true}`}; !reflect.DeepEqual(rec.got, want) {
				t.Errorf("the server got %q, want %q", rec.got, want)
			}
			if tt.wantStatus == 0 {
				if err != nil || !reflect.DeepEqual(u, tt.want) {
					t.Errorf("ForceQuorum = %+v, %v\nwant %+v", u, err, tt.want)
				}
				return
			}
			var apiErr *apiclient.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T), want *APIError", err, err)
			}
			if apiErr.StatusCode != tt.wantStatus || apiErr.Message != tt.wantMsg {
				t.Errorf("APIError = %d %q, want %d %q", apiErr.StatusCode, apiErr.Message, tt.wantStatus, tt.wantMsg)
			}
		})
	}
}
