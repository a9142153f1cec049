package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/dyad-ha/dyad/services/storage"
	"github.com/dyad-ha/dyad/services/vm"
	"github.com/dyad-ha/dyad/webui"
)

// startMigration records a live migration of VM id to PM to (0: the
// peer) and runs it in the background; the VM's Migration tells how it
// ends.
func (a *Agent) startMigration(ctx context.Context, id, to int) error {
	self, peer := a.cfg.Node, a.cfg.Peer()
	if !a.mon.View(time.Now()).Seen {
		return fmt.Errorf("%w: PM %d is not running; there is nowhere to migrate to", webui.ErrConflict, peer)
	}
	var from int
	a.mu.Lock()
	busy := a.migrations[id]
	a.migrations[id] = true
	a.mu.Unlock()
	if busy {
		return fmt.Errorf("%w: VM %d is migrating already", webui.ErrConflict, id)
	}
	err := a.updateVM(ctx, id, func(r *vm.Record) error {
		if to == 0 {
			to = 3 - r.Node
		}
		if to != self && to != peer || to == r.Node {
			return fmt.Errorf("%w: migrate VM %s to PM %d: it runs on PM %d; the other PM is %d", webui.ErrInvalid, r.Name, to, r.Node, 3-r.Node)
		}
		if r.Migration.Active() {
			return fmt.Errorf("%w: VM %s is migrating already", webui.ErrConflict, r.Name)
		}
		from = r.Node
		r.Migration = &vm.Migration{From: r.Node, To: to, Status: vm.MigrationPreparing, Started: time.Now().UTC()}
		return nil
	})
	if err != nil {
		a.endMigration(id)
		return err
	}
	go func() {
		defer a.endMigration(id)
		a.migrate(id, from, to)
	}()
	return nil
}

func (a *Agent) endMigration(id int) {
	a.mu.Lock()
	delete(a.migrations, id)
	a.mu.Unlock()
}

// migrate runs on the primary: both legs writable (dual-primary), an
// incoming QEMU on the target, QMP migration on the source, then the VM's
// record moves to the target and dual-primary ends once the source has
// let go. On any failure the VM keeps running on the source.
func (a *Agent) migrate(id, from, to int) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	log := a.log.With("vm", id, "from", from, "to", to)
	fail := func(err error) {
		log.Error("live migration failed; the VM keeps running on the source", "err", err)
		a.callNode(context.Background(), to, id, "abort-incoming", nil, nil)
		a.updateVM(context.Background(), id, func(r *vm.Record) error {
			if r.Migration != nil && r.Migration.Status != vm.MigrationCompleted {
				r.Migration.Status, r.Migration.Error, r.Migration.Finished = vm.MigrationFailed, err.Error(), time.Now().UTC()
			}
			return nil
		})
	}
	log.Info("live migration: making the volumes writable on both PMs")
	if err := a.waitLegs(ctx, id, time.Now(), func(roles map[int]string) bool { return roles[from] == "Primary" && roles[to] == "Primary" }); err != nil {
		fail(fmt.Errorf("the volumes did not become writable on both PMs: %w", err))
		return
	}
	var prep struct {
		URI string `json:"uri"`
	}
	if err := a.callNode(ctx, to, id, "incoming", nil, &prep); err != nil {
		fail(fmt.Errorf("starting the target QEMU on PM %d: %w", to, err))
		return
	}
	a.updateVM(ctx, id, func(r *vm.Record) error {
		if r.Migration != nil {
			r.Migration.Status = vm.MigrationRunning
		}
		return nil
	})
	var st migrateResult
	if err := a.callNode(ctx, from, id, "migrate", migrateRequest{URI: prep.URI}, &st); err != nil {
		fail(err)
		return
	}
	log.Info("live migration: the guest runs on the target", "total_ms", st.TotalMs, "downtime_ms", st.DowntimeMs)
	err := a.updateVM(ctx, id, func(r *vm.Record) error {
		r.Node = to
		if r.Migration != nil {
			r.Migration.TotalMs, r.Migration.DowntimeMs = st.TotalMs, st.DowntimeMs
		}
		return nil
	})
	if err != nil {
		log.Error("recording the migrated VM", "err", err)
		return
	}
	// Dual-primary ends only once the source's QEMU has quit and its legs
	// are read-only again.
	if err := a.waitLegs(ctx, id, time.Now(), func(roles map[int]string) bool { return roles[from] != "Primary" }); err != nil {
		log.Warn("the source kept its legs writable", "err", err)
	}
	a.updateVM(context.Background(), id, func(r *vm.Record) error {
		if r.Migration != nil {
			r.Migration.Status, r.Migration.Finished = vm.MigrationCompleted, time.Now().UTC()
		}
		return nil
	})
	log.Info("live migration completed")
}

// waitLegs waits until ok holds for the roles of every volume of VM id
// (PM -> DRBD role), as both PMs report them in storage rounds begun after
// since: an older report predates the change being waited for.
func (a *Agent) waitLegs(ctx context.Context, id int, since time.Time, ok func(roles map[int]string) bool) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		recs, err := a.vmRecords()
		if err != nil {
			return err
		}
		i := slices.IndexFunc(recs, func(r vm.Record) bool { return r.ID == id })
		if i < 0 {
			return fmt.Errorf("VM %d: %w", id, webui.ErrNotFound)
		}
		reports := map[int]*storage.Report{}
		self := a.opt.Storage.Report()
		reports[a.cfg.Node] = &self
		if pr, err := a.fetchPeer(ctx); err == nil && pr.Storage != nil {
			reports[a.cfg.Peer()] = pr.Storage
		}
		all := len(reports) == 2
		for _, r := range reports {
			all = all && r.At.After(since)
		}
		for _, ref := range recs[i].Volumes {
			roles := map[int]string{}
			for n, r := range reports {
				if l, found := r.Leg(ref.ID); found {
					roles[n] = l.Role
				}
			}
			all = all && ok(roles)
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

type migrateRequest struct {
	URI string `json:"uri"`
}

type migrateResult struct {
	TotalMs    int64 `json:"total_ms"`
	DowntimeMs int64 `json:"downtime_ms"`
}

// callNode runs a VM operation on PM node: here directly, on the peer
// over the peer API.
func (a *Agent) callNode(ctx context.Context, node, id int, op string, in, out any) error {
	// Here or there, the operation takes and gives JSON, as on the wire.
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	if node == a.cfg.Node {
		res, err := a.nodeOp(ctx, id, op, body)
		if err != nil || out == nil {
			return err
		}
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, out)
	}
	var errs []error
	for _, u := range a.peerURLs("peer/v1/vms/" + strconv.Itoa(id) + "/" + op) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return err
		}
		resp, err := a.peerLong.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("PM %d: %s", node, bytes.TrimSpace(b))
		}
		if out != nil {
			return json.Unmarshal(b, out)
		}
		return nil
	}
	return fmt.Errorf("PM %d unreachable: %w", node, errors.Join(errs...))
}

// nodeOp is one VM operation on this PM, for the primary's orchestration.
func (a *Agent) nodeOp(ctx context.Context, id int, op string, in []byte) (any, error) {
	recs, err := a.vmRecords()
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(recs, func(r vm.Record) bool { return r.ID == id })
	if i < 0 {
		return nil, fmt.Errorf("VM %d is not in this PM's unit database", id)
	}
	switch op {
	case "incoming":
		uri, err := a.opt.VMs.PrepareIncoming(ctx, recs[i], a.vmDesired(recs), a.migrationListen(a.cfg.Node, id))
		if err != nil {
			return nil, err
		}
		return map[string]string{"uri": uri}, nil
	case "abort-incoming":
		a.opt.VMs.AbortIncoming(id)
		return nil, nil
	case "migrate":
		var req migrateRequest
		if err := json.Unmarshal(in, &req); err != nil {
			return nil, fmt.Errorf("migrate request: %w", err)
		}
		st, err := a.opt.VMs.Migrate(ctx, id, req.URI, vm.MigrateOptions{BandwidthBytes: vm.MigrationBandwidth, DowntimeLimit: vm.MigrationDowntime})
		if err != nil {
			return nil, err
		}
		return migrateResult{TotalMs: st.TotalTime.Milliseconds(), DowntimeMs: st.Downtime.Milliseconds()}, nil
	}
	return nil, fmt.Errorf("unknown VM operation %q", op)
}

// serveVMOp answers the primary's VM operations on this PM.
func (a *Agent) serveVMOp(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || a.opt.VMs == nil {
		http.Error(w, "no such VM", http.StatusNotFound)
		return
	}
	in, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	res, err := a.nodeOp(r.Context(), id, r.PathValue("op"), in)
	if err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(res)
}

// serveVMConsole hands a console of a VM running here to the primary's
// console proxy: the HTTP connection becomes the console's byte stream.
func (a *Agent) serveVMConsole(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || a.opt.VMs == nil {
		http.Error(w, "no such VM", http.StatusNotFound)
		return
	}
	c, err := a.opt.VMs.DialConsole(r.Context(), id, r.PathValue("kind"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		c.Close()
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: dyad-console\r\n\r\n")
	if err := brw.Flush(); err != nil {
		c.Close()
		conn.Close()
		return
	}
	splice(conn, brw.Reader, c)
}

// splice copies both ways until either side ends.
func splice(conn net.Conn, r io.Reader, c net.Conn) {
	done := make(chan struct{}, 2)
	go func() { io.Copy(c, r); done <- struct{}{} }()
	go func() { io.Copy(conn, c); done <- struct{}{} }()
	<-done
	conn.Close()
	c.Close()
}

// dialPeerConsole opens a console of a VM running on the peer.
func (a *Agent) dialPeerConsole(ctx context.Context, id int, kind string) (net.Conn, error) {
	var errs []error
	for _, u := range a.peerURLs(fmt.Sprintf("peer/v1/vms/%d/console/%s", id, kind)) {
		req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "dyad-console")
		resp, err := a.peerLong.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			return nil, fmt.Errorf("%w: PM %d: %s", webui.ErrConflict, a.cfg.Peer(), bytes.TrimSpace(b))
		}
		rwc, ok := resp.Body.(io.ReadWriteCloser)
		if !ok {
			resp.Body.Close()
			return nil, errors.New("peer console: the connection cannot be taken over")
		}
		return &streamConn{ReadWriteCloser: rwc}, nil
	}
	return nil, fmt.Errorf("%w: the VM's PM is unreachable: %w", webui.ErrConflict, errors.Join(errs...))
}

// streamConn is an upgraded HTTP connection as a net.Conn; deadlines are
// not supported (the console proxy does not use them).
type streamConn struct {
	io.ReadWriteCloser
}

func (streamConn) LocalAddr() net.Addr                { return streamAddr{} }
func (streamConn) RemoteAddr() net.Addr               { return streamAddr{} }
func (streamConn) SetDeadline(t time.Time) error      { return nil }
func (streamConn) SetReadDeadline(t time.Time) error  { return nil }
func (streamConn) SetWriteDeadline(t time.Time) error { return nil }

type streamAddr struct{}

func (streamAddr) Network() string { return "dyad-peer" }
func (streamAddr) String() string  { return "peer" }

// serveSerialLog answers the serial log of a VM that ran here.
func (a *Agent) serveSerialLog(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || a.opt.VMs == nil {
		http.Error(w, "no such VM", http.StatusNotFound)
		return
	}
	b, err := a.opt.VMs.SerialLog(id)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(b)
}

func (a *Agent) peerSerialLog(ctx context.Context, id int) ([]byte, error) {
	var errs []error
	for _, u := range a.peerURLs(fmt.Sprintf("peer/v1/vms/%d/serial-log", id)) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := a.peerC.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 2<<20))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("PM %d: %s", a.cfg.Peer(), resp.Status)
		}
		return b, err
	}
	return nil, fmt.Errorf("%w: the VM's PM is unreachable: %w", webui.ErrConflict, errors.Join(errs...))
}
