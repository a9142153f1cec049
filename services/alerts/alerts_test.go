package alerts

import (
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/unit"
)

func TestDerive(t *testing.T) {
	now := time.Unix(5000, 0)
	up := []unit.Path{{Name: "ibiz0", Up: true}, {Name: "priv0", Up: true}}
	privDown := []unit.Path{{Name: "ibiz0", Up: true}, {Name: "priv0", Up: false, LastSeen: now.Add(-3 * time.Second)}}
	pm := func(id int, state unit.PMState, paths []unit.Path) unit.PM {
		return unit.PM{ID: id, Name: map[int]string{1: "pm1", 2: "pm2"}[id], State: state, Paths: paths}
	}
	tests := []struct {
		name string
		pms  []unit.PM
		want []string
	}{
		{"healthy", []unit.PM{pm(1, unit.PMRunning, up), pm(2, unit.PMRunning, up)}, nil},
		{"priv0 down seen by one", []unit.PM{pm(1, unit.PMRunning, privDown), pm(2, unit.PMRunning, up)}, []string{"heartbeat-path-down/priv0"}},
		{"priv0 down seen by both", []unit.PM{pm(1, unit.PMRunning, privDown), pm(2, unit.PMRunning, privDown)}, []string{"heartbeat-path-down/priv0"}},
		{"peer failed: no path alerts", []unit.PM{pm(1, unit.PMRunning, nil), pm(2, unit.PMBroken, nil)}, []string{"pm-failed/pm2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Derive(tt.pms, now)
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want ids %v", got, tt.want)
			}
			for i, a := range got {
				if a.ID != tt.want[i] || a.Message == "" {
					t.Errorf("alert %d = %+v, want id %s", i, a, tt.want[i])
				}
			}
		})
	}
	got := Derive([]unit.PM{pm(1, unit.PMRunning, privDown), pm(2, unit.PMRunning, up)}, now)
	if !got[0].Since.Equal(now.Add(-3*time.Second)) || got[0].Severity != unit.SevWarning {
		t.Errorf("since/severity: %+v", got[0])
	}
}
