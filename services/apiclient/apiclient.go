// Package apiclient is a Go client of the Dyad REST API (/api/v1), used by
// dyadctl and by tests that drive a unit from outside.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/dyad-ha/dyad/services/unit"
)

// maxResponse bounds how much of a response the client reads.
const maxResponse = 16 << 20

// APIError is an error answer of the API.
type APIError struct {
	StatusCode int    // HTTP status, e.g. 404
	Message    string // the server's "error" message, or the body when it sent none
	// Allowed are the commands the VM's or PM's state allows, from a 409
	// refusing a VM or PM command; nil for any other error, empty when no
	// command is allowed in that state.
	Allowed []string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("dyad API: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Health is the answer of GET /api/v1/health.
type Health struct {
	Status string    `json:"status"`
	PM     int       `json:"pm"`
	Role   unit.Role `json:"role"`
}

// Client calls the API of one unit. It logs in on first use and sends the
// session cookie afterwards: a session is checked with one MAC, a password
// costs a bcrypt hash on every request. An expired session is renewed once.
// It is safe for concurrent use.
type Client struct {
	base     string
	user     string
	password string
	hc       *http.Client

	mu      sync.Mutex
	session *http.Cookie
}

// sessionCookie is the name of the console session cookie.
const sessionCookie = "dyad_session"

// New returns a client of the API at baseURL (e.g. "http://10.99.0.10").
// A nil hc means http.DefaultClient; set its Timeout to bound calls that the
// caller's context does not.
func New(baseURL, user, password string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), user: user, password: password, hc: hc}
}

// Login logs in with POST /api/v1/login and keeps the session for the
// following calls.
func (c *Client) Login(ctx context.Context) error {
	_, err := c.login(ctx)
	return err
}

func (c *Client) login(ctx context.Context) (*http.Cookie, error) {
	body, err := json.Marshal(map[string]string{"user": c.user, "password": c.password})
	if err != nil {
		return nil, fmt.Errorf("encoding login: %w", err)
	}
	resp, err := c.send(ctx, http.MethodPost, "/api/v1/login", body, nil, nil)
	if err != nil {
		return nil, err
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			c.mu.Lock()
			c.session = &http.Cookie{Name: ck.Name, Value: ck.Value}
			c.mu.Unlock()
			return ck, nil
		}
	}
	return nil, fmt.Errorf("POST /api/v1/login: the answer carries no %s cookie", sessionCookie)
}

// authed runs a request with the session, logging in first when there is
// none and once more when the server no longer accepts it.
func (c *Client) authed(ctx context.Context, method, path string, out any) error {
	return c.authedBody(ctx, method, path, nil, out)
}

func (c *Client) authedBody(ctx context.Context, method, path string, body []byte, out any) error {
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		ck := c.session
		c.mu.Unlock()
		if ck == nil {
			var err error
			if ck, err = c.login(ctx); err != nil {
				return err
			}
		}
		_, err := c.send(ctx, method, path, body, ck, out)
		var ae *APIError
		if attempt == 0 && errors.As(err, &ae) && ae.StatusCode == http.StatusUnauthorized {
			c.mu.Lock()
			if c.session == ck {
				c.session = nil
			}
			c.mu.Unlock()
			continue
		}
		return err
	}
}

// Unit returns the whole unit.
func (c *Client) Unit(ctx context.Context) (unit.Unit, error) {
	var u unit.Unit
	err := c.authed(ctx, http.MethodGet, "/api/v1/unit", &u)
	return u, err
}

// PMs returns the unit's PMs.
func (c *Client) PMs(ctx context.Context) ([]unit.PM, error) {
	var pms []unit.PM
	err := c.authed(ctx, http.MethodGet, "/api/v1/pms", &pms)
	return pms, err
}

// PM returns one PM with its hardware inventory. An unknown id is an
// *APIError with StatusCode 404.
func (c *Client) PM(ctx context.Context, id int) (unit.PM, error) {
	var pm unit.PM
	err := c.authed(ctx, http.MethodGet, pmPath(id), &pm)
	return pm, err
}

// Alerts returns the unit's active alerts.
func (c *Client) Alerts(ctx context.Context) ([]unit.Alert, error) {
	var alerts []unit.Alert
	err := c.authed(ctx, http.MethodGet, "/api/v1/alerts", &alerts)
	return alerts, err
}

// Networks returns the unit's shared networks.
func (c *Client) Networks(ctx context.Context) ([]unit.Network, error) {
	var nets []unit.Network
	err := c.authed(ctx, http.MethodGet, "/api/v1/networks", &nets)
	return nets, err
}

// RenameNetwork renames shared network id.
func (c *Client) RenameNetwork(ctx context.Context, id int, name string) (unit.Network, error) {
	body, err := json.Marshal(map[string]string{"name": name})
	if err != nil {
		return unit.Network{}, err
	}
	var n unit.Network
	err = c.authedBody(ctx, http.MethodPatch, "/api/v1/networks/"+strconv.Itoa(id), body, &n)
	return n, err
}

// FixNetwork pairs shared network id again after its cabling was fixed; an
// *APIError with StatusCode 409 says what problem remains.
func (c *Client) FixNetwork(ctx context.Context, id int) (unit.Network, error) {
	var n unit.Network
	err := c.authedBody(ctx, http.MethodPost, "/api/v1/networks/"+strconv.Itoa(id)+"/actions/fix", nil, &n)
	return n, err
}

// Volumes returns the unit's volumes.
func (c *Client) Volumes(ctx context.Context) ([]unit.Volume, error) {
	var vols []unit.Volume
	err := c.authed(ctx, http.MethodGet, "/api/v1/volumes", &vols)
	return vols, err
}

// Volume returns one volume. An unknown id is an *APIError with StatusCode
// 404.
func (c *Client) Volume(ctx context.Context, id int) (unit.Volume, error) {
	var v unit.Volume
	err := c.authed(ctx, http.MethodGet, volumePath(id), &v)
	return v, err
}

// CreateVolume creates a volume mirrored on both PMs. It returns once the
// unit has recorded it; the volume then goes through Creating and Syncing.
func (c *Client) CreateVolume(ctx context.Context, spec unit.VolumeSpec) (unit.Volume, error) {
	body, err := json.Marshal(spec)
	if err != nil {
		return unit.Volume{}, err
	}
	var v unit.Volume
	err = c.authedBody(ctx, http.MethodPost, "/api/v1/volumes", body, &v)
	return v, err
}

// GrowVolume grows volume id to sizeBytes on both PMs.
func (c *Client) GrowVolume(ctx context.Context, id int, sizeBytes int64) (unit.Volume, error) {
	body, err := json.Marshal(map[string]int64{"size_bytes": sizeBytes})
	if err != nil {
		return unit.Volume{}, err
	}
	var v unit.Volume
	err = c.authedBody(ctx, http.MethodPost, volumePath(id)+"/actions/grow", body, &v)
	return v, err
}

// DeleteVolume starts deleting volume id and its data on both PMs; the
// volume shows as Deleting until both legs are gone.
func (c *Client) DeleteVolume(ctx context.Context, id int) error {
	return c.authed(ctx, http.MethodDelete, volumePath(id), nil)
}

// ResolveSplitBrain ends a split brain of volume id, keeping the data of PM
// survivorPM; the other side is kept as a snapshot.
func (c *Client) ResolveSplitBrain(ctx context.Context, id, survivorPM int) (unit.Volume, error) {
	body, err := json.Marshal(map[string]int{"survivor": survivorPM})
	if err != nil {
		return unit.Volume{}, err
	}
	var v unit.Volume
	err = c.authedBody(ctx, http.MethodPost, volumePath(id)+"/actions/resolve", body, &v)
	return v, err
}

// DeleteSnapshot deletes snapshot name of volume id.
func (c *Client) DeleteSnapshot(ctx context.Context, id int, name string) (unit.Volume, error) {
	var v unit.Volume
	err := c.authed(ctx, http.MethodDelete, volumePath(id)+"/snapshots/"+url.PathEscape(name), &v)
	return v, err
}

// StorageGroups returns the unit's storage groups.
func (c *Client) StorageGroups(ctx context.Context) ([]unit.StorageGroup, error) {
	var groups []unit.StorageGroup
	err := c.authed(ctx, http.MethodGet, "/api/v1/storage-groups", &groups)
	return groups, err
}

// Disks returns the whole disks of both PMs.
func (c *Client) Disks(ctx context.Context) ([]unit.Disk, error) {
	var disks []unit.Disk
	err := c.authed(ctx, http.MethodGet, "/api/v1/disks", &disks)
	return disks, err
}

// ActivateDisk makes disk (a kernel name such as "vdb") of PM pm a member of
// storage group group (0: the unit's default). A disk that holds data is
// refused unless erase is true.
func (c *Client) ActivateDisk(ctx context.Context, pm int, disk string, group int, erase bool) (unit.Disk, error) {
	body, err := json.Marshal(struct {
		PM    int    `json:"pm"`
		Disk  string `json:"disk"`
		Group int    `json:"group,omitempty"`
		Erase bool   `json:"erase"`
	}{pm, disk, group, erase})
	if err != nil {
		return unit.Disk{}, err
	}
	var d unit.Disk
	err = c.authedBody(ctx, http.MethodPost, "/api/v1/disks/actions/activate", body, &d)
	return d, err
}

func volumePath(id int) string { return "/api/v1/volumes/" + strconv.Itoa(id) }

// Health returns the answering PM's health; it needs no credentials.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	_, err := c.send(ctx, http.MethodGet, "/api/v1/health", nil, nil, &h)
	return h, err
}

// send sends one request with the session cookie ck (when not nil) and
// decodes a 2xx JSON answer into out (when not nil).
func (c *Client) send(ctx context.Context, method, path string, body []byte, ck *http.Cookie, out any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if ck != nil {
		req.AddCookie(ck)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading answer: %w", method, path, err)
	}
	if len(data) > maxResponse {
		return nil, fmt.Errorf("%s %s: answer larger than %d bytes", method, path, maxResponse)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &APIError{StatusCode: resp.StatusCode, Message: errorMessage(data)}
		if resp.StatusCode == http.StatusConflict {
			ae.Allowed = allowedCommands(data)
		}
		return resp, ae
	}
	if out == nil {
		return resp, nil
	}
	if raw, ok := out.(*[]byte); ok { // a body that is not JSON, such as a serial log
		*raw = data
		return resp, nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return resp, fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
	}
	return resp, nil
}

// allowedCommands extracts the "allowed" list of a 409 answer; nil when
// the answer has none.
func allowedCommands(data []byte) []string {
	var e struct {
		Allowed []string `json:"allowed"`
	}
	if json.Unmarshal(data, &e) != nil {
		return nil
	}
	return e.Allowed
}

// errorMessage extracts {"error":"..."} or, from something that is not the
// API (a proxy, a wrong port), the start of its body.
func errorMessage(data []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return e.Error
	}
	msg := strings.TrimSpace(string(data))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		msg = "no error message"
	}
	return msg
}
