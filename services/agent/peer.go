package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/dyad-ha/dyad/services/network/probe"
	"github.com/dyad-ha/dyad/services/storage"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/vm"
)

// selfReport is what a PM tells the primary about itself.
type selfReport struct {
	Node         int             `json:"node"`
	BootID       string          `json:"boot_id"`
	ImageVersion string          `json:"image_version"`
	Addresses    []string        `json:"addresses"`
	Hardware     json.RawMessage `json:"hardware,omitempty"`
	Links        []unit.Link     `json:"links,omitempty"`
	// Pairings is the sender's view of its business ports' peers.
	Pairings []probe.Pairing `json:"pairings,omitempty"`
	// Storage is the sender's disks, volume groups and mirror legs.
	Storage *storage.Report `json:"storage,omitempty"`
	// VMs is the sender's QEMU processes.
	VMs *vm.NodeReport `json:"vms,omitempty"`
}

func (a *Agent) self() selfReport {
	r := selfReport{Node: a.cfg.Node, BootID: a.opt.BootID, ImageVersion: a.opt.Version}
	if a.cfg.Ibiz0.IsValid() {
		r.Addresses = append(r.Addresses, a.cfg.Ibiz0.String())
	}
	if a.hardware != nil {
		r.Hardware, _ = json.Marshal(a.hardware)
	}
	a.mu.Lock()
	r.Links = a.links
	a.mu.Unlock()
	r.Pairings = a.pairings(time.Now())
	if a.opt.Storage != nil {
		rep := a.opt.Storage.Report()
		r.Storage = &rep
	}
	if a.opt.VMs != nil {
		rep := a.opt.VMs.Report()
		r.VMs = &rep
	}
	return r
}

// servePeer starts the PM-to-PM API: mutual TLS with the unit CA, on every
// address of the PM so it is reachable over priv0 and, as a fallback, ibiz0.
func (a *Agent) servePeer(ctx context.Context) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/peer/v1/db/", http.StripPrefix("/peer/v1/db", a.db.PeerHandler()))
	mux.HandleFunc("GET /peer/v1/self", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(a.self())
	})
	mux.HandleFunc("POST /peer/v1/storage/volumes/{id}/outdate", a.serveOutdate)
	mux.HandleFunc("POST /peer/v1/power", a.servePower)
	mux.HandleFunc("POST /peer/v1/vms/{id}/{op}", a.serveVMOp)
	mux.HandleFunc("GET /peer/v1/vms/{id}/console/{kind}", a.serveVMConsole)
	mux.HandleFunc("GET /peer/v1/vms/{id}/serial-log", a.serveSerialLog)
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         a.ca.ServerConfig(a.leaf),
		ReadHeaderTimeout: 5 * time.Second,
	}
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", PeerPort))
	if err != nil {
		return nil, fmt.Errorf("peer API: %w", err)
	}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("peer API", "err", err)
		}
	}()
	return srv, nil
}

// fetchPeer reads the peer's self report over the first path that answers.
func (a *Agent) fetchPeer(ctx context.Context) (selfReport, error) {
	var errs []error
	for _, u := range a.peerURLs("peer/v1/self") {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		r, err := a.getJSON(ctx, u)
		cancel()
		if err == nil {
			return r, nil
		}
		errs = append(errs, err)
	}
	return selfReport{}, errors.Join(errs...)
}

func (a *Agent) getJSON(ctx context.Context, url string) (selfReport, error) {
	var r selfReport
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return r, err
	}
	resp, err := a.peerC.Do(req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("%s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil {
		return r, fmt.Errorf("%s: %w", url, err)
	}
	if r.Node != a.cfg.Peer() {
		return r, fmt.Errorf("%s answered as node %d", url, r.Node)
	}
	return r, nil
}
