package vm

import (
	"slices"
	"testing"
	"time"
)

func TestMTBFDecide(t *testing.T) {
	now := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	ago := func(d ...time.Duration) []time.Time {
		var ts []time.Time
		for _, x := range d {
			ts = append(ts, now.Add(-x))
		}
		return ts
	}
	tests := []struct {
		name    string
		policy  MTBF
		crashes []time.Time
		want    Verdict
	}{
		{"first crash", MTBF{}, ago(0), VerdictRestart},
		{"second crash within the hour", MTBF{}, ago(0, 10*time.Minute), VerdictRestart},
		{"third crash within the hour", MTBF{}, ago(0, 10*time.Minute, 59*time.Minute), VerdictCritical},
		{"third crash, oldest exactly an hour ago", MTBF{}, ago(0, 10*time.Minute, time.Hour), VerdictRestart},
		{"third crash, oldest just inside the hour", MTBF{}, ago(0, 10*time.Minute, time.Hour-time.Nanosecond), VerdictCritical},
		{"many old crashes", MTBF{}, ago(0, 2*time.Hour, 3*time.Hour, 4*time.Hour, 5*time.Hour), VerdictRestart},
		{"unordered record", MTBF{}, ago(30*time.Minute, 2*time.Hour, 0, 5*time.Minute), VerdictCritical},
		{"crash from a clock ahead counts", MTBF{}, ago(0, -2*time.Minute, 5*time.Minute), VerdictCritical},
		{"no record at all", MTBF{}, nil, VerdictRestart},
		{"threshold 1: every crash is critical", MTBF{Crashes: 1}, ago(0), VerdictCritical},
		{"threshold 5 in 10 minutes, 4 crashes", MTBF{Crashes: 5, Window: 10 * time.Minute}, ago(0, time.Minute, 2*time.Minute, 3*time.Minute), VerdictRestart},
		{"threshold 5 in 10 minutes, 5 crashes", MTBF{Crashes: 5, Window: 10 * time.Minute}, ago(0, time.Minute, 2*time.Minute, 3*time.Minute, 9*time.Minute), VerdictCritical},
		{"short window forgets older crashes", MTBF{Window: 5 * time.Minute}, ago(0, time.Minute, 6*time.Minute), VerdictRestart},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.policy.Decide(tt.crashes, now); got != tt.want {
				t.Errorf("Decide = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestMTBFPrune(t *testing.T) {
	now := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	in := []time.Time{now.Add(-2 * time.Hour), now.Add(-30 * time.Minute), now.Add(-time.Hour), now}
	want := []time.Time{now.Add(-30 * time.Minute), now}
	if got := (MTBF{}).Prune(in, now); !slices.Equal(got, want) {
		t.Errorf("Prune = %v, want %v", got, want)
	}
}

func TestMTBFValidate(t *testing.T) {
	tests := []struct {
		p    MTBF
		fail bool
	}{
		{MTBF{}, false},
		{MTBF{Crashes: 3, Window: time.Hour}, false},
		{MTBF{Crashes: -1}, true},
		{MTBF{Window: -time.Second}, true},
	}
	for _, tt := range tests {
		if err := tt.p.Validate(); (err != nil) != tt.fail {
			t.Errorf("Validate(%+v) = %v, want failure %v", tt.p, err, tt.fail)
		}
	}
}
