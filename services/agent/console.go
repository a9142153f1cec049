package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/dyad-ha/dyad/services/alerts"
	"github.com/dyad-ha/dyad/services/store"
	"github.com/dyad-ha/dyad/services/unit"
	"github.com/dyad-ha/dyad/services/unitca"
	"github.com/dyad-ha/dyad/webui"
)

// ConsolePort is where the primary serves the console on the management IP.
const ConsolePort = 80

type consoleServer struct {
	srv *http.Server
}

func (c *consoleServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c.srv.Shutdown(ctx)
}

func (a *Agent) startConsole(ip netip.Addr) (*consoleServer, error) {
	ui, err := webui.New(webui.Config{
		Source:     a,
		Users:      users{a.db},
		Storage:    a.storageSource(),
		VMs:        a.vmSource(),
		Quorum:     a,
		Ops:        a,
		Audit:      auditLog{a},
		SessionKey: unitca.SessionKey(a.cfg.UnitKey),
		Node:       a.cfg.Node,
		Role:       a.Role,
		Log:        a.log,
	})
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(ip.String(), fmt.Sprint(ConsolePort))
	var ln net.Listener
	// The address was just added; the kernel may still be settling it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("listen on the management address: %w", err)
	}
	srv := &http.Server{Handler: ui.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("console", "err", err)
		}
	}()
	a.log.Info("console serving", "url", "http://"+addr+"/")
	return &consoleServer{srv: srv}, nil
}

// users checks console logins against the unit database.
type users struct{ db *store.Store }

func (u users) Authenticate(ctx context.Context, user, password string) error {
	err := u.db.Authenticate(ctx, user, password)
	if errors.Is(err, store.ErrBadCredentials) {
		return webui.ErrBadCredentials
	}
	return err
}

// Unit implements webui.Source.
func (a *Agent) Unit(ctx context.Context) (unit.Unit, error) {
	pms, err := a.pms(false)
	if err != nil {
		return unit.Unit{}, err
	}
	a.mu.Lock()
	u := unit.Unit{
		Name: a.cfg.Unit, Epoch: a.epoch,
		ImageVersion: a.opt.Version, PMs: pms, Time: time.Now().UTC(),
	}
	if p := a.mgmt4(); p.IsValid() {
		u.ManagementIP = p.Addr().String()
	}
	if a.role == unit.RolePrimary {
		u.Primary = a.cfg.Node
	}
	a.mu.Unlock()
	u.ReplicationPath = a.replicationPath()
	u.Quorum = a.quorumView()
	if _, uo, err := a.opsRecords(); err == nil {
		u.Operation = uo.describe()
	}
	u.Alerts = append(alerts.Derive(pms, u.Time), quorumAlerts(u.Quorum, a.cfg.Node, u.Time)...)
	if nets, err := a.sharedNetworks(); err == nil {
		for _, n := range nets {
			if n.Problem != "" {
				u.Alerts = append(u.Alerts, unit.Alert{
					ID: "shared-network/" + strconv.Itoa(n.ID), Severity: unit.SevWarning, Source: "network",
					Message: fmt.Sprintf("Shared network %s: %s. Fix the cabling, then Fix: dyadctl network fix %d", n.Name, n.Problem, n.ID),
					Since:   u.Time,
				})
			}
		}
	}
	if _, sv, err := a.storageView(); err == nil {
		u.Alerts = append(u.Alerts, sv.Alerts...)
	}
	if recs, vms, err := a.vmView(); err == nil && a.opt.VMs != nil {
		u.Alerts = append(u.Alerts, vmAlerts(vms, u.Time)...)
		u.Alerts = append(u.Alerts, admissionAlerts(recs, a.hosts(), u.Time)...)
	}
	if u.ReplicationPath == unit.PathIbiz0 {
		u.Alerts = append(u.Alerts, unit.Alert{
			ID: "replication-on-ibiz0", Severity: unit.SevWarning, Source: "unit",
			Message: "Replication and migration traffic falls back to ibiz0: the private links (priv0 and sync links) are down",
			Since:   u.Time,
		})
	}
	if !a.opt.DataPersistent {
		u.Alerts = append([]unit.Alert{{
			ID: "no-data-partition/" + fmt.Sprintf("pm%d", a.cfg.Node), Severity: unit.SevCritical,
			Source:  fmt.Sprintf("pm%d", a.cfg.Node),
			Message: "no data partition: the unit database lives in memory on this PM and is lost at reboot",
			Since:   a.start,
		}}, u.Alerts...)
	}
	if u.Alerts == nil {
		u.Alerts = []unit.Alert{}
	}
	return u, nil
}

// PM implements webui.Source.
func (a *Agent) PM(ctx context.Context, id int) (unit.PM, error) {
	pms, err := a.pms(true)
	if err != nil {
		return unit.PM{}, err
	}
	for _, pm := range pms {
		if pm.ID == id {
			return pm, nil
		}
	}
	return unit.PM{}, fmt.Errorf("pm %d: %w", id, webui.ErrNotFound)
}

// pms merges the stored records with the live view from heartbeats.
func (a *Agent) pms(withHardware bool) ([]unit.PM, error) {
	recs, err := a.records()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	v := a.mon.View(now)
	a.mu.Lock()
	role := a.role
	a.mu.Unlock()

	var out []unit.PM
	for _, id := range []int{1, 2} {
		rec := recs[id]
		pm := unit.PM{
			ID: id, Name: fmt.Sprintf("pm%d", id), State: rec.State, Activity: rec.Activity,
			Role: unit.RoleNone, BootID: rec.BootID, ImageVersion: rec.ImageVersion,
			Addresses: rec.Addresses, LastSeen: rec.Changed,
		}
		if pm.State == "" {
			pm.State, pm.Activity = unit.PMOff, "not seen yet"
		}
		switch {
		case id == a.cfg.Node:
			pm.State, pm.Activity, pm.Role = unit.PMRunning, "", role
			pm.Paths = v.Paths
			pm.UptimeSeconds = a.opt.Uptime().Seconds()
			pm.BootID, pm.ImageVersion, pm.LastSeen = a.opt.BootID, a.opt.Version, now
			pm.DatabaseSeq = a.db.Position().Seq
			a.mu.Lock()
			pm.Links = a.links
			a.mu.Unlock()
		case v.Seen:
			pm.State, pm.Activity, pm.Role = v.Peer.State, "", v.Peer.Role
			pm.UptimeSeconds, pm.BootID, pm.ImageVersion = v.Peer.Uptime, v.Peer.BootID, v.Peer.Version
			pm.LastSeen, pm.DatabaseSeq = now, v.Peer.DBSeq
			a.mu.Lock()
			if a.peerReport.BootID == v.Peer.BootID {
				pm.Links = a.peerReport.Links
			}
			a.mu.Unlock()
			for name, up := range v.Peer.Paths {
				pm.Paths = append(pm.Paths, unit.Path{Name: name, Up: up})
			}
			sort.Slice(pm.Paths, func(i, j int) bool { return pm.Paths[i].Name < pm.Paths[j].Name })
		default:
			for _, p := range v.Paths {
				pm.Paths = append(pm.Paths, unit.Path{Name: p.Name, Up: false, LastSeen: p.LastSeen})
			}
		}
		if withHardware && len(rec.Hardware) > 0 {
			pm.Hardware = json.RawMessage(rec.Hardware)
		}
		if withHardware && id == a.cfg.Node && a.hardware != nil {
			pm.Hardware = a.hardware
		}
		out = append(out, pm)
	}
	a.opsView(out)
	return out, nil
}
