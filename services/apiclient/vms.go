package apiclient

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/dyad-ha/dyad/services/unit"
)

// VMs returns the unit's virtual machines.
func (c *Client) VMs(ctx context.Context) ([]unit.VM, error) {
	var vms []unit.VM
	err := c.authed(ctx, http.MethodGet, "/api/v1/vms", &vms)
	return vms, err
}

// VM returns one virtual machine. An unknown id is an *APIError with
// StatusCode 404.
func (c *Client) VM(ctx context.Context, id int) (unit.VM, error) {
	var v unit.VM
	err := c.authed(ctx, http.MethodGet, vmPath(id), &v)
	return v, err
}

// CreateVM creates a VM. It returns once the unit has recorded it: the VM
// is Busy while its new volumes are created and synced, then Stopped (or
// started, with req.Start). A request that breaks the resource rules is an
// *APIError with StatusCode 400 listing every problem.
func (c *Client) CreateVM(ctx context.Context, req unit.VMCreate) (unit.VM, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return unit.VM{}, err
	}
	var v unit.VM
	err = c.authedBody(ctx, http.MethodPost, "/api/v1/vms", body, &v)
	return v, err
}

// ConfigVM re-provisions stopped VM id.
func (c *Client) ConfigVM(ctx context.Context, id int, req unit.VMConfig) (unit.VM, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return unit.VM{}, err
	}
	var v unit.VM
	err = c.authedBody(ctx, http.MethodPost, vmPath(id)+"/config", body, &v)
	return v, err
}

// VMCommand runs a command on VM id, named by its slug in the API: start,
// shutdown, poweroff, dump, boot-from-cd, migrate or reset-device. A
// command the VM's state does not allow is an *APIError with StatusCode 409
// whose Allowed lists the commands it does allow. Shutdown and migrate
// return once started; the VM's State and Migration tell how they end.
func (c *Client) VMCommand(ctx context.Context, id int, slug string, args unit.VMAction) (unit.VM, error) {
	body, err := json.Marshal(args)
	if err != nil {
		return unit.VM{}, err
	}
	var v unit.VM
	err = c.authedBody(ctx, http.MethodPost, vmPath(id)+"/actions/"+url.PathEscape(slug), body, &v)
	return v, err
}

// RemoveVM removes VM id with its boot volume; its other volumes too when
// deleteData, else they stay in the unit, unattached.
func (c *Client) RemoveVM(ctx context.Context, id int, deleteData bool) error {
	q := url.Values{"delete_data": {strconv.FormatBool(deleteData)}}
	return c.authed(ctx, http.MethodDelete, vmPath(id)+"?"+q.Encode(), nil)
}

// SerialLog returns the newest output of VM id's serial console (at most
// 1 MiB), as the guest wrote it.
func (c *Client) SerialLog(ctx context.Context, id int) ([]byte, error) {
	var b []byte
	err := c.authed(ctx, http.MethodGet, vmPath(id)+"/serial-log", &b)
	return b, err
}

func vmPath(id int) string { return "/api/v1/vms/" + strconv.Itoa(id) }
