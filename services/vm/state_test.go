package vm

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestCheckEveryStateAndCommand spells out DESIGN.md §4 as a matrix, one
// row per state and one column per command, so a change of the rules shows
// up here as a change of the table.
func TestCheckEveryStateAndCommand(t *testing.T) {
	cols := []Command{Start, Config, Export, BootFromCD, Remove, Snapshot,
		Console, PowerOff, Dump, Shutdown, Migrate, ResetDevice}
	//                 St Cf Ex CD Rm Sn Co PO Du Sh Mi RD
	rows := []struct {
		state State
		row   string
	}{
		{Busy /*    */, ". . . . . . . . . . . ."},
		{Stopped /* */, "x x x x x x . . . . . ."},
		{Booting /* */, ". . . . . . x x x . . ."},
		{Running /* */, ". . . . . . x x x x x ."},
		{Alert /*   */, ". . . . . . x x x x . ."},
		{Stopping /**/, ". . . . x . . x . . . ."},
		{Crashed /* */, ". . . . . . . . . . . ."},
		{Critical /**/, ". . . . . . . . . . . x"},
		{Dumping /* */, ". . . . . . . x . . . ."},
	}
	if len(rows) != len(States()) {
		t.Fatalf("table has %d states, States() has %d", len(rows), len(States()))
	}
	if !slices.Equal(cols, Commands()) {
		t.Fatalf("table columns %v differ from Commands() %v", cols, Commands())
	}
	for _, r := range rows {
		marks := strings.Fields(r.row)
		for i, c := range cols {
			ok := marks[i] == "x"
			err := Check(r.state, c)
			switch {
			case ok && err != nil:
				t.Errorf("Check(%s, %s) = %v, want allowed", r.state, c, err)
			case !ok:
				var na *NotAllowedError
				if !errors.As(err, &na) {
					t.Errorf("Check(%s, %s) = %v, want a *NotAllowedError", r.state, c, err)
					continue
				}
				if na.State != r.state || na.Command != c || !sameSet(na.Allowed, want(cols, marks)) {
					t.Errorf("Check(%s, %s) = %+v, wrong content", r.state, c, na)
				}
			}
		}
		if got := Allowed(r.state); !sameSet(got, want(cols, marks)) {
			t.Errorf("Allowed(%s) = %v, want %v", r.state, got, want(cols, marks))
		}
	}
}

func sameSet(a, b []Command) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

func want(cols []Command, marks []string) []Command {
	var a []Command
	for i, m := range marks {
		if m == "x" {
			a = append(a, cols[i])
		}
	}
	return a
}

// TestAllowedOrder checks that the allowed list reads as the row of
// DESIGN.md §4, the order the console and the 409 answer show.
func TestAllowedOrder(t *testing.T) {
	tests := []struct {
		state State
		want  []Command
	}{
		{Busy, nil},
		{Stopped, []Command{Start, Config, Export, BootFromCD, Remove, Snapshot}},
		{Booting, []Command{Console, PowerOff, Dump}},
		{Running, []Command{Console, Shutdown, PowerOff, Dump, Migrate}},
		{Alert, []Command{Console, Shutdown, PowerOff, Dump}},
		{Stopping, []Command{PowerOff, Remove}},
		{Crashed, nil},
		{Critical, []Command{ResetDevice}},
		{Dumping, []Command{PowerOff}},
	}
	for _, tt := range tests {
		if got := Allowed(tt.state); !slices.Equal(got, tt.want) {
			t.Errorf("Allowed(%s) = %v, want %v", tt.state, got, tt.want)
		}
	}
}

func TestCheckUnknown(t *testing.T) {
	tests := []struct {
		state State
		cmd   Command
		want  string
	}{
		{"Paused", Start, `unknown VM state "Paused"`},
		{"", Start, `unknown VM state ""`},
		{Stopped, "start", `unknown VM command "start"`},
		{Stopped, "Reboot", `unknown VM command "Reboot"`},
	}
	for _, tt := range tests {
		err := Check(tt.state, tt.cmd)
		var na *NotAllowedError
		if err == nil || errors.As(err, &na) || err.Error() != tt.want {
			t.Errorf("Check(%q, %q) = %v, want plain error %q", tt.state, tt.cmd, err, tt.want)
		}
	}
	if a := Allowed("Paused"); a != nil {
		t.Errorf("Allowed(unknown) = %v, want none", a)
	}
}

func TestNotAllowedMessage(t *testing.T) {
	tests := []struct {
		state State
		cmd   Command
		want  string
	}{
		{Running, Start, "Start is not allowed while the VM is Running; allowed: Console, Shutdown, Power Off, Dump, Migrate"},
		{Busy, PowerOff, "Power Off is not allowed while the VM is Busy: no command is allowed in this state"},
		{Critical, Start, "Start is not allowed while the VM is Critical; allowed: Reset Device"},
	}
	for _, tt := range tests {
		if got := Check(tt.state, tt.cmd).Error(); got != tt.want {
			t.Errorf("Check(%s, %s): %q, want %q", tt.state, tt.cmd, got, tt.want)
		}
	}
}

// TestAllowedIsACopy guards the rules against a caller that edits the
// slice it was given.
func TestAllowedIsACopy(t *testing.T) {
	a := Allowed(Running)
	a[0] = ResetDevice
	if Check(Running, ResetDevice) == nil {
		t.Fatal("editing the result of Allowed changed the rules")
	}
}
