package harness

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	bootA = "0f8e2c1d-3b4a-4c5d-8e9f-0a1b2c3d4e5f"
	bootB = "1a2b3c4d-5e6f-4a0b-9c1d-2e3f4a5b6c7d"
)

func startLine(boot string, n uint64) string {
	return fmt.Sprintf("GUEST START boot=%s n=%d\n", boot, n)
}
func durableLine(boot string, n uint64) string { return fmt.Sprintf("DURABLE boot=%s n=%d\n", boot, n) }

func TestGuestTrace(t *testing.T) {
	// A log as one PM keeps it: kernel noise, a boot, its durable lines.
	pm1 := "[    0.000] Linux version 6.1\r\n" + startLine(bootA, 0)
	for n := uint64(1); n <= 5; n++ {
		pm1 += durableLine(bootA, n)
	}
	tests := []struct {
		name         string
		reads        []string
		wantBoots    []GuestBoot
		wantLatest   string
		wantMax      uint64
		wantFailures []string
	}{
		{
			name:      "nothing yet",
			reads:     []string{"", "SeaBIOS\n[    0.000] Linux\n"},
			wantBoots: []GuestBoot{},
		},
		{
			name:       "one boot counting",
			reads:      []string{pm1},
			wantBoots:  []GuestBoot{{ID: bootA, Started: true, Start: 0, Durables: 5, Durable: 5}},
			wantLatest: bootA,
			wantMax:    5,
		},
		{
			name: "a line still being written does not count",
			// "n=1" is the start of what becomes n=12.
			reads:      []string{startLine(bootA, 10) + durableLine(bootA, 11) + "DURABLE boot=" + bootA + " n=1"},
			wantBoots:  []GuestBoot{{ID: bootA, Started: true, Start: 10, Durables: 1, Durable: 11}},
			wantLatest: bootA,
			wantMax:    11,
		},
		{
			name: "the same log read again as it grows",
			reads: []string{
				startLine(bootA, 0) + durableLine(bootA, 1),
				startLine(bootA, 0) + durableLine(bootA, 1) + durableLine(bootA, 2),
			},
			wantBoots:  []GuestBoot{{ID: bootA, Started: true, Durables: 2, Durable: 2}},
			wantLatest: bootA,
			wantMax:    2,
		},
		{
			name: "migrated: the target's log starts empty and continues the count",
			reads: []string{
				pm1,
				durableLine(bootA, 6) + durableLine(bootA, 7),
			},
			wantBoots:  []GuestBoot{{ID: bootA, Started: true, Durables: 7, Durable: 7}},
			wantLatest: bootA,
			wantMax:    7,
		},
		{
			name: "failed over: a new boot on the survivor reads the counter back",
			reads: []string{
				pm1,
				"[    0.000] Linux version 6.1\n" + startLine(bootB, 5) + durableLine(bootB, 6),
			},
			wantBoots: []GuestBoot{
				{ID: bootA, Started: true, Durables: 5, Durable: 5},
				{ID: bootB, Started: true, Start: 5, Durables: 1, Durable: 6},
			},
			wantLatest: bootB,
			wantMax:    6,
		},
		{
			name: "an older log read last keeps the newest boot latest by line order",
			reads: []string{
				pm1 + startLine(bootB, 5),
				startLine(bootA, 0) + durableLine(bootA, 1) + startLine(bootB, 5) + durableLine(bootB, 6),
			},
			wantBoots: []GuestBoot{
				{ID: bootA, Started: true, Durables: 5, Durable: 5},
				{ID: bootB, Started: true, Start: 5, Durables: 1, Durable: 6},
			},
			wantLatest: bootB,
			wantMax:    6,
		},
		{
			name: "a log that lost its beginning",
			reads: []string{
				"ot=" + bootA + " n=3\n" + durableLine(bootA, 4),
			},
			wantBoots:  []GuestBoot{{ID: bootA, Durables: 1, Durable: 4}},
			wantLatest: bootA,
			wantMax:    4,
		},
		{
			name:         "the guest's last words",
			reads:        []string{startLine(bootA, 0) + "GUEST FAILED: writing counter 1: input/output error\r\n", "GUEST FAILED: writing counter 1: input/output error\n"},
			wantBoots:    []GuestBoot{{ID: bootA, Started: true}},
			wantLatest:   bootA,
			wantFailures: []string{"GUEST FAILED: writing counter 1: input/output error"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewGuestTrace()
			for _, r := range tt.reads {
				tr.Add([]byte(r))
			}
			if got := tr.Boots(); !slices.Equal(got, tt.wantBoots) {
				t.Errorf("Boots() = %+v, want %+v", got, tt.wantBoots)
			}
			latest, ok := tr.Latest()
			if ok != (tt.wantLatest != "") || latest.ID != tt.wantLatest {
				t.Errorf("Latest() = %+v, %v; want boot %q", latest, ok, tt.wantLatest)
			}
			if got := tr.MaxDurable(); got != tt.wantMax {
				t.Errorf("MaxDurable() = %d, want %d", got, tt.wantMax)
			}
			if got := tr.Failures(); !slices.Equal(got, tt.wantFailures) {
				t.Errorf("Failures() = %q, want %q", got, tt.wantFailures)
			}
			for _, b := range tt.wantBoots {
				if got, ok := tr.Boot(b.ID); !ok || got != b {
					t.Errorf("Boot(%s) = %+v, %v", b.ID, got, ok)
				}
			}
			if tr.String() == "" {
				t.Error("String() is empty")
			}
		})
	}
}

func TestWaitGuest(t *testing.T) {
	ctx := t.Context()
	log := startLine(bootA, 0)
	reads := 0
	read := func(context.Context) ([]byte, error) {
		reads++
		if reads == 1 {
			return nil, errors.New("connection refused")
		}
		log += durableLine(bootA, uint64(reads))
		return []byte(log), nil
	}
	tr := NewGuestTrace()
	start := time.Now()
	err := WaitGuest(ctx, 10*time.Second, "three durable lines", tr, read, func(tr *GuestTrace) error {
		if b, _ := tr.Boot(bootA); b.Durables < 3 {
			return fmt.Errorf("%d durable lines", b.Durables)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Reads 2, 3 and 4 hold the lines; read 1 failed.
	if reads != 4 {
		t.Errorf("%d reads, want 4", reads)
	}
	if took := time.Since(start); took < 3*GuestPollInterval {
		t.Errorf("4 reads took %s, want them GuestPollInterval (%s) apart", took, GuestPollInterval)
	}

	tr = NewGuestTrace()
	err = WaitGuest(ctx, 1200*time.Millisecond, "a boot that never comes", tr,
		func(context.Context) ([]byte, error) { return []byte("GUEST FAILED: no disk\n"), nil },
		func(tr *GuestTrace) error { return errors.New("no boot yet") })
	if err == nil || !strings.Contains(err.Error(), "no boot yet") || !strings.Contains(err.Error(), "GUEST FAILED: no disk") {
		t.Errorf("WaitGuest = %v, want the condition's error and the guest's failure", err)
	}
}

// FuzzGuestTrace feeds arbitrary serial output: a trace never panics, and
// whatever it reports comes from lines serial.Parse accepts.
func FuzzGuestTrace(f *testing.F) {
	f.Add([]byte(startLine(bootA, 3) + durableLine(bootA, 4)))
	f.Add([]byte("GUEST FAILED: x\r\nDURABLE boot=a n=1"))
	f.Add([]byte("\n\n\r\nDURABLE boot= n=\n"))
	f.Fuzz(func(t *testing.T, log []byte) {
		tr := NewGuestTrace()
		tr.Add(log)
		tr.Add(log)
		for _, b := range tr.Boots() {
			if b.ID == "" || strings.ContainsAny(b.ID, " \n") {
				t.Fatalf("boot id %q", b.ID)
			}
			if b.Durables == 0 && b.Durable != 0 || b.Durables > 0 && !strings.Contains(string(log), fmt.Sprintf("DURABLE boot=%s n=%d", b.ID, b.Durable)) {
				t.Fatalf("boot %+v not in the log", b)
			}
		}
		_ = tr.String()
	})
}
