// Package serial is the test guest's protocol on its serial console: the
// lines the guest prints and the parser the tests read them with.
package serial

import (
	"fmt"
	"strconv"
	"strings"
)

// Kinds of Line.
const (
	Start   = "START"
	Durable = "DURABLE"
)

// FailedPrefix starts the guest's last words when its loop fails.
const FailedPrefix = "GUEST FAILED"

// StartLine is printed once per boot with the counter read from the disk.
func StartLine(boot string, n uint64) string {
	return fmt.Sprintf("GUEST START boot=%s n=%d", boot, n)
}

// DurableLine reports that n is on stable storage.
func DurableLine(boot string, n uint64) string {
	return fmt.Sprintf("DURABLE boot=%s n=%d", boot, n)
}

// Line is one parsed protocol line.
type Line struct {
	Kind string // Start or Durable
	Boot string
	N    uint64
}

// Parse parses a StartLine or DurableLine; ok is false for any other text
// (kernel messages share the serial port) and for a line not in exactly
// the form the guest prints: a line cut short or run into by other output
// must not pass for a smaller counter.
func Parse(s string) (Line, bool) {
	s = strings.TrimRight(s, "\r\n")
	var l Line
	var rest string
	switch {
	case strings.HasPrefix(s, "GUEST START "):
		l.Kind, rest = Start, strings.TrimPrefix(s, "GUEST START ")
	case strings.HasPrefix(s, "DURABLE "):
		l.Kind, rest = Durable, strings.TrimPrefix(s, "DURABLE ")
	default:
		return Line{}, false
	}
	f := strings.Split(rest, " ")
	if len(f) != 2 || !strings.HasPrefix(f[0], "boot=") || !strings.HasPrefix(f[1], "n=") {
		return Line{}, false
	}
	l.Boot = strings.TrimPrefix(f[0], "boot=")
	num := strings.TrimPrefix(f[1], "n=")
	n, err := strconv.ParseUint(num, 10, 64)
	// Only the form the guest prints: no sign, no leading zeros.
	if err != nil || l.Boot == "" || strconv.FormatUint(n, 10) != num {
		return Line{}, false
	}
	l.N = n
	return l, true
}
