package apiclient

import (
	"context"
	"net/http"

	"github.com/dyad-ha/dyad/services/unit"
)

// ForceQuorum lets the primary run the unit's VMs alone although no quorum
// server grants it the lease, and returns the unit as it is then. If the
// peer is in fact running them, both PMs write the same volumes (split
// brain): the caller must have the operator's confirmation, which this
// sends. A refusal (the peer is heard, nothing waits) is an *APIError with
// StatusCode 409; a unit without quorum control answers 501.
func (c *Client) ForceQuorum(ctx context.Context) (unit.Unit, error) {
	var u unit.Unit
	err := c.authedBody(ctx, http.MethodPost, "/api/v1/unit/actions/force-quorum", []byte(`{"confirm":true}`), &u)
	return u, err
}
