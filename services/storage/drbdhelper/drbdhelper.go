// Package drbdhelper carries the DRBD kernel module's usermode helper calls
// to the agent. The kernel runs the helper (/bin/dyad-drbd-helper) for
// events such as "the peer is gone, may I outdate it?" (fence-peer) and
// waits for its exit code; the helper knows nothing itself, so it asks the
// agent over a unix socket and exits with the answer.
//
// What the DRBD 8.4 kernel module passes (drbd_nl.c, drbd_khelper and
// conn_khelper):
//
//	argv: <helper> <cmd> minor-<N>      device commands (drbd_khelper)
//	      <helper> <cmd> <resource>     fence-peer, unfence-peer (conn_khelper)
//	env:  HOME=/ TERM=linux PATH=/sbin:/usr/sbin:/bin:/usr/bin
//	      DRBD_PEER_AF=ipv4|ipv6|ssocks DRBD_PEER_ADDRESS=<addr>
//	      (the last two only once the connection has addresses; else empty)
//
// The kernel does not set DRBD_RESOURCE, DRBD_MINOR or DRBD_VOLUME; drbdadm
// does when it runs handlers from a configuration file, so ParseCall takes
// them when present.
//
// The protocol is one JSON request line per connection and one JSON reply
// line, {"exit": N}.
package drbdhelper

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SocketPath is where the agent listens for helper calls.
const SocketPath = "/run/dyad/drbd-helper.sock"

// MaxMessage bounds a request or reply line, newline included.
const MaxMessage = 64 << 10

// Helper commands of the DRBD 8.4 kernel module.
const (
	CmdFencePeer          = "fence-peer"   // resource; exit 3..7 (see the Fence* codes)
	CmdUnfencePeer        = "unfence-peer" // resource; after a resync that left both UpToDate
	CmdSplitBrain         = "split-brain"  // detected and not resolved automatically; connection dropped
	CmdInitialSplitBrain  = "initial-split-brain"
	CmdBeforeResyncTarget = "before-resync-target" // non-zero exit drops the connection
	CmdAfterResyncTarget  = "after-resync-target"
	CmdBeforeResyncSource = "before-resync-source" // non-zero exit other than 3 drops the connection
	CmdLocalIOError       = "local-io-error"       // with on-io-error call-local-io-error
	CmdPriOnInconDegr     = "pri-on-incon-degr"    // Primary with no UpToDate disk anywhere
	CmdPriLostAfterSB     = "pri-lost-after-sb"    // Primary could not give up its role after a split brain
	CmdPriLost            = "pri-lost"             // Primary is to become SyncTarget (rr-conflict call-pri-lost)
	CmdOutOfSync          = "out-of-sync"          // online verify found blocks that differ
)

// fence-peer exit codes the kernel understands (drbd_nl.c,
// conn_try_outdate_peer). Any other code means "helper broken": the peer's
// disk state stays unknown and, with resource-and-stonith fencing, I/O
// stays frozen.
const (
	FencePeerInconsistent = 3 // the peer's disk is Inconsistent or worse
	FencePeerOutdated     = 4 // the peer was (or already is) Outdated
	FencePeerUnreachable  = 5 // the peer is down; taken as Outdated only if our disk is UpToDate
	FencePeerPrimary      = 6 // the peer is Primary: the kernel outdates our disk
	FencePeerStonithed    = 7 // the peer was powered off
)

// knownCmd reports the 8.4 kernel's commands; DRBD 9 adds others (quorum-lost,
// disconnected, ...), which this protocol refuses until it is taught them.
func knownCmd(cmd string) bool {
	switch cmd {
	case CmdFencePeer, CmdUnfencePeer, CmdSplitBrain, CmdInitialSplitBrain,
		CmdBeforeResyncTarget, CmdAfterResyncTarget, CmdBeforeResyncSource,
		CmdLocalIOError, CmdPriOnInconDegr, CmdPriLostAfterSB, CmdPriLost, CmdOutOfSync:
		return true
	}
	return false
}

// Timeout is how long the helper waits for the agent's answer to cmd, and
// how long the agent's handler has. The kernel waits for the helper without
// a limit, blocking the resource's state changes meanwhile: fence-peer may
// take as long as it needs to reach the peer or prove it dead, the others
// only report.
func Timeout(cmd string) time.Duration {
	if cmd == CmdFencePeer {
		return 60 * time.Second
	}
	return 10 * time.Second
}

// Call is one helper invocation.
type Call struct {
	Cmd string `json:"cmd"`
	// Arg is the kernel's argument as given: "minor-N" or a resource name.
	Arg string `json:"arg"`
	// Resource is the resource name, "" when unknown (device commands
	// name only the minor).
	Resource string `json:"resource,omitempty"`
	// Minor is the device minor, -1 when unknown (connection commands
	// name only the resource).
	Minor int `json:"minor"`
	// Env holds the DRBD_* environment variables.
	Env map[string]string `json:"env,omitempty"`
}

const (
	maxName   = 128     // resource names are short ("r3"); DRBD's own limit is similar
	maxMinor  = 1 << 20 // the kernel's MINORMASK
	maxEnv    = 32
	maxEnvVal = 1024
)

// ParseCall builds a Call from the helper's arguments (without the program
// name, i.e. os.Args[1:]) and environment (os.Environ()).
func ParseCall(args, env []string) (Call, error) {
	if len(args) != 2 {
		return Call{}, fmt.Errorf("want 2 arguments (command and minor-N or resource), got %d", len(args))
	}
	c := Call{Cmd: args[0], Arg: args[1], Minor: -1}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "DRBD_") {
			continue // the kernel passes empty strings for unset slots
		}
		if c.Env == nil {
			c.Env = make(map[string]string)
		}
		c.Env[k] = v
	}
	if m, ok := strings.CutPrefix(c.Arg, "minor-"); ok {
		n, err := parseMinor(m)
		if err != nil {
			return Call{}, fmt.Errorf("argument %q: %w", c.Arg, err)
		}
		c.Minor = n
		c.Resource = c.Env["DRBD_RESOURCE"]
	} else {
		c.Resource = c.Arg
		if m, ok := c.Env["DRBD_MINOR"]; ok {
			if n, err := parseMinor(m); err == nil {
				c.Minor = n
			}
		}
	}
	if err := c.Validate(); err != nil {
		return Call{}, err
	}
	return c, nil
}

func parseMinor(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n >= maxMinor || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("minor %q is not a number in 0..%d", s, maxMinor-1)
	}
	return n, nil
}

// Validate checks c as the agent receives it from an untrusted socket peer.
func (c Call) Validate() error {
	if !knownCmd(c.Cmd) {
		return fmt.Errorf("unknown helper command %q", c.Cmd)
	}
	if err := checkName("argument", c.Arg); err != nil {
		return err
	}
	if c.Resource != "" {
		if err := checkName("resource", c.Resource); err != nil {
			return err
		}
	}
	if c.Minor < -1 || c.Minor >= maxMinor {
		return fmt.Errorf("minor %d out of range", c.Minor)
	}
	if c.Resource == "" && c.Minor < 0 {
		return errors.New("neither resource nor minor known")
	}
	if len(c.Env) > maxEnv {
		return fmt.Errorf("%d environment variables, at most %d", len(c.Env), maxEnv)
	}
	for k, v := range c.Env {
		if !strings.HasPrefix(k, "DRBD_") || len(k) > 64 || strings.ContainsFunc(k, notEnvKey) {
			return fmt.Errorf("environment variable %q is not a DRBD_ one", k)
		}
		if len(v) > maxEnvVal {
			return fmt.Errorf("environment variable %s is %d bytes long", k, len(v))
		}
	}
	return nil
}

func notEnvKey(r rune) bool {
	return !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_')
}

// checkName accepts what DRBD accepts in a resource name that is also safe
// to log and pass on: printable ASCII without spaces or slashes.
func checkName(what, s string) error {
	if s == "" || len(s) > maxName {
		return fmt.Errorf("%s %q: want 1..%d characters", what, s, maxName)
	}
	for _, r := range s {
		if r <= ' ' || r > '~' || r == '/' {
			return fmt.Errorf("%s %q: only printable ASCII without spaces or slashes", what, s)
		}
	}
	return nil
}

// Target names what the call is about, for logs: the resource if known,
// else the argument.
func (c Call) Target() string {
	if c.Resource != "" {
		return c.Resource
	}
	return c.Arg
}
