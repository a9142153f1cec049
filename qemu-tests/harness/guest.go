package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/guest/serial"
)

// The test guest (qemu-tests/guest) speaks on its serial console in the
// lines of package serial; GuestTrace follows them across the serial logs
// of both PMs.

// GuestBoot is what the serial logs showed of one boot of the guest.
type GuestBoot struct {
	ID string
	// Started: a GUEST START line was seen; Start is the counter that
	// boot read from the disk.
	Started bool
	Start   uint64
	// Durables counts the DURABLE lines seen (each distinct n once);
	// Durable is the highest n among them, the value the guest last
	// reported as on its disk.
	Durables int
	Durable  uint64
}

// GuestTrace gathers what the guest printed from any number of reads of
// its serial logs. A VM's log is kept per PM (and only its newest part), so
// a test reads whichever the API serves before and after a migration or a
// failover, and the reads overlap, repeat and lose their beginnings: the
// trace keeps, per boot id, the START line and the set of DURABLE values,
// which no such read can make wrong. It is not safe for concurrent use.
type GuestTrace struct {
	boots   []*guestBoot // in the order first seen
	byID    map[string]*guestBoot
	reads   int
	failed  []string
	failSet map[string]bool
}

type guestBoot struct {
	GuestBoot
	durables map[uint64]bool
	// lastRead and lastLine place the boot's latest line: the read that
	// held it and its line number there.
	lastRead, lastLine int
}

// NewGuestTrace returns an empty trace.
func NewGuestTrace() *GuestTrace {
	return &GuestTrace{byID: map[string]*guestBoot{}, failSet: map[string]bool{}}
}

// Add takes one read of a serial log. Only complete lines count: the last
// one may still be being written ("n=1" of what becomes "n=12").
func (g *GuestTrace) Add(log []byte) {
	g.reads++
	log = log[:bytes.LastIndexByte(log, '\n')+1]
	for i, raw := range bytes.Split(log, []byte("\n")) {
		line := string(bytes.TrimRight(raw, "\r"))
		if strings.HasPrefix(line, serial.FailedPrefix) {
			if !g.failSet[line] {
				g.failSet[line] = true
				g.failed = append(g.failed, line)
			}
			continue
		}
		l, ok := serial.Parse(line)
		if !ok {
			continue
		}
		b := g.byID[l.Boot]
		if b == nil {
			b = &guestBoot{GuestBoot: GuestBoot{ID: l.Boot}, durables: map[uint64]bool{}}
			g.byID[l.Boot] = b
			g.boots = append(g.boots, b)
		}
		b.lastRead, b.lastLine = g.reads, i
		switch l.Kind {
		case serial.Start:
			b.Started, b.Start = true, l.N
		case serial.Durable:
			if !b.durables[l.N] {
				b.durables[l.N] = true
				b.Durables++
				b.Durable = max(b.Durable, l.N)
			}
		}
	}
}

// Boots returns every boot seen, in the order first seen.
func (g *GuestTrace) Boots() []GuestBoot {
	out := make([]GuestBoot, len(g.boots))
	for i, b := range g.boots {
		out[i] = b.GuestBoot
	}
	return out
}

// Boot returns the boot with id.
func (g *GuestTrace) Boot(id string) (GuestBoot, bool) {
	b, ok := g.byID[id]
	if !ok {
		return GuestBoot{}, false
	}
	return b.GuestBoot, true
}

// Latest returns the boot whose line came last in the most recent read
// that held any: the boot that runs now, as far as the logs tell.
func (g *GuestTrace) Latest() (GuestBoot, bool) {
	var latest *guestBoot
	for _, b := range g.boots {
		if latest == nil || b.lastRead > latest.lastRead || b.lastRead == latest.lastRead && b.lastLine > latest.lastLine {
			latest = b
		}
	}
	if latest == nil {
		return GuestBoot{}, false
	}
	return latest.GuestBoot, true
}

// MaxDurable is the highest counter any boot reported as durable: the disk
// the boots share holds at least this value.
func (g *GuestTrace) MaxDurable() uint64 {
	var n uint64
	for _, b := range g.boots {
		n = max(n, b.Durable)
	}
	return n
}

// Failures are the guest's GUEST FAILED lines, each once.
func (g *GuestTrace) Failures() []string {
	return append([]string(nil), g.failed...)
}

// String sums the trace up for a test log.
func (g *GuestTrace) String() string {
	if len(g.boots) == 0 && len(g.failed) == 0 {
		return fmt.Sprintf("no guest lines in %d reads", g.reads)
	}
	var parts []string
	for _, b := range g.boots {
		s := "boot " + b.ID + ":"
		if b.Started {
			s += fmt.Sprintf(" start n=%d", b.Start)
		} else {
			s += " start not seen"
		}
		if b.Durables > 0 {
			s += fmt.Sprintf(", %d durable lines up to n=%d", b.Durables, b.Durable)
		}
		parts = append(parts, s)
	}
	for _, f := range g.failed {
		parts = append(parts, fmt.Sprintf("%q", f))
	}
	return strings.Join(parts, "; ")
}

// GuestPollInterval is how often WaitGuest reads a serial log. Each read
// fetches the whole log (up to 1 MiB) through an emulated PM, and the
// guest prints a line per 100 ms: reading faster would load the PM that
// runs the guest more than it tells.
const GuestPollInterval = 500 * time.Millisecond

// WaitGuest reads a serial log with read every GuestPollInterval, adds each
// read to tr and returns once cond accepts tr. cond's error says what is
// still missing; like WaitFor's, the last one is part of the error on
// timeout, together with any GUEST FAILED line the guest printed.
func WaitGuest(ctx context.Context, timeout time.Duration, what string, tr *GuestTrace, read func(context.Context) ([]byte, error), cond func(*GuestTrace) error) error {
	var next time.Time
	last := errors.New("serial log not read yet")
	return WaitFor(ctx, timeout, what, func(ctx context.Context) (bool, error) {
		if time.Now().Before(next) {
			return false, last
		}
		next = time.Now().Add(GuestPollInterval)
		b, err := read(ctx)
		if err != nil {
			last = fmt.Errorf("reading the serial log: %w", err)
			return false, last
		}
		tr.Add(b)
		if err := cond(tr); err != nil {
			if f := tr.Failures(); len(f) > 0 {
				err = fmt.Errorf("%w (the guest printed %q)", err, f)
			}
			last = err
			return false, err
		}
		return true, nil
	})
}
