// Package pmconfig is a PM's identity: which node it is, which unit it
// belongs to, its addresses and the unit's secret. It comes from the kernel
// command line (dyad.* keys) and from /data/dyad/config.json, the command line
// winning. Every value is validated and all problems are reported at once, so
// an operator fixes a bad configuration in one round.
package pmconfig

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/dyad-ha/dyad/init/cmdline"
)

// DefaultPath is where the installer writes the configuration file.
const DefaultPath = "/data/dyad/config.json"

// maxFileSize bounds the configuration file; a real one is a few hundred bytes.
const maxFileSize = 64 << 10

// Config is a PM's validated identity.
type Config struct {
	Node     int    // 1 or 2
	Unit     string // unit name, a DNS label
	Hostname string
	// Mgmt is the unit's management address, held by the primary on ibiz0;
	// zero when MgmtDHCP.
	Mgmt netip.Prefix
	// MgmtDHCP: the primary leases the management address from the site's
	// DHCP server instead (dyad.mgmt=dhcp).
	MgmtDHCP bool
	// Ibiz0 is this PM's own address on ibiz0; zero when unset.
	Ibiz0   netip.Prefix
	Gateway netip.Addr
	UnitKey []byte // 32 bytes
	// Ports overrides the default port roles: role to the port names or MAC
	// addresses that take it. "priv0" and "syncN" take one port each;
	// "ibiz0" one, or several that are bonded.
	Ports map[string][]string
	// BondMode is the mode of the ibiz0 bond: "active-backup" (the default)
	// or "802.3ad" (LACP; the switch must be configured for it).
	BondMode string
	// Mgmt6 is an optional IPv6 management address, held with Mgmt.
	Mgmt6    netip.Prefix
	LogLevel slog.Level
	// Quorum are the quorum servers (host:port), preferred first, then the
	// alternate (dyad.quorum=HOST[:PORT][,HOST[:PORT]]); none without one.
	Quorum []string
}

// Peer is the other PM's node number.
func (c Config) Peer() int { return 3 - c.Node }

// Priv0Addr is the fixed private address of node n on priv0. It lies in IPv4
// link-local space so it never collides with a customer network.
func Priv0Addr(n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, 42, byte(n)}), 24)
}

// file is the JSON form of the configuration file. Fields are strings so that
// the file and the command line share one validation path.
type file struct {
	Node     string            `json:"node"`
	Unit     string            `json:"unit"`
	Hostname string            `json:"hostname"`
	Mgmt     string            `json:"mgmt"`
	Ibiz0    string            `json:"ibiz0"`
	Gateway  string            `json:"gateway"`
	UnitKey  string            `json:"unit_key"`
	Ports    map[string]string `json:"ports"`
	Mgmt6    string            `json:"mgmt6"`
	BondMode string            `json:"bond_mode"`
	LogLevel string            `json:"log_level"`
	Quorum   string            `json:"quorum"`
}

// ParseFile decodes a configuration file. Unknown fields are errors: a typo
// must not silently leave a setting at its default.
func ParseFile(r io.Reader) (map[string]string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxFileSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("invalid JSON: trailing data after the object")
	}
	kv := map[string]string{
		"node": f.Node, "unit": f.Unit, "hostname": f.Hostname, "mgmt": f.Mgmt,
		"ibiz0": f.Ibiz0, "mgmt6": f.Mgmt6, "bondmode": f.BondMode, "gw": f.Gateway, "unitkey": f.UnitKey, "loglevel": f.LogLevel,
		"quorum": f.Quorum,
	}
	for role, port := range f.Ports {
		kv["port."+role] = port
	}
	for k, v := range kv {
		if v == "" {
			delete(kv, k)
		}
	}
	return kv, nil
}

// Load reads the configuration file at path (absent is fine) and overlays
// the dyad.* keys of params.
func Load(params cmdline.Params, path string) (Config, error) {
	kv := map[string]string{}
	f, err := os.Open(path)
	switch {
	case err == nil:
		fileKV, perr := ParseFile(f)
		f.Close()
		if perr != nil {
			return Config{}, fmt.Errorf("configuration file %s: %w", path, perr)
		}
		kv = fileKV
	case !errors.Is(err, os.ErrNotExist):
		return Config{}, fmt.Errorf("configuration file: %w", err)
	}
	for k, v := range params.WithPrefix("dyad.") {
		kv[k] = v
	}
	return FromKV(kv)
}

var portRole = regexp.MustCompile(`^(priv0|ibiz0|sync[0-3])$`)

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// knownKeys are the dyad.* keys the agent reads. Keys for other parts (init's
// dyad.testchannel, dyad.datadisk, dyad.mode) are accepted and ignored here.
var knownKeys = map[string]bool{
	"node": true, "unit": true, "hostname": true, "mgmt": true, "mgmt6": true, "bondmode": true, "ibiz0": true,
	"gw": true, "unitkey": true, "loglevel": true, "quorum": true,
	"testchannel": true, "datadisk": true, "mode": true,
}

// FromKV validates key/value settings (dyad. prefix removed) into a Config.
func FromKV(kv map[string]string) (Config, error) {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("dyad.%s: "+format, append([]any{key}, a...)...))
	}
	c := Config{Ports: map[string][]string{}}

	seen := map[string]string{} // port -> role
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		v := kv[k]
		if role, ok := strings.CutPrefix(k, "port."); ok {
			if !portRole.MatchString(role) {
				bad(k, "unknown port role %q (want priv0, ibiz0 or sync0..sync3)", role)
				continue
			}
			ports := strings.Split(v, ",")
			switch {
			case slices.Contains(ports, ""):
				bad(k, "%q: empty port name", v)
				continue
			case len(ports) > 1 && role != "ibiz0":
				bad(k, "%q: only ibiz0 may be a bond of several ports", v)
				continue
			case len(ports) > 4:
				bad(k, "%q: at most 4 ports in a bond", v)
				continue
			}
			for _, p := range ports {
				if other, dup := seen[strings.ToLower(p)]; dup {
					bad(k, "port %s is also given to %s", p, other)
				}
				seen[strings.ToLower(p)] = role
			}
			c.Ports[role] = ports
			continue
		}
		if !knownKeys[k] {
			bad(k, "unknown setting")
		}
	}

	switch n, err := strconv.Atoi(kv["node"]); {
	case kv["node"] == "":
		bad("node", "missing: set dyad.node=1 or dyad.node=2")
	case err != nil || (n != 1 && n != 2):
		bad("node", "%q is not 1 or 2", kv["node"])
	default:
		c.Node = n
	}

	c.Unit = kv["unit"]
	if c.Unit == "" {
		c.Unit = "dyad"
	}
	if !dnsLabel.MatchString(c.Unit) {
		bad("unit", "%q is not a DNS label (lower-case letters, digits and '-', at most 63)", c.Unit)
	}

	c.Hostname = kv["hostname"]
	if c.Hostname == "" && c.Node != 0 {
		c.Hostname = fmt.Sprintf("pm%d", c.Node)
	}
	if c.Hostname != "" && !dnsLabel.MatchString(c.Hostname) {
		bad("hostname", "%q is not a DNS label", c.Hostname)
	}

	switch v := kv["mgmt"]; {
	case v == "":
		bad("mgmt", "missing: the unit's management address, e.g. dyad.mgmt=192.0.2.10/24, or dyad.mgmt=dhcp")
	case strings.EqualFold(v, "dhcp"):
		c.MgmtDHCP = true
	default:
		if p, err := parseHostPrefix(v); err != nil {
			bad("mgmt", "%v; or dyad.mgmt=dhcp to lease it", err)
		} else {
			c.Mgmt = p
		}
	}

	if v := kv["ibiz0"]; v != "" {
		p, err := parseHostPrefix(v)
		switch {
		case err != nil:
			bad("ibiz0", "%v", err)
		case c.Mgmt.IsValid() && p.Addr() == c.Mgmt.Addr():
			bad("ibiz0", "%s is the management address; each PM needs its own", p.Addr())
		default:
			c.Ibiz0 = p
		}
	}

	switch c.BondMode = kv["bondmode"]; c.BondMode {
	case "":
		c.BondMode = "active-backup"
	case "active-backup", "802.3ad":
	default:
		bad("bondmode", "%q is not active-backup or 802.3ad", c.BondMode)
	}

	if v := kv["mgmt6"]; v != "" {
		p, err := netip.ParsePrefix(v)
		if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast() || p.Bits() < 8 || p.Bits() > 127 {
			bad("mgmt6", "%q is not an IPv6 host address with prefix length (like 2001:db8::10/64)", v)
		} else {
			c.Mgmt6 = p
		}
	}

	if v := kv["gw"]; v != "" {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			bad("gw", "%q is not an IPv4 address", v)
		} else {
			c.Gateway = a
		}
	}

	switch key, err := hex.DecodeString(kv["unitkey"]); {
	case kv["unitkey"] == "":
		bad("unitkey", "missing: the unit secret (64 hex characters), written by the installer")
	case err != nil || len(key) != 32:
		bad("unitkey", "must be 64 hex characters")
	default:
		c.UnitKey = key
	}

	if v := kv["quorum"]; v != "" {
		servers := strings.Split(v, ",")
		if len(servers) > 2 {
			bad("quorum", "%d servers; give the preferred and at most one alternate", len(servers))
		}
		for _, s := range servers {
			hp, err := quorumServer(s)
			if err != nil {
				bad("quorum", "%v", err)
				continue
			}
			c.Quorum = append(c.Quorum, hp)
		}
	}

	switch strings.ToLower(kv["loglevel"]) {
	case "", "info":
		c.LogLevel = slog.LevelInfo
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "warn":
		c.LogLevel = slog.LevelWarn
	default:
		bad("loglevel", "%q is not debug, info or warn", kv["loglevel"])
	}

	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

func parseHostPrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address with prefix length (like 192.0.2.10/24)", s)
	}
	a := p.Addr()
	if !a.Is4() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || p.Bits() < 8 || p.Bits() > 30 {
		return netip.Prefix{}, fmt.Errorf("%s is not a usable IPv4 host address (prefix /8 to /30)", s)
	}
	if a == p.Masked().Addr() {
		return netip.Prefix{}, fmt.Errorf("%s is a network address, not a host address", s)
	}
	return p, nil
}

// QuorumPort is the quorum server's port when dyad.quorum names none.
const QuorumPort = 7413

// quorumServer checks one quorum server, HOST or HOST:PORT, and adds the
// default port.
func quorumServer(s string) (string, error) {
	host, port := s, strconv.Itoa(QuorumPort)
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q: port %q is not 1..65535", s, port)
	}
	if _, err := netip.ParseAddr(host); err != nil && !hostname.MatchString(host) {
		return "", fmt.Errorf("%q is not HOST or HOST:PORT (an IP address or a DNS name)", s)
	}
	return net.JoinHostPort(host, port), nil
}

// hostname is a DNS name: labels of letters, digits and '-' joined by dots.
var hostname = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
