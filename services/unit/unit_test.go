package unit

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestFormatUptime(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{0, "0s"}, {59.9, "59s"}, {60, "1m 0s"}, {3599, "59m 59s"}, {3600, "1h 0m"},
		{86399, "23h 59m"}, {93784, "1d 2h"}, {-1, "-"}, {math.NaN(), "-"},
	}
	for _, tt := range tests {
		if got := FormatUptime(tt.in); got != tt.want {
			t.Errorf("FormatUptime(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormedAndPrimaryName(t *testing.T) {
	paths := func(priv, ibiz bool) []Path { return []Path{{Name: PathIbiz0, Up: ibiz}, {Name: PathPriv0, Up: priv}} }
	pm := func(id int, role Role, state PMState, p []Path) PM {
		return PM{ID: id, Name: "pm" + string(rune('0'+id)), Role: role, State: state, Paths: p}
	}
	ok := []PM{pm(1, RolePrimary, PMRunning, paths(true, true)), pm(2, RoleSecondary, PMRunning, paths(true, true))}
	tests := []struct {
		name string
		pms  []PM
		want string // "" = formed
	}{
		{"formed", ok, ""},
		{"one PM", ok[:1], "1 PMs"},
		{"peer booting", []PM{ok[0], pm(2, RoleSecondary, PMBooting, paths(true, true))}, "pm2 is booting"},
		{"two primaries", []PM{ok[0], pm(2, RolePrimary, PMRunning, paths(true, true))}, "2 primaries"},
		{"no primary", []PM{pm(1, RoleNone, PMRunning, paths(true, true)), ok[1]}, "0 primaries"},
		{"path down", []PM{ok[0], pm(2, RoleSecondary, PMRunning, paths(false, true))}, "pm2 sees heartbeat path priv0 down"},
		{"path missing", []PM{ok[0], pm(2, RoleSecondary, PMRunning, []Path{{Name: PathPriv0, Up: true}})}, "pm2 reports no heartbeat path ibiz0"},
	}
	for _, tt := range tests {
		err := Formed(tt.pms)
		if got := fmt.Sprint(err); (tt.want == "" && err != nil) || (tt.want != "" && !strings.Contains(got, tt.want)) {
			t.Errorf("%s: Formed = %v, want %q", tt.name, err, tt.want)
		}
	}
	u := Unit{Primary: 2, PMs: ok}
	if got := u.PrimaryName(); got != "pm2 (PM 2)" {
		t.Errorf("PrimaryName = %q", got)
	}
	if got := (Unit{}).PrimaryName(); got != "none" {
		t.Errorf("PrimaryName of no primary = %q", got)
	}
}
