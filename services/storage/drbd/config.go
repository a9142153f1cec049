package drbd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path"
	"strconv"
	"strings"
)

// MaxMinor is the highest minor Dyad uses: one per volume, and a unit
// holds unit.MaxVolumes (62) volumes. DRBD itself allows up to 1048575.
const MaxMinor = 61

// BasePort is the TCP port of minor 0; minor N listens on BasePort+N.
const BasePort = 7800

// Resync rate defaults, in bytes per second.
const (
	// DefaultResyncMaxRate caps a resync (c-max-rate): roughly a gigabit
	// link, so a resync cannot starve replication of the other volumes
	// on a faster one by much.
	DefaultResyncMaxRate = 100 << 20
	// DefaultResyncMinRate is what a resync keeps (c-min-rate) while the
	// guests also do I/O; DRBD's 250 KiB/s would let a busy VM stall the
	// resync for days.
	DefaultResyncMinRate = 10 << 20
)

// Limits the kernel accepts (drbd_limits.h), in KiB/s and sectors.
const (
	minCMaxRateKiB = 250
	maxRateKiB     = 4 << 20
	maxSizeSectors = 2 << 40
)

// Resource is one DRBD resource: one volume, one minor, two legs.
type Resource struct {
	Name  string // "r<volume id>"
	Minor int    // 0..MaxMinor; device /dev/drbd<Minor>
	Disk  string // backing logical volume, e.g. /dev/dyad_sg1/vol3
	Port  int    // TCP port on both addresses, BasePort+Minor by convention
	// Addrs are the replication addresses of node 1 and node 2. drbdadm
	// uses the section whose address is configured locally.
	Addrs [2]netip.Addr
	// SizeBytes limits the device (0 = all the backing device allows).
	// A multiple of 512.
	SizeBytes int64
	// ResyncMaxRate and ResyncMinRate are bytes per second (0 = default).
	ResyncMaxRate int64
	ResyncMinRate int64
	// DualPrimary allows both legs to be Primary, for the duration of a
	// live migration only.
	DualPrimary bool
}

// Device is the path of the replicated device.
func (r Resource) Device() string { return "/dev/drbd" + strconv.Itoa(r.Minor) }

// Fixed replication policy, the same for every resource. Split brain is
// never resolved automatically: every after-sb policy disconnects, so the
// operator chooses (DESIGN §5). Times: ping-int and connect-int are
// seconds, ping-timeout and timeout tenths of a second; the kernel wants
// timeout below ping-int and connect-int.
var commonNet = [][2]string{
	{"protocol", "C"},
	{"after-sb-0pri", "disconnect"},
	{"after-sb-1pri", "disconnect"},
	{"after-sb-2pri", "disconnect"},
	{"rr-conflict", "disconnect"},
	{"ping-int", "3"},
	{"ping-timeout", "10"},
	{"connect-int", "3"},
	{"timeout", "25"},
	{"ko-count", "7"},
	{"max-buffers", "8000"},
	{"max-epoch-size", "8000"},
}

// on-io-error detach: a failing backing disk makes the leg Diskless and
// the peer serves reads and writes. fencing resource-and-stonith: when the
// connection is lost, a Primary freezes its I/O and calls the fence-peer
// helper (our usermode helper), which answers once the peer's leg is
// outdated or this PM has the right to write alone; a PM that lost that
// right keeps its I/O frozen, so it acknowledges nothing its peer lacks.
// c-plan-ahead > 0 turns on the dynamic resync-rate controller.
var commonDisk = [][2]string{
	{"on-io-error", "detach"},
	{"fencing", "resource-and-stonith"},
	{"al-extents", "1237"},
	{"c-plan-ahead", "20"},
}

// Validate checks one resource on its own.
func (r Resource) Validate() error {
	if err := validName(r.Name); err != nil {
		return err
	}
	if r.Minor < 0 || r.Minor > MaxMinor {
		return fmt.Errorf("drbd: resource %s: minor %d outside 0..%d", r.Name, r.Minor, MaxMinor)
	}
	if err := validDisk(r.Disk); err != nil {
		return fmt.Errorf("drbd: resource %s: %w", r.Name, err)
	}
	if r.Port < 1 || r.Port > 65535 {
		return fmt.Errorf("drbd: resource %s: port %d outside 1..65535", r.Name, r.Port)
	}
	for i, a := range r.Addrs {
		switch {
		case !a.IsValid():
			return fmt.Errorf("drbd: resource %s: address of node %d missing", r.Name, i+1)
		case a.Is4In6():
			return fmt.Errorf("drbd: resource %s: address %s is IPv4-mapped; give it as IPv4", r.Name, a)
		case a.Zone() != "":
			return fmt.Errorf("drbd: resource %s: address %s has a zone", r.Name, a)
		case a.IsUnspecified() || a.IsMulticast():
			return fmt.Errorf("drbd: resource %s: address %s cannot be a replication endpoint", r.Name, a)
		}
	}
	if r.Addrs[0].Is4() != r.Addrs[1].Is4() {
		return fmt.Errorf("drbd: resource %s: addresses %s and %s are of different families", r.Name, r.Addrs[0], r.Addrs[1])
	}
	if r.Addrs[0] == r.Addrs[1] {
		return fmt.Errorf("drbd: resource %s: both nodes have address %s", r.Name, r.Addrs[0])
	}
	if r.SizeBytes < 0 || r.SizeBytes%512 != 0 || r.SizeBytes/512 > maxSizeSectors {
		return fmt.Errorf("drbd: resource %s: size %d is not a multiple of 512 within 0..%d sectors", r.Name, r.SizeBytes, int64(maxSizeSectors))
	}
	if _, _, _, err := r.rates(); err != nil {
		return err
	}
	return nil
}

// rates returns resync-rate, c-min-rate and c-max-rate in KiB/s. The
// controller starts from resync-rate; a third of the maximum is LINBIT's
// usual starting point.
func (r Resource) rates() (resync, lo, hi int64, _ error) {
	maxB, minB := r.ResyncMaxRate, r.ResyncMinRate
	if maxB == 0 {
		maxB = DefaultResyncMaxRate
	}
	if minB == 0 {
		minB = DefaultResyncMinRate
		if minB > maxB {
			minB = maxB
		}
	}
	if maxB < 0 || minB < 0 {
		return 0, 0, 0, fmt.Errorf("drbd: resource %s: negative resync rate", r.Name)
	}
	hi, lo = maxB/1024, minB/1024
	if hi < minCMaxRateKiB || hi > maxRateKiB {
		return 0, 0, 0, fmt.Errorf("drbd: resource %s: resync max rate %d B/s outside %d KiB/s..%d KiB/s", r.Name, maxB, minCMaxRateKiB, maxRateKiB)
	}
	if lo > hi {
		return 0, 0, 0, fmt.Errorf("drbd: resource %s: resync min rate %d B/s above max rate %d B/s", r.Name, minB, maxB)
	}
	resync = max(hi/3, lo, 1)
	return resync, lo, hi, nil
}

// validName accepts what is safe both in drbd.conf and on the drbdadm
// command line: [A-Za-z0-9_-], not starting with '-' (it would be read as
// an option), and none of the words drbdadm gives a meaning ("all",
// "minor-N").
func validName(n string) error {
	if n == "" || len(n) > 63 {
		return fmt.Errorf("drbd: resource name %q must have 1..63 characters", n)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("drbd: resource name %q: only letters, digits, '_' and '-' allowed", n)
		}
	}
	if n[0] == '-' || n[0] == '_' {
		return fmt.Errorf("drbd: resource name %q must start with a letter or digit", n)
	}
	if n == "all" || strings.HasPrefix(n, "minor-") {
		return fmt.Errorf("drbd: resource name %q is reserved by drbdadm", n)
	}
	return nil
}

// validDisk accepts a clean absolute path under /dev made of characters
// that need no quoting in drbd.conf.
func validDisk(d string) error {
	if !strings.HasPrefix(d, "/dev/") || len(d) <= len("/dev/") || len(d) > 255 {
		return fmt.Errorf("disk %q must be a path under /dev/", d)
	}
	if path.Clean(d) != d {
		return fmt.Errorf("disk %q is not a clean path", d)
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '/'
		if !ok {
			return fmt.Errorf("disk %q: character %q not allowed", d, c)
		}
	}
	return nil
}

// validateAll checks each resource and that no two collide.
func validateAll(rs []Resource) error {
	names := map[string]bool{}
	minors := map[int]string{}
	ports := map[int]string{}
	disks := map[string]string{}
	for _, r := range rs {
		if err := r.Validate(); err != nil {
			return err
		}
		if names[r.Name] {
			return fmt.Errorf("drbd: resource %s defined twice", r.Name)
		}
		names[r.Name] = true
		if o, ok := minors[r.Minor]; ok {
			return fmt.Errorf("drbd: resources %s and %s share minor %d", o, r.Name, r.Minor)
		}
		minors[r.Minor] = r.Name
		if o, ok := ports[r.Port]; ok {
			return fmt.Errorf("drbd: resources %s and %s share port %d", o, r.Name, r.Port)
		}
		ports[r.Port] = r.Name
		if o, ok := disks[r.Disk]; ok {
			return fmt.Errorf("drbd: resources %s and %s share disk %s", o, r.Name, r.Disk)
		}
		disks[r.Disk] = r.Name
	}
	return nil
}

// ErrWrite wraps a failure of the writer, as opposed to a refused resource.
var ErrWrite = errors.New("drbd: writing config")

// Render writes a complete drbd.conf holding rs for "drbdadm-84 -c FILE".
// Every resource is validated first; on any error nothing is written.
// An empty rs yields a valid file without resources.
func Render(w io.Writer, rs ...Resource) error {
	b, err := Marshal(rs...)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("%w: %w", ErrWrite, err)
	}
	return nil
}

// Marshal returns the drbd.conf Render writes.
func Marshal(rs ...Resource) ([]byte, error) {
	if err := validateAll(rs); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("# Written by dyad; it is replaced on every change.\n")
	b.WriteString("global {\n\tusage-count no;\n}\n\n")
	b.WriteString("common {\n")
	section(&b, 1, "net", commonNet)
	section(&b, 1, "disk", commonDisk)
	b.WriteString("}\n")
	for _, r := range rs {
		resync, lo, hi, _ := r.rates()
		fmt.Fprintf(&b, "\nresource %s {\n", r.Name)
		section(&b, 1, "net", [][2]string{{"allow-two-primaries", yesNo(r.DualPrimary)}})
		disk := [][2]string{
			{"resync-rate", strconv.FormatInt(resync, 10) + "k"},
			{"c-min-rate", strconv.FormatInt(lo, 10) + "k"},
			{"c-max-rate", strconv.FormatInt(hi, 10) + "k"},
		}
		if r.SizeBytes > 0 {
			disk = append(disk, [2]string{"size", strconv.FormatInt(r.SizeBytes/512, 10) + "s"})
		}
		section(&b, 1, "disk", disk)
		for _, a := range r.Addrs {
			fmt.Fprintf(&b, "\tfloating %s {\n", endpoint(a, r.Port))
			fmt.Fprintf(&b, "\t\tdevice %s minor %d;\n", r.Device(), r.Minor)
			fmt.Fprintf(&b, "\t\tdisk %s;\n", r.Disk)
			b.WriteString("\t\tmeta-disk internal;\n")
			b.WriteString("\t}\n")
		}
		b.WriteString("}\n")
	}
	return b.Bytes(), nil
}

func section(b *bytes.Buffer, depth int, name string, opts [][2]string) {
	ind := strings.Repeat("\t", depth)
	fmt.Fprintf(b, "%s%s {\n", ind, name)
	for _, o := range opts {
		fmt.Fprintf(b, "%s\t%s %s;\n", ind, o[0], o[1])
	}
	fmt.Fprintf(b, "%s}\n", ind)
}

// endpoint is drbd.conf's "ipv4 A:PORT" or "ipv6 [A]:PORT".
func endpoint(a netip.Addr, port int) string {
	if a.Is4() {
		return fmt.Sprintf("ipv4 %s:%d", a, port)
	}
	return fmt.Sprintf("ipv6 [%s]:%d", a, port)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
