package webui

import (
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
	if u.PMs == nil {
		u.PMs = []unit.PM{}
	}
	if u.Alerts == nil {
		u.Alerts = []unit.Alert{}
	}
	c.JSON(http.StatusOK, u)
}

func (s *Server) pms(c *gin.Context) {
	u, ok := s.currentUnit(c)
	if !ok {
		return
	}
	if u.PMs == nil {
		u.PMs = []unit.PM{}
	}
	c.JSON(http.StatusOK, u.PMs)
}

func (s *Server) pm(c *gin.Context) {
	raw := c.Param("id")
	id, err := strconv.Atoi(raw)
	if err != nil || id < 1 {
		apiError(c, http.StatusBadRequest, "invalid PM id "+strconv.Quote(raw)+": want a positive integer")
		return
	}
	pm, err := s.cfg.Source.PM(c.Request.Context(), id)
	switch {
	case errors.Is(err, ErrNotFound):
		apiError(c, http.StatusNotFound, "PM "+strconv.Itoa(id)+" not found")
		return
	case err != nil:
		s.log.Error("webui: reading PM state", "pm", id, "err", err)
		apiError(c, http.StatusInternalServerError, "cannot read state of PM "+strconv.Itoa(id)+": "+err.Error())
		return
	}
	c.JSON(http.StatusOK, pm)
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
