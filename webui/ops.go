package webui

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/gin-gonic/gin"
)

// OpsSource runs the operator's commands on the PMs and on the whole unit
// (DESIGN.md §4). It is apart from Source so that a Source without them
// keeps compiling; Config.Ops may be nil, and the routes then answer 501.
//
// Errors: ErrNotFound for an unknown PM; ErrInvalid wrapped with the
// reason for a request it refuses (an unknown command, a bad BMC
// address); ErrConflict wrapped with the reason when the unit's state does
// not allow the command. A refused PM command is answered 409 with the
// commands the PM allows, read afresh from Source.PM.
type OpsSource interface {
	// PMCommand runs a PM command (unit.PMCommands) on PM id and returns
	// the PM as it is then. A Work On that would shut down VMs is refused
	// with ErrConflict unless args.Confirm.
	PMCommand(ctx context.Context, id int, cmd string, args unit.PMAction) (unit.PM, error)
	// UnitCommand runs a unit command (unit.UnitShutdown,
	// unit.UnitRollingReboot); it returns once the command has started.
	UnitCommand(ctx context.Context, cmd string, args unit.UnitAction) (unit.Unit, error)
	// SetBMC sets PM id's BMC, or removes it for an empty Addr, and
	// returns the PM (its BMC without the password).
	SetBMC(ctx context.Context, id int, b unit.BMC) (unit.PM, error)
}

// AuditLog keeps the operators' operations. Config.Audit may be nil: then
// nothing is audited and GET /api/v1/audit answers 501.
type AuditLog interface {
	// Append records r, assigning its Seq.
	Append(ctx context.Context, r unit.AuditRecord) error
	// List returns the newest limit records, newest first.
	List(ctx context.Context, limit int) ([]unit.AuditRecord, error)
}

// Audit list limits of GET /api/v1/audit?limit=N.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 1000
)

// Limits on a BMC body. They only keep nonsense away from the OpsSource,
// which checks what IPMI accepts (16-byte users, 20-byte passwords, ...).
const (
	maxBMCAddr       = 260 // a 253-byte host name and a port
	maxBMCCredential = 64
)

// isUnitCommand reports whether cmd is a command of POST
// /api/v1/unit/actions/:command; force-quorum has its own route.
func isUnitCommand(cmd string) bool {
	return cmd == unit.UnitShutdown || cmd == unit.UnitRollingReboot
}

// requireOps answers 501 on a server without an OpsSource. It comes after
// authentication, so a caller who is not logged in learns nothing.
func (s *Server) requireOps(c *gin.Context) {
	if s.cfg.Ops == nil {
		apiError(c, http.StatusNotImplemented, "unit operations not available on this unit")
	}
}

// opsRoutes registers the PM and unit commands and the BMC on g, the
// authenticated /api/v1 group.
func (s *Server) opsRoutes(g *gin.RouterGroup) {
	ops := g.Group("", s.requireOps)
	ops.POST("/pms/:id/actions/:command", s.pmCommand)
	// The router prefers the static /unit/actions/force-quorum route to
	// this one, so Force Quorum keeps its own handler and body.
	ops.POST("/unit/actions/:command", s.unitCommand)
	ops.PUT("/pms/:id/bmc", s.setBMC)
	g.GET("/audit", s.auditList)
}

// pmID reads the :id of a PM route; it answers 400 itself.
func pmID(c *gin.Context) (int, bool) {
	raw := c.Param("id")
	id, err := strconv.Atoi(raw)
	if err != nil || id < 1 {
		apiError(c, http.StatusBadRequest, "invalid PM id "+strconv.Quote(raw)+": want a positive integer")
		return 0, false
	}
	return id, true
}

func pmNotFound(id int) string { return "PM " + strconv.Itoa(id) + " not found" }

const pmActionShape = `{"confirm": true} (work-on) or nothing`

// parsePMAction decodes and checks the body of POST
// /api/v1/pms/:id/actions/:command; an empty body is no arguments.
// confirm is refused for a command other than work-on rather than
// ignored: whoever sends it believes it confirms something.
func parsePMAction(cmd string, body []byte) (unit.PMAction, error) {
	var req unit.PMAction
	if len(bytes.TrimSpace(body)) == 0 {
		return req, nil
	}
	if err := decodeStrict(body, &req, pmActionShape); err != nil {
		return unit.PMAction{}, err
	}
	if req.Confirm && cmd != unit.PMWorkOn {
		return unit.PMAction{}, fmt.Errorf("invalid body: %q applies to %s, not to %s", "confirm", unit.PMWorkOn, cmd)
	}
	return req, nil
}

const unitActionShape = `{"timeout_seconds": N} (shutdown) or nothing`

// parseUnitAction decodes and checks the body of POST
// /api/v1/unit/actions/:command; an empty body is no arguments.
func parseUnitAction(cmd string, body []byte) (unit.UnitAction, error) {
	var req unit.UnitAction
	if len(bytes.TrimSpace(body)) == 0 {
		return req, nil
	}
	if err := decodeStrict(body, &req, unitActionShape); err != nil {
		return unit.UnitAction{}, err
	}
	if req.TimeoutSeconds != 0 && cmd != unit.UnitShutdown {
		return unit.UnitAction{}, fmt.Errorf("invalid body: %q applies to %s, not to %s", "timeout_seconds", unit.UnitShutdown, cmd)
	}
	if req.TimeoutSeconds < 0 || req.TimeoutSeconds > maxShutdownS {
		return unit.UnitAction{}, fmt.Errorf("invalid timeout_seconds %d: want 1 to %d seconds, or none for the default", req.TimeoutSeconds, maxShutdownS)
	}
	return req, nil
}

const bmcShape = `{"addr": "HOST[:PORT]", "user": "...", "password": "..."} or {"addr": ""} to remove the BMC`

// parseBMC decodes and checks the body of PUT /api/v1/pms/:id/bmc. addr
// is required, so that a body that forgot it does not remove the BMC; an
// empty addr removes it and then takes no credentials. The OpsSource
// checks the address and what IPMI accepts.
func parseBMC(body []byte) (unit.BMC, error) {
	var req struct {
		Addr     *string `json:"addr"`
		User     string  `json:"user"`
		Password string  `json:"password"`
	}
	if err := decodeStrict(body, &req, bmcShape); err != nil {
		return unit.BMC{}, err
	}
	if req.Addr == nil {
		return unit.BMC{}, fmt.Errorf(`invalid body: missing field "addr"; want %s`, bmcShape)
	}
	b := unit.BMC{Addr: *req.Addr, User: req.User, Password: req.Password}
	if b.Addr == "" {
		if b.User != "" || b.Password != "" {
			return unit.BMC{}, errors.New(`invalid body: an empty "addr" removes the BMC and takes no user or password`)
		}
		return b, nil
	}
	switch {
	case len(b.Addr) > maxBMCAddr:
		return unit.BMC{}, fmt.Errorf("invalid addr: %d bytes, at most %d", len(b.Addr), maxBMCAddr)
	case !printableASCII(b.Addr) || strings.Contains(b.Addr, " "):
		return unit.BMC{}, errors.New("invalid addr: want HOST or HOST:PORT, without spaces or control characters")
	case b.User == "":
		return unit.BMC{}, errors.New(`invalid body: missing "user", the BMC's IPMI user`)
	case b.Password == "":
		// The password is write-only: a BMC set without one would have
		// none, not keep the old one.
		return unit.BMC{}, errors.New(`invalid body: missing "password", the BMC's IPMI password`)
	}
	for _, f := range []struct{ name, v string }{{"user", b.User}, {"password", b.Password}} {
		if len(f.v) > maxBMCCredential || !printableASCII(f.v) {
			// Never the value: it may be a password.
			return unit.BMC{}, fmt.Errorf("invalid %s: want 1 to %d printable ASCII characters", f.name, maxBMCCredential)
		}
	}
	return b, nil
}

func printableASCII(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// parseAuditLimit reads the limit query parameter of GET /api/v1/audit.
func parseAuditLimit(c *gin.Context) (int, error) {
	vals, ok := c.GetQueryArray("limit")
	if !ok {
		return defaultAuditLimit, nil
	}
	if len(vals) != 1 {
		return 0, errors.New("invalid limit: given more than once")
	}
	n, err := strconv.Atoi(vals[0])
	if err != nil || n < 1 || n > maxAuditLimit {
		return 0, fmt.Errorf("invalid limit %q: want 1 to %d records (default %d)", vals[0], maxAuditLimit, defaultAuditLimit)
	}
	return n, nil
}

func (s *Server) pmCommand(c *gin.Context) {
	id, ok := pmID(c)
	if !ok {
		return
	}
	cmd := c.Param("command")
	if !slices.Contains(unit.PMCommands(), cmd) {
		apiError(c, http.StatusBadRequest, "unknown PM command "+strconv.Quote(cmd)+": want one of "+strings.Join(unit.PMCommands(), ", "))
		return
	}
	body, ok := readBody(c)
	if !ok {
		return
	}
	args, err := parsePMAction(cmd, body)
	if err != nil {
		apiError(c, http.StatusBadRequest, err.Error())
		return
	}
	pm, err := s.cfg.Ops.PMCommand(c.Request.Context(), id, cmd, args)
	if errors.Is(err, ErrConflict) {
		s.pmRefused(c, id, err)
		return
	}
	if err != nil {
		s.sourceFailed(c, err, cmd+" PM "+strconv.Itoa(id), pmNotFound(id))
		return
	}
	s.log.Info("webui: PM command", "pm", id, "command", cmd, "confirm", args.Confirm, "user", c.GetString(userKey), "state", pm.State)
	c.JSON(http.StatusOK, scrubPM(pm))
}

// pmRefused answers a PM command the unit's state refused: 409 with what
// the PM allows now, read afresh because the refusal may be older than
// the state it was decided on. Without that list the answer is the bare
// error.
func (s *Server) pmRefused(c *gin.Context, id int, err error) {
	pm, perr := s.cfg.Source.PM(c.Request.Context(), id)
	if perr != nil {
		s.log.Error("webui: reading PM state after a refused command", "pm", id, "err", perr)
		apiError(c, http.StatusConflict, err.Error())
		return
	}
	allowed := pm.Allowed
	if allowed == nil {
		allowed = []string{}
	}
	c.AbortWithStatusJSON(http.StatusConflict, notAllowedReply{Error: err.Error(), State: string(pm.State), Allowed: allowed})
}

func (s *Server) unitCommand(c *gin.Context) {
	cmd := c.Param("command")
	if !isUnitCommand(cmd) {
		apiError(c, http.StatusBadRequest, "unknown unit command "+strconv.Quote(cmd)+": want shutdown, rolling-reboot or force-quorum")
		return
	}
	body, ok := readBody(c)
	if !ok {
		return
	}
	args, err := parseUnitAction(cmd, body)
	if err != nil {
		apiError(c, http.StatusBadRequest, err.Error())
		return
	}
	// Both commands stop every PM: the log says who asked.
	user := c.GetString(userKey)
	s.log.Warn("webui: unit command", "command", cmd, "timeout_seconds", args.TimeoutSeconds, "user", user, "client", c.ClientIP())
	u, err := s.cfg.Ops.UnitCommand(c.Request.Context(), cmd, args)
	if err != nil {
		s.sourceFailed(c, err, cmd+" the unit", "not found")
		return
	}
	c.JSON(http.StatusOK, unitReply(u))
}

func (s *Server) setBMC(c *gin.Context) {
	id, ok := pmID(c)
	if !ok {
		return
	}
	body, ok := readBody(c)
	if !ok {
		return
	}
	b, err := parseBMC(body)
	if err != nil {
		apiError(c, http.StatusBadRequest, err.Error())
		return
	}
	pm, err := s.cfg.Ops.SetBMC(c.Request.Context(), id, b)
	if err != nil {
		s.sourceFailed(c, err, "set the BMC of PM "+strconv.Itoa(id), pmNotFound(id))
		return
	}
	// The address and user only: the password never reaches a log.
	s.log.Info("webui: BMC set", "pm", id, "addr", b.Addr, "bmc_user", b.User, "user", c.GetString(userKey))
	c.JSON(http.StatusOK, scrubPM(pm))
}

func (s *Server) auditList(c *gin.Context) {
	if s.cfg.Audit == nil {
		apiError(c, http.StatusNotImplemented, "audit log not available on this unit")
		return
	}
	limit, err := parseAuditLimit(c)
	if err != nil {
		apiError(c, http.StatusBadRequest, err.Error())
		return
	}
	recs, err := s.cfg.Audit.List(c.Request.Context(), limit)
	if err != nil {
		s.log.Error("webui: reading the audit log", "err", err)
		apiError(c, http.StatusInternalServerError, "cannot read the audit log: "+err.Error())
		return
	}
	if recs == nil {
		recs = []unit.AuditRecord{}
	}
	c.JSON(http.StatusOK, recs)
}

// scrubPM drops a BMC password a source left in a PM: it is write-only,
// and an answer is seen by every operator and often logged.
func scrubPM(pm unit.PM) unit.PM {
	if pm.BMC != nil && pm.BMC.Password != "" {
		b := *pm.BMC
		b.Password = ""
		pm.BMC = &b
	}
	return pm
}

// scrubPMs is scrubPM for a list. It copies the list first: the source
// may share it.
func scrubPMs(pms []unit.PM) []unit.PM {
	if pms == nil {
		return []unit.PM{}
	}
	out := make([]unit.PM, len(pms))
	for i, pm := range pms {
		out[i] = scrubPM(pm)
	}
	return out
}
