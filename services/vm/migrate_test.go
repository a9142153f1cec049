package vm

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseMigrationInfo(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want MigrationInfo
		err  string
	}{
		{"never migrated", `{}`, MigrationInfo{Status: "none"}, ""},
		{"setup", `{"status": "setup", "expected-downtime": 300}`, MigrationInfo{Status: "setup", ExpectedDowntime: 300 * time.Millisecond}, ""},
		// Shape of QEMU 7.2's reply while active (fields trimmed).
		{"active", `{"expected-downtime": 300, "status": "active", "setup-time": 2, "total-time": 118,
			"ram": {"total": 268591104, "remaining": 1000, "mbps": 4294.8, "transferred": 63290531, "duplicate": 50000, "normal": 15000}}`,
			MigrationInfo{Status: "active", ExpectedDowntime: 300 * time.Millisecond, SetupTime: 2 * time.Millisecond,
				TotalTime: 118 * time.Millisecond, TotalBytes: 268591104, RemainingBytes: 1000, TransferredBytes: 63290531}, ""},
		{"completed", `{"status": "completed", "setup-time": 1, "downtime": 12, "total-time": 480,
			"ram": {"total": 268591104, "remaining": 0, "transferred": 7000000}}`,
			MigrationInfo{Status: "completed", SetupTime: time.Millisecond, Downtime: 12 * time.Millisecond,
				TotalTime: 480 * time.Millisecond, TotalBytes: 268591104, TransferredBytes: 7000000}, ""},
		{"failed", `{"status": "failed", "error-desc": "Failed to connect socket: Connection refused"}`,
			MigrationInfo{Status: "failed", ErrorDesc: "Failed to connect socket: Connection refused"}, ""},
		{"not an object", `[]`, MigrationInfo{}, "query-migrate reply"},
		{"not JSON", `{"status":`, MigrationInfo{}, "query-migrate reply"},
		{"unknown status", `{"status": "flying"}`, MigrationInfo{}, `unknown status "flying"`},
		{"status wrong type", `{"status": 3}`, MigrationInfo{}, "query-migrate reply"},
		{"negative downtime", `{"status": "completed", "downtime": -1}`, MigrationInfo{}, "downtime -1 ms out of range"},
		{"huge total time", `{"status": "completed", "total-time": 9223372036854775807}`, MigrationInfo{}, "total-time"},
		{"fractional time", `{"status": "completed", "total-time": 1.5}`, MigrationInfo{}, "query-migrate reply"},
		{"negative RAM", `{"status": "active", "ram": {"transferred": -5}}`, MigrationInfo{}, "negative RAM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMigrationInfo([]byte(tt.raw))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseMigrationInfo = %+v, %v; want error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ParseMigrationInfo =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

// FuzzParseMigrationInfo checks that no reply crashes the decoder and
// that an accepted one holds a known status and no negative number.
func FuzzParseMigrationInfo(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"status": "completed", "setup-time": 1, "downtime": 12, "total-time": 480, "ram": {"total": 268591104, "remaining": 0, "transferred": 7000000}}`))
	f.Add([]byte(`{"status": "failed", "error-desc": "x"}`))
	f.Add([]byte(`{"status": "active", "expected-downtime": -1}`))
	f.Add([]byte(`{"ram": null, "status": null}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		info, err := ParseMigrationInfo(raw)
		if err != nil {
			return
		}
		if !migrationStatuses[info.Status] {
			t.Fatalf("accepted unknown status %q", info.Status)
		}
		for _, d := range []time.Duration{info.TotalTime, info.Downtime, info.ExpectedDowntime, info.SetupTime} {
			if d < 0 || d > maxMigrationMillis*time.Millisecond {
				t.Fatalf("accepted duration %s: %+v", d, info)
			}
		}
		if info.TransferredBytes < 0 || info.TotalBytes < 0 || info.RemainingBytes < 0 {
			t.Fatalf("accepted negative counters: %+v", info)
		}
		if !json.Valid(raw) {
			t.Fatalf("accepted invalid JSON %q", raw)
		}
	})
}

func TestCheckMigrationURI(t *testing.T) {
	tests := []struct {
		uri string
		ok  bool
	}{
		{"tcp:127.0.0.1:4444", true},
		{"tcp:[::1]:4444", true},
		{"tcp:pm2-priv0:4444", true},
		{"unix:/run/dyad/vm/web1/migrate.sock", true},
		{"exec:cat > /tmp/x", false},
		{"fd:3", false},
		{"tcp:127.0.0.1", false},
		{"tcp::4444", false},
		{"tcp:127.0.0.1:", false},
		{"tcp:1.2.3.4:5,x", false},
		{"tcp:1.2.3.4 :5", false},
		{"unix:relative.sock", false},
		{"unix:/a,b", false},
		{"", false},
	}
	for _, tt := range tests {
		err := checkMigrationURI(tt.uri)
		if (err == nil) != tt.ok {
			t.Errorf("checkMigrationURI(%q) = %v, want ok=%v", tt.uri, err, tt.ok)
		}
	}
}

// TestLiveMigrateRefusesOptions checks the limits before any QMP traffic:
// the nil clients would panic if LiveMigrate used them.
func TestLiveMigrateRefusesOptions(t *testing.T) {
	good := MigrateOptions{BandwidthBytes: 100 << 20, DowntimeLimit: 300 * time.Millisecond}
	tests := []struct {
		name string
		uri  string
		edit func(o *MigrateOptions)
		want string
	}{
		{"exec URI", "exec:true", func(o *MigrateOptions) {}, "use tcp:HOST:PORT or unix:/PATH"},
		{"no bandwidth", "tcp:127.0.0.1:1", func(o *MigrateOptions) { o.BandwidthBytes = 0 }, "bandwidth 0"},
		{"no downtime limit", "tcp:127.0.0.1:1", func(o *MigrateOptions) { o.DowntimeLimit = 0 }, "downtime limit 0s"},
		{"sub-millisecond downtime", "tcp:127.0.0.1:1", func(o *MigrateOptions) { o.DowntimeLimit = 1500 * time.Microsecond }, "whole milliseconds"},
		{"downtime over QEMU's bound", "tcp:127.0.0.1:1", func(o *MigrateOptions) { o.DowntimeLimit = 2001 * time.Second }, "whole milliseconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.edit(&o)
			_, err := LiveMigrate(context.Background(), nil, nil, tt.uri, o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LiveMigrate: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
