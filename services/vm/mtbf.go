package vm

import (
	"fmt"
	"time"
)

// Default MTBF threshold of DESIGN.md §1: the third crash within an hour
// makes a VM Critical.
const (
	DefaultMTBFCrashes = 3
	DefaultMTBFWindow  = time.Hour
)

// Verdict is what the MTBF policy decides after a crash.
type Verdict string

// Verdicts.
const (
	VerdictRestart  Verdict = "restart"  // the VM is Crashed and is started again
	VerdictCritical Verdict = "critical" // the VM stays down, Critical, until Reset Device
)

// MTBF is the crash threshold: Crashes crashes within Window make a VM
// Critical. The zero value means the defaults.
type MTBF struct {
	Crashes int           `json:"crashes"`
	Window  time.Duration `json:"window"`
}

// Validate refuses a threshold that cannot be meant: a negative count or
// window. Zero fields stand for the defaults.
func (p MTBF) Validate() error {
	if p.Crashes < 0 {
		return fmt.Errorf("MTBF threshold: %d crashes: must be at least 1 (or 0 for the default of %d)", p.Crashes, DefaultMTBFCrashes)
	}
	if p.Window < 0 {
		return fmt.Errorf("MTBF threshold: window %s: must be positive (or 0 for the default of %s)", p.Window, DefaultMTBFWindow)
	}
	return nil
}

func (p MTBF) orDefaults() MTBF {
	if p.Crashes <= 0 {
		p.Crashes = DefaultMTBFCrashes
	}
	if p.Window <= 0 {
		p.Window = DefaultMTBFWindow
	}
	return p
}

// Decide returns the verdict for a VM that has just crashed. crashes are
// the VM's recorded crash times, including the one just seen, in any order.
// A crash counts when it lies less than Window before now; a crash recorded
// after now (the peer PM's clock runs ahead) counts too, because dropping
// it would let a crash loop escape the threshold. Reaching the threshold is
// enough: with the defaults the third crash within an hour is Critical.
func (p MTBF) Decide(crashes []time.Time, now time.Time) Verdict {
	p = p.orDefaults()
	if p.recent(crashes, now) >= p.Crashes {
		return VerdictCritical
	}
	return VerdictRestart
}

// Prune returns the crashes that can still count towards the threshold at
// now, so the record kept in the unit database stays bounded.
func (p MTBF) Prune(crashes []time.Time, now time.Time) []time.Time {
	p = p.orDefaults()
	var kept []time.Time
	for _, c := range crashes {
		if now.Sub(c) < p.Window {
			kept = append(kept, c)
		}
	}
	return kept
}

func (p MTBF) recent(crashes []time.Time, now time.Time) int {
	n := 0
	for _, c := range crashes {
		if now.Sub(c) < p.Window {
			n++
		}
	}
	return n
}
