// Package webui serves the unit's browser console and its REST API
// (/api/v1/...). It runs on the primary PM and reads the unit's state through
// a Source; sessions are stateless signed cookies so they stay valid when the
// other PM, holding the same key, takes over the management IP.
package webui

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/gin-gonic/gin"
)

// ErrNotFound is what Source.PM returns (wrapped or not) for an id the unit
// does not have; the API answers it with 404.
var ErrNotFound = errors.New("not found")

// ErrBadCredentials is what Users.Authenticate returns (wrapped or not) for an
// unknown user or a wrong password; the API answers it with 401. Any other
// error is a failure of the user database and is answered with 500.
var ErrBadCredentials = errors.New("invalid user or password")

// Source gives the unit's current state.
type Source interface {
	Unit(ctx context.Context) (unit.Unit, error)
	// PM returns one PM with its Hardware filled, or ErrNotFound.
	PM(ctx context.Context, id int) (unit.PM, error)
	// Networks returns the shared networks.
	Networks(ctx context.Context) ([]unit.Network, error)
	// RenameNetwork renames a shared network; ErrNotFound for an unknown
	// id, ErrInvalid (wrapped with the reason) for a name it refuses.
	RenameNetwork(ctx context.Context, id int, name string) (unit.Network, error)
	// FixNetwork pairs a shared network with a problem again; ErrConflict
	// (wrapped with the reason) when the problem remains.
	FixNetwork(ctx context.Context, id int) (unit.Network, error)
}

// ErrConflict is what a Source returns (wrapped, with the reason) when the
// state of the unit does not allow the request; the API answers 409.
var ErrConflict = errors.New("conflict")

// ErrInvalid is what a Source returns (wrapped, with the reason) for a
// request it refuses; the API answers 400 with the message.
var ErrInvalid = errors.New("invalid request")

// Users checks console and API credentials.
type Users interface {
	// Authenticate returns nil for valid credentials and ErrBadCredentials for
	// an unknown user or a wrong password.
	Authenticate(ctx context.Context, user, password string) error
}

// Config configures a Server.
type Config struct {
	Source Source
	// Storage serves the volumes, storage groups and disks; nil makes
	// their routes answer 503 (the agent has no storage yet).
	Storage StorageSource
	// VMs is nil on a server without virtual machines.
	VMs VMSource
	// Quorum is nil on a server without quorum control: Force Quorum then
	// answers 501.
	Quorum QuorumSource
	// Ops is nil on a server without PM and unit commands: their routes
	// then answer 501.
	Ops OpsSource
	// Audit is nil on a server that keeps no audit log: nothing is
	// recorded and GET /api/v1/audit answers 501.
	Audit AuditLog
	Users Users
	// SessionKey signs session cookies. Both PMs must use the same key (derived
	// from the unit key) so sessions survive a failover. At least 16 bytes.
	SessionKey []byte
	// Node is this PM's number, reported by /api/v1/health.
	Node int
	// Role reports this PM's current role for /api/v1/health.
	Role func() unit.Role
	Log  *slog.Logger
}

// Server is the console and API server. It is safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	engine *gin.Engine
	pages  *template.Template
	now    func() time.Time
}

// New checks cfg and builds the server.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Source == nil:
		return nil, errors.New("webui: Config.Source is nil")
	case cfg.Users == nil:
		return nil, errors.New("webui: Config.Users is nil")
	case len(cfg.SessionKey) < minSessionKeyLen:
		return nil, fmt.Errorf("webui: Config.SessionKey has %d bytes, need at least %d", len(cfg.SessionKey), minSessionKeyLen)
	case cfg.Role == nil:
		return nil, errors.New("webui: Config.Role is nil")
	case cfg.Node < 1:
		return nil, fmt.Errorf("webui: Config.Node is %d, need a PM number >= 1", cfg.Node)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pages, err := parsePages()
	if err != nil {
		return nil, fmt.Errorf("webui: %w", err)
	}
	s := &Server{
		cfg:   cfg,
		log:   log,
		pages: pages,
		now:   time.Now,
	}
	s.engine, err = s.routes()
	if err != nil {
		return nil, fmt.Errorf("webui: %w", err)
	}
	return s, nil
}

// Handler returns the HTTP handler serving the console and the API.
func (s *Server) Handler() http.Handler { return s.engine }

func (s *Server) routes() (*gin.Engine, error) {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.RedirectTrailingSlash = false
	e.RedirectFixedPath = false
	e.Use(s.logRequests, gin.CustomRecoveryWithWriter(nilWriter{}, s.recovered), securityHeaders,
		refuseCrossOrigin(http.NewCrossOriginProtection()))

	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		return nil, err
	}
	// Each asset is routed by name: a file server on the folder would also
	// list it.
	for _, name := range []string{"style.css", "dashboard.js"} {
		e.StaticFileFS("/static/"+name, name, http.FS(static))
	}
	e.GET("/", s.dashboard)
	e.GET("/login", s.loginPage)

	api := e.Group("/api/v1", noStore)
	api.GET("/health", s.health)
	// Logins and logouts are audited with the user they name, whether
	// they succeed or not.
	api.POST("/login", s.audit, s.login)
	api.POST("/logout", s.audit, s.logout)
	// Every change an authenticated user asks for is audited, including
	// those refused further on (no storage, no VMs, a bad body).
	authed := api.Group("", s.requireAuth, s.audit)
	authed.GET("/unit", s.unit)
	authed.POST("/unit/actions/force-quorum", s.forceQuorum)
	authed.GET("/pms", s.pms)
	authed.GET("/pms/:id", s.pm)
	authed.GET("/alerts", s.alerts)
	authed.GET("/networks", s.networks)
	authed.PATCH("/networks/:id", s.renameNetwork)
	authed.POST("/networks/:id/actions/fix", s.fixNetwork)
	// Authentication comes first so that a caller who is not logged in
	// learns nothing, not even whether the unit has storage.
	storage := authed.Group("", s.requireStorage)
	storage.GET("/volumes", s.volumes)
	storage.POST("/volumes", s.createVolume)
	storage.GET("/volumes/:id", s.volume)
	storage.DELETE("/volumes/:id", s.deleteVolume)
	storage.POST("/volumes/:id/actions/grow", s.growVolume)
	storage.POST("/volumes/:id/actions/resolve", s.resolveSplitBrain)
	storage.DELETE("/volumes/:id/snapshots/:name", s.deleteSnapshot)
	storage.GET("/storage-groups", s.storageGroups)
	storage.GET("/disks", s.disks)
	storage.POST("/disks/actions/activate", s.activateDisk)
	s.opsRoutes(authed)
	vms := authed.Group("", s.requireVMs)
	s.vmRoutes(vms)
	s.consoleRoutes(e, vms)

	e.NoRoute(func(c *gin.Context) {
		if isAPI(c.Request) {
			apiError(c, http.StatusNotFound, "no such API endpoint: "+c.Request.Method+" "+c.Request.URL.Path)
			return
		}
		c.String(http.StatusNotFound, "404 page not found\n")
	})
	e.NoMethod(func(c *gin.Context) {
		if isAPI(c.Request) {
			apiError(c, http.StatusMethodNotAllowed, "method "+c.Request.Method+" not allowed on "+c.Request.URL.Path)
			return
		}
		c.String(http.StatusMethodNotAllowed, "405 method not allowed\n")
	})
	return e, nil
}

func isAPI(r *http.Request) bool {
	return r.URL.Path == "/api" || strings.HasPrefix(r.URL.Path, "/api/")
}

// nilWriter discards gin's own panic dump; recovered logs it with slog instead.
type nilWriter struct{}

func (nilWriter) Write(p []byte) (int, error) { return len(p), nil }

func (s *Server) recovered(c *gin.Context, err any) {
	s.log.Error("webui: panic in handler", "method", c.Request.Method, "path", c.Request.URL.Path, "panic", err)
	if isAPI(c.Request) {
		apiError(c, http.StatusInternalServerError, "internal error")
		return
	}
	c.AbortWithStatus(http.StatusInternalServerError)
}

func (s *Server) logRequests(c *gin.Context) {
	start := time.Now()
	c.Next()
	s.log.Debug("webui: request",
		"method", c.Request.Method,
		"path", c.Request.URL.Path,
		"status", c.Writer.Status(),
		"duration", time.Since(start),
		"client", c.ClientIP())
}

// securityHeaders keeps the console self-contained: no external fetches, no
// framing, no inline script.
func securityHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}

// refuseCrossOrigin answers 403 to a state-changing request another site's
// page made the browser send. The SameSite session cookie does not cover the
// login and logout posts: they need no cookie, so a foreign page could log
// the operator out, or into a session of its choosing. Requests carrying no
// Sec-Fetch-Site or Origin header (curl, dyadctl) are not browser requests
// and pass.
func refuseCrossOrigin(p *http.CrossOriginProtection) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := p.Check(c.Request); err != nil {
			if isAPI(c.Request) {
				apiError(c, http.StatusForbidden, "cross-origin request refused: "+err.Error())
				return
			}
			c.AbortWithStatus(http.StatusForbidden)
		}
	}
}

func noStore(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
}

func apiError(c *gin.Context, status int, msg string) {
	c.AbortWithStatusJSON(status, gin.H{"error": msg})
}
