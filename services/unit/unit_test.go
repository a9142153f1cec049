package unit

import (
	"math"
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
