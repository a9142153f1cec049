package webui

import (
	"bytes"
	"context"
	"errors"
	"net/http"

	"github.com/dyad-ha/dyad/services/unit"
	"github.com/gin-gonic/gin"
)

// QuorumSource gives an operator the last word on a PM that may not run
// the unit's VMs alone. It is apart from Source so that a Source without
// quorum control keeps compiling; Config.Quorum may be nil.
type QuorumSource interface {
	// ForceQuorum lets this PM run the unit's VMs alone although no quorum
	// server grants it the lease, and returns the unit as it is then.
	// ErrConflict (wrapped with the reason) when it refuses, such as when
	// the peer is heard.
	ForceQuorum(ctx context.Context) (unit.Unit, error)
}

// forceQuorumRisk says what a Force Quorum puts at stake. The dashboard
// asks with these words before it sends the confirmation.
const forceQuorumRisk = "Force Quorum lets this PM run the unit's VMs alone without proof that its peer is down. " +
	"If the peer is running them, both PMs write the same volumes (split brain) and one side's writes must later be discarded."

// errNotConfirmed answers a Force Quorum without confirmation: whoever
// sends one learns the risk before learning how to confirm.
var errNotConfirmed = errors.New(forceQuorumRisk + ` Send {"confirm": true} to proceed.`)

const forceQuorumShape = `{"confirm": true}`

// parseForceQuorum checks the body of POST
// /api/v1/unit/actions/force-quorum: exactly {"confirm": true}. An empty
// body, a missing confirm or false is errNotConfirmed, so that whoever
// tries without reading the documentation learns the risk first.
func parseForceQuorum(body []byte) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errNotConfirmed
	}
	var req struct {
		Confirm *bool `json:"confirm"`
	}
	if err := decodeStrict(body, &req, forceQuorumShape); err != nil {
		return err
	}
	if req.Confirm == nil || !*req.Confirm {
		return errNotConfirmed
	}
	return nil
}

func (s *Server) forceQuorum(c *gin.Context) {
	if s.cfg.Quorum == nil {
		apiError(c, http.StatusNotImplemented, "force quorum not available on this unit")
		return
	}
	body, ok := readBody(c)
	if !ok {
		return
	}
	if err := parseForceQuorum(body); err != nil {
		apiError(c, http.StatusBadRequest, err.Error())
		return
	}
	// An operator overrides split-brain protection: the log says who.
	user := c.GetString(userKey)
	s.log.Warn("webui: Force Quorum requested", "user", user, "client", c.ClientIP())
	u, err := s.cfg.Quorum.ForceQuorum(c.Request.Context())
	if err != nil {
		s.sourceFailed(c, err, "force quorum", "not found")
		return
	}
	s.log.Warn("webui: Force Quorum done", "user", user, "verdict", u.Quorum.Verdict, "reason", u.Quorum.Reason)
	c.JSON(http.StatusOK, unitReply(u))
}
