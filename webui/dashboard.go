package webui

import (
	"context"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/gin-gonic/gin"
)

//go:embed assets
var assets embed.FS

func parsePages() (*template.Template, error) {
	t, err := template.New("pages").Funcs(template.FuncMap{
		"uptime":     unit.FormatUptime,
		"token":      classToken,
		"primary":    unit.Unit.PrimaryName,
		"pathsOf":    displayPaths,
		"formatTime": formatTime,
		"bytes":      unit.FormatBytes,
		"volState":   unit.Volume.StateText,
		"qServers":   quorumServers,
		"qVerdict":   unit.Quorum.VerdictText,
		"qHolder":    unit.Quorum.HolderText,
		"pmState":    unit.PM.StateText,
		"pmCommand":  pmCommandLabel,
		"okStatus":   okStatus,
	}).ParseFS(assets, "assets/templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("parsing page templates: %w", err)
	}
	return t, nil
}

type dashboardPage struct {
	Unit unit.Unit
	Err  string
	// Storage is nil when the server has no StorageSource: the page then
	// has no storage section.
	Storage *storageView
	// VMs is nil when the server has no VMSource: the page then has no VM
	// section.
	VMs *vmView
	// ForceQuorum: the server has a QuorumSource, so the quorum section
	// offers Force Quorum while the verdict is "wait".
	ForceQuorum bool
	// QuorumRisk is what the Force Quorum button asks the operator to
	// accept.
	QuorumRisk string
	// Ops: the server has an OpsSource, so the page offers the PM and
	// unit commands.
	Ops bool
	// Audit is nil when the server keeps no audit log: the page then has
	// no audit section.
	Audit *auditView
}

// dashboardAudit is how many audit records the dashboard shows.
const dashboardAudit = 20

// auditView is the audit section of the dashboard: the newest records.
type auditView struct {
	Records []unit.AuditRecord
	Err     string
}

// vmView is the VM section of the dashboard.
type vmView struct {
	VMs []unit.VM
	Err string
}

// storageView is the storage section of the dashboard.
type storageView struct {
	Volumes []unit.Volume
	Groups  []unit.StorageGroup
	Err     string
}

type loginPageData struct {
	Error string
}

func (s *Server) dashboard(c *gin.Context) {
	ok, err := s.loggedIn(c)
	if err != nil {
		s.log.Error("webui: checking credentials", "err", err)
		c.String(http.StatusInternalServerError, "cannot check credentials\n")
		return
	}
	if !ok {
		c.Redirect(http.StatusSeeOther, "/login")
		return
	}
	c.Header("Cache-Control", "no-store")
	page := dashboardPage{ForceQuorum: s.cfg.Quorum != nil, QuorumRisk: forceQuorumRisk, Ops: s.cfg.Ops != nil}
	status := http.StatusOK
	page.Unit, err = s.cfg.Source.Unit(c.Request.Context())
	if err != nil {
		s.log.Error("webui: reading unit state", "err", err)
		page.Err = "cannot read unit state: " + err.Error()
		status = http.StatusInternalServerError
	}
	if s.cfg.VMs != nil {
		page.VMs = s.vmView(c.Request.Context())
	}
	if s.cfg.Storage != nil {
		page.Storage = s.storageView(c.Request.Context())
	}
	if s.cfg.Audit != nil {
		page.Audit = s.auditView(c.Request.Context())
	}
	s.render(c, status, "dashboard.html", page)
}

// storageView reads the storage section. A failure shows in the section
// only: the rest of the page is still worth seeing.
func (s *Server) storageView(ctx context.Context) *storageView {
	v := &storageView{}
	var err error
	if v.Volumes, err = s.cfg.Storage.Volumes(ctx); err == nil {
		v.Groups, err = s.cfg.Storage.StorageGroups(ctx)
	}
	if err != nil {
		s.log.Error("webui: reading storage state", "err", err)
		v.Err = "cannot read storage state: " + err.Error()
	}
	return v
}

// vmView reads the VM section; like the storage section, a failure shows
// in the section only.
func (s *Server) vmView(ctx context.Context) *vmView {
	vms, err := s.cfg.VMs.VMs(ctx)
	if err != nil {
		s.log.Error("webui: reading VMs", "err", err)
		return &vmView{Err: "cannot read VMs: " + err.Error()}
	}
	return &vmView{VMs: vms}
}

// auditView reads the audit section; like the storage section, a failure
// shows in the section only.
func (s *Server) auditView(ctx context.Context) *auditView {
	recs, err := s.cfg.Audit.List(ctx, dashboardAudit)
	if err != nil {
		s.log.Error("webui: reading the audit log", "err", err)
		return &auditView{Err: "cannot read the audit log: " + err.Error()}
	}
	return &auditView{Records: recs}
}

func (s *Server) loginPage(c *gin.Context) {
	if ok, _ := s.loggedIn(c); ok {
		c.Redirect(http.StatusSeeOther, "/")
		return
	}
	msg := c.Query("error")
	if len(msg) > 200 {
		msg = msg[:200]
	}
	s.render(c, http.StatusOK, "login.html", loginPageData{Error: msg})
}

// render executes a page into memory first so a template error becomes a 500
// instead of a half-written page.
func (s *Server) render(c *gin.Context, status int, name string, data any) {
	var b strings.Builder
	if err := s.pages.ExecuteTemplate(&b, name, data); err != nil {
		s.log.Error("webui: rendering page", "page", name, "err", err)
		c.String(http.StatusInternalServerError, "cannot render page\n")
		return
	}
	c.Data(status, "text/html; charset=utf-8", []byte(b.String()))
}

// classToken turns a state like "running (in Maintenance)" into a CSS class
// suffix like "running-in-maintenance".
func classToken(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
			continue
		}
		dash = true
	}
	return b.String()
}

// displayPaths lists priv0 and ibiz0 first, always, so a missing path shows
// as down rather than vanishing; other paths (sync links) follow.
func displayPaths(paths []unit.Path) []unit.Path {
	out := []unit.Path{{Name: unit.PathPriv0}, {Name: unit.PathIbiz0}}
	for _, p := range paths {
		switch p.Name {
		case unit.PathPriv0:
			out[0] = p
		case unit.PathIbiz0:
			out[1] = p
		default:
			out = append(out, p)
		}
	}
	return out
}

// quorumServers lists the quorum servers; without any the unit has no
// lease to decide a partition, which the operator should see in words.
func quorumServers(q unit.Quorum) string {
	if len(q.Servers) == 0 {
		return "none configured"
	}
	return strings.Join(q.Servers, ", ")
}

// pmCommandLabel names a PM command (an API slug) as the Avance manual
// does, for a button.
func pmCommandLabel(cmd string) string {
	switch cmd {
	case unit.PMWorkOn:
		return "Work On"
	case unit.PMFinalize:
		return "Finalize"
	case unit.PMShutdown:
		return "Shutdown"
	case unit.PMPowerOff:
		return "Power Off"
	case unit.PMPowerOn:
		return "Power On"
	case unit.PMResetDevice:
		return "Reset Device"
	}
	return cmd
}

// okStatus reports whether an audited request succeeded (a redirect is
// the success of a form post).
func okStatus(status int) bool { return status >= 200 && status <= 399 }

// formatTime shows times in UTC: the two PMs and the operator may sit in
// different zones, and the logs are in UTC.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}
