package apiclient

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/coder/websocket"
)

// DialConsole opens console kind ("serial" or "vnc") of VM id: the
// websocket /api/v1/vms/ID/console/KIND, as a net.Conn whose reads and
// writes are the console's bytes (binary messages). ctx bounds the
// handshake only; the console stays open until Close or until the unit
// ends it (the VM stopped), which reads see as io.EOF. A refusal is an
// *APIError: 404 for an unknown VM, 409 with Allowed when the VM's state
// has no console.
func (c *Client) DialConsole(ctx context.Context, id int, kind string) (net.Conn, error) {
	var opts websocket.DialOptions
	switch kind {
	case "serial":
	case "vnc":
		// The subprotocol noVNC asks for; the server accepts it or none.
		opts.Subprotocols = []string{"binary"}
	default:
		return nil, fmt.Errorf("console %q: want serial or vnc", kind)
	}
	path := vmPath(id) + "/console/" + kind
	// A http.Client Timeout bounds the handshake: websocket.Dial turns it
	// into a deadline on ctx instead of cutting the open console.
	opts.HTTPClient = c.hc
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		ck := c.session
		c.mu.Unlock()
		if ck == nil {
			var err error
			if ck, err = c.login(ctx); err != nil {
				return nil, err
			}
		}
		opts.HTTPHeader = http.Header{"Cookie": {(&http.Cookie{Name: ck.Name, Value: ck.Value}).String()}}
		ws, resp, err := websocket.Dial(ctx, c.base+path, &opts)
		if err == nil {
			return websocket.NetConn(context.WithoutCancel(ctx), ws, websocket.MessageBinary), nil
		}
		if resp == nil || resp.StatusCode == http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("GET %s: %w", path, err)
		}
		// websocket.Dial leaves the first KiB of a refusal to read: enough
		// for the API's error message.
		data, _ := io.ReadAll(resp.Body)
		ae := &APIError{StatusCode: resp.StatusCode, Message: errorMessage(data)}
		if resp.StatusCode == http.StatusConflict {
			ae.Allowed = allowedCommands(data)
		}
		if attempt == 0 && ae.StatusCode == http.StatusUnauthorized {
			// The session expired: log in again, once.
			c.mu.Lock()
			if c.session == ck {
				c.session = nil
			}
			c.mu.Unlock()
			continue
		}
		return nil, ae
	}
}
