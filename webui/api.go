package webui

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/gin-gonic/gin"
)

// healthReply is the body of GET /api/v1/health.
type healthReply struct {
	Status string    `json:"status"`
	PM     int       `json:"pm"`
	Role   unit.Role `json:"role"`
}

func (s *Server) health(c *gin.Context) {
	c.JSON(http.StatusOK, healthReply{Status: "ok", PM: s.cfg.Node, Role: s.cfg.Role()})
}

// currentUnit reads the unit and answers 500 itself when it cannot.
func (s *Server) currentUnit(c *gin.Context) (unit.Unit, bool) {
	u, err := s.cfg.Source.Unit(c.Request.Context())
	if err != nil {
		s.log.Error("webui: reading unit state", "err", err)
		apiError(c, http.StatusInternalServerError, "cannot read unit state: "+err.Error())
		return u, false
	}
	return u, true
}

func (s *Server) unit(c *gin.Context) {
	u, ok := s.currentUnit(c)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, unitReply(u))
}

// unitReply gives the unit's lists as [] rather than null, so that clients
// can iterate without a check, and drops any BMC password.
func unitReply(u unit.Unit) unit.Unit {
	u.PMs = scrubPMs(u.PMs)
	if u.Alerts == nil {
		u.Alerts = []unit.Alert{}
	}
	return u
}

func (s *Server) pms(c *gin.Context) {
	u, ok := s.currentUnit(c)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, scrubPMs(u.PMs))
}

func (s *Server) pm(c *gin.Context) {
	id, ok := pmID(c)
	if !ok {
		return
	}
	pm, err := s.cfg.Source.PM(c.Request.Context(), id)
	switch {
	case errors.Is(err, ErrNotFound):
		apiError(c, http.StatusNotFound, pmNotFound(id))
		return
	case err != nil:
		s.log.Error("webui: reading PM state", "pm", id, "err", err)
		apiError(c, http.StatusInternalServerError, "cannot read state of PM "+strconv.Itoa(id)+": "+err.Error())
		return
	}
	c.JSON(http.StatusOK, scrubPM(pm))
}

func (s *Server) alerts(c *gin.Context) {
	u, ok := s.currentUnit(c)
	if !ok {
		return
	}
	if u.Alerts == nil {
		u.Alerts = []unit.Alert{}
	}
	c.JSON(http.StatusOK, u.Alerts)
}

func (s *Server) networks(c *gin.Context) {
	nets, err := s.cfg.Source.Networks(c.Request.Context())
	if err != nil {
		s.log.Error("webui: reading networks", "err", err)
		apiError(c, http.StatusInternalServerError, "cannot read networks: "+err.Error())
		return
	}
	if nets == nil {
		nets = []unit.Network{}
	}
	c.JSON(http.StatusOK, nets)
}

// maxPatchBody bounds a PATCH body: a name and little else.
const maxPatchBody = 4 << 10

func (s *Server) renameNetwork(c *gin.Context) {
	raw := c.Param("id")
	id, err := strconv.Atoi(raw)
	if err != nil || id < 1 {
		apiError(c, http.StatusBadRequest, "invalid network id "+strconv.Quote(raw)+": want a positive integer")
		return
	}
	var body struct {
		Name *string `json:"name"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(c.Writer, c.Request.Body, maxPatchBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		apiError(c, http.StatusBadRequest, "invalid body: want {\"name\": \"...\"}: "+err.Error())
		return
	}
	if dec.More() {
		apiError(c, http.StatusBadRequest, "invalid body: trailing data after the object")
		return
	}
	if body.Name == nil {
		apiError(c, http.StatusBadRequest, "invalid body: missing \"name\"")
		return
	}
	n, err := s.cfg.Source.RenameNetwork(c.Request.Context(), id, *body.Name)
	switch {
	case errors.Is(err, ErrNotFound):
		apiError(c, http.StatusNotFound, "network "+strconv.Itoa(id)+" not found")
	case errors.Is(err, ErrInvalid):
		apiError(c, http.StatusBadRequest, err.Error())
	case err != nil:
		s.log.Error("webui: renaming network", "network", id, "err", err)
		apiError(c, http.StatusInternalServerError, "cannot rename network "+strconv.Itoa(id)+": "+err.Error())
	default:
		c.JSON(http.StatusOK, n)
	}
}

func (s *Server) fixNetwork(c *gin.Context) {
	raw := c.Param("id")
	id, err := strconv.Atoi(raw)
	if err != nil || id < 1 {
		apiError(c, http.StatusBadRequest, "invalid network id "+strconv.Quote(raw)+": want a positive integer")
		return
	}
	n, err := s.cfg.Source.FixNetwork(c.Request.Context(), id)
	switch {
	case errors.Is(err, ErrNotFound):
		apiError(c, http.StatusNotFound, "network "+strconv.Itoa(id)+" not found")
	case errors.Is(err, ErrConflict):
		apiError(c, http.StatusConflict, err.Error())
	case err != nil:
		s.log.Error("webui: fixing network", "network", id, "err", err)
		apiError(c, http.StatusInternalServerError, "cannot fix network "+strconv.Itoa(id)+": "+err.Error())
	default:
		c.JSON(http.StatusOK, n)
	}
}
