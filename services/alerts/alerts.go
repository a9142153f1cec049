// Package alerts derives the conditions an operator must see from the state
// of the unit. Alerts are a pure function of state: an alert is active while
// its condition holds and clears by itself when the condition ends, on
// whichever PM is primary.
package alerts

import (
	"fmt"
	"sort"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

// Derive returns the active alerts for pms at now, most severe first.
func Derive(pms []unit.PM, now time.Time) []unit.Alert {
	var out []unit.Alert
	reachable := 0
	for _, pm := range pms {
		switch pm.State {
		case unit.PMBroken:
			out = append(out, unit.Alert{
				ID: "pm-failed/" + pm.Name, Severity: unit.SevCritical, Source: pm.Name,
				Message: fmt.Sprintf("%s has failed (%s); the unit is not redundant", pm.Name, orDefault(pm.Activity, "no heartbeat on any path")),
				Since:   orNow(pm.LastSeen, now),
			})
		case unit.PMRunning, unit.PMMaintenance, unit.PMEvacuating:
			reachable++
		}
	}
	if reachable == len(pms) && len(pms) == 2 {
		// Both PMs run: a path that either of them sees down is a lost
		// redundancy of the heartbeat, never a failover.
		down := map[string]time.Time{}
		for _, pm := range pms {
			for _, p := range pm.Paths {
				if p.Up {
					continue
				}
				since := orNow(p.LastSeen, now)
				if t, ok := down[p.Name]; !ok || since.Before(t) {
					down[p.Name] = since
				}
			}
		}
		for name, since := range down {
			out = append(out, unit.Alert{
				ID: "heartbeat-path-down/" + name, Severity: unit.SevWarning, Source: "unit",
				Message: fmt.Sprintf("Heartbeat path %s between %s and %s is down; the PMs still see each other on the other paths", name, pms[0].Name, pms[1].Name),
				Since:   since,
			})
		}
	}
	rank := map[unit.Severity]int{unit.SevCritical: 0, unit.SevWarning: 1, unit.SevInfo: 2}
	sort.Slice(out, func(i, j int) bool {
		if rank[out[i].Severity] != rank[out[j].Severity] {
			return rank[out[i].Severity] < rank[out[j].Severity]
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orNow(t, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return t
}
