package apiclient

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/dyad-ha/dyad/services/unit"
)

// PMCommand runs a PM command (unit.PMCommands: work-on, finalize,
// shutdown, power-off, power-on, reset-device) on PM id and returns the PM
// as it is then. A command the PM's state does not allow is an *APIError
// with StatusCode 409 whose Allowed lists the commands it does allow. A
// Work On that would shut down VMs which cannot move to the other PM is
// refused the same way, with Work On still allowed and the VMs named in
// the message, until it is sent again with args.Confirm.
func (c *Client) PMCommand(ctx context.Context, id int, cmd string, args unit.PMAction) (unit.PM, error) {
	body, err := json.Marshal(args)
	if err != nil {
		return unit.PM{}, err
	}
	var pm unit.PM
	err = c.authedBody(ctx, http.MethodPost, pmPath(id)+"/actions/"+url.PathEscape(cmd), body, &pm)
	return pm, err
}

// UnitCommand runs a unit command (unit.UnitShutdown, which shuts down
// every VM and then both PMs, or unit.UnitRollingReboot) and returns the
// unit once the command has started. A unit whose state does not allow it
// answers an *APIError with StatusCode 409.
func (c *Client) UnitCommand(ctx context.Context, cmd string, args unit.UnitAction) (unit.Unit, error) {
	body, err := json.Marshal(args)
	if err != nil {
		return unit.Unit{}, err
	}
	var u unit.Unit
	err = c.authedBody(ctx, http.MethodPost, "/api/v1/unit/actions/"+url.PathEscape(cmd), body, &u)
	return u, err
}

// SetBMC sets the BMC through which the unit powers PM id on and off, or
// removes it when b.Addr is empty, and returns the PM; its BMC never shows
// the password.
func (c *Client) SetBMC(ctx context.Context, id int, b unit.BMC) (unit.PM, error) {
	body, err := json.Marshal(b)
	if err != nil {
		return unit.PM{}, err
	}
	var pm unit.PM
	err = c.authedBody(ctx, http.MethodPut, pmPath(id)+"/bmc", body, &pm)
	return pm, err
}

// Audit returns the newest limit records of the audit log, newest first;
// limit 0 asks for the server's default (100). The server answers at most
// 1000.
func (c *Client) Audit(ctx context.Context, limit int) ([]unit.AuditRecord, error) {
	path := "/api/v1/audit"
	if limit != 0 {
		path += "?" + url.Values{"limit": {strconv.Itoa(limit)}}.Encode()
	}
	var recs []unit.AuditRecord
	err := c.authed(ctx, http.MethodGet, path, &recs)
	return recs, err
}

func pmPath(id int) string { return "/api/v1/pms/" + strconv.Itoa(id) }
