package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/services/qmp"
)

// MigrateOptions are the explicit limits of one live migration
// (issue 5: "QMP migration over the preferred private link with explicit
// bandwidth and downtime limits").
type MigrateOptions struct {
	// BandwidthBytes is the most the migration stream may use, in bytes
	// per second (QEMU's max-bandwidth).
	BandwidthBytes int64
	// DowntimeLimit is the longest the guest may be paused for the final
	// copy (QEMU's downtime-limit), a whole number of milliseconds.
	DowntimeLimit time.Duration
	// Poll is how often query-migrate is asked; 0 means 50 ms.
	Poll time.Duration
	// Log receives progress; nil logs nothing.
	Log *slog.Logger
}

// The unit's live migration limits. The private link is at least
// 1 Gbit/s; DRBD's resync controller takes its share below c-max-rate, so
// a migration may use most of a 10G link. 300 ms of downtime is below
// what TCP connections and most guests notice.
const (
	MigrationBandwidth = 800 << 20 // bytes per second
	MigrationDowntime  = 300 * time.Millisecond
)

// maxDowntimeLimit is QEMU 7.2's upper bound for downtime-limit
// (MAX_MIGRATE_DOWNTIME_SECONDS, 2000 s).
const maxDowntimeLimit = 2000 * time.Second

// MigrateStats are QEMU's own numbers for a completed migration, as the
// source reports them in query-migrate.
type MigrateStats struct {
	// TotalTime is from the start of the migration to its completion.
	TotalTime time.Duration
	// Downtime is how long the guest was paused for the switchover.
	Downtime time.Duration
	// ExpectedDowntime is QEMU's last estimate of Downtime while the
	// migration was active (0 when it completed before one was given).
	ExpectedDowntime time.Duration
	// SetupTime is the time before the first RAM page was sent.
	SetupTime time.Duration
	// TransferredBytes is the RAM sent over the stream.
	TransferredBytes int64
	// TotalBytes is the guest's RAM size.
	TotalBytes int64
}

// ErrMigrationFailed is wrapped by LiveMigrate's error when QEMU reports the
// migration failed or cancelled; the VM then runs on the source.
var ErrMigrationFailed = errors.New("live migration failed")

// LiveMigrate moves the running VM from the QEMU behind src to the one behind
// dst, which must have been started with Machine.Incoming (-incoming
// defer) on the same volumes. It has dst listen on uri ("tcp:host:port"
// or "unix:/path"; dst's side of the link), sets the limits on src,
// starts the migration and polls query-migrate until it completes, fails
// or ctx ends.
//
// On success the guest runs on dst and src is in the postmigrate state,
// to be quit by the caller. On any failure, including ctx ending, the
// migration is cancelled and the VM keeps running on the source: LiveMigrate
// resumes src ("cont") if it was running before and was left paused.
// The caller then quits dst, which never ran the guest. A cancellation
// that comes too late to stop the switchover (QEMU reports completed)
// is a success: the VM runs on dst and must not be resumed on src.
//
// dst may be nil when the target's QMP is out of reach (it runs on the
// peer PM) and the peer has already run migrate-incoming on uri itself.
func LiveMigrate(ctx context.Context, src, dst *qmp.Client, uri string, opt MigrateOptions) (MigrateStats, error) {
	if err := checkMigrationURI(uri); err != nil {
		return MigrateStats{}, err
	}
	if opt.BandwidthBytes <= 0 {
		return MigrateStats{}, fmt.Errorf("migrate: bandwidth %d bytes/s: want a positive limit", opt.BandwidthBytes)
	}
	if opt.DowntimeLimit < time.Millisecond || opt.DowntimeLimit > maxDowntimeLimit || opt.DowntimeLimit%time.Millisecond != 0 {
		return MigrateStats{}, fmt.Errorf("migrate: downtime limit %s: want whole milliseconds from 1ms to %s", opt.DowntimeLimit, maxDowntimeLimit)
	}
	poll := opt.Poll
	if poll <= 0 {
		poll = 50 * time.Millisecond
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	var before struct {
		Running bool   `json:"running"`
		Status  string `json:"status"`
	}
	if err := src.Execute(ctx, "query-status", nil, &before); err != nil {
		return MigrateStats{}, fmt.Errorf("migrate: source: %w", err)
	}
	if dst != nil {
		if err := dst.Execute(ctx, "migrate-incoming", map[string]any{"uri": uri}, nil); err != nil {
			return MigrateStats{}, fmt.Errorf("migrate: target listening on %s: %w", uri, err)
		}
	}
	params := map[string]any{
		"max-bandwidth":  opt.BandwidthBytes,
		"downtime-limit": opt.DowntimeLimit.Milliseconds(),
	}
	if err := src.Execute(ctx, "migrate-set-parameters", params, nil); err != nil {
		return MigrateStats{}, fmt.Errorf("migrate: source limits: %w", err)
	}
	log.Info("migration starting", "uri", uri, "bandwidth_bytes", opt.BandwidthBytes, "downtime_limit", opt.DowntimeLimit)
	if err := src.Execute(ctx, "migrate", map[string]any{"uri": uri}, nil); err != nil {
		return MigrateStats{}, errors.Join(fmt.Errorf("migrate: start: %w", err), recoverSource(src, before.Running, log))
	}

	var expected time.Duration
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		info, err := queryMigrate(ctx, src)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return MigrateStats{}, errors.Join(fmt.Errorf("migrate: %w", err), cancelMigration(src, before.Running, log))
		}
		if info.ExpectedDowntime > 0 {
			expected = info.ExpectedDowntime
		}
		switch info.Status {
		case "completed":
			if info.TotalTime == 0 && ctx.Err() == nil {
				// QEMU 7.2 reports the status before it has filled in the
				// times of the migration; they follow at once.
				break
			}
			st := info.stats()
			if st.ExpectedDowntime == 0 {
				st.ExpectedDowntime = expected
			}
			log.Info("migration completed", "total", st.TotalTime, "downtime", st.Downtime, "transferred_bytes", st.TransferredBytes)
			return st, nil
		case "failed", "cancelled":
			err := fmt.Errorf("migrate to %s: %w: QEMU status %s: %s", uri, ErrMigrationFailed, info.Status, info.ErrorDesc)
			return MigrateStats{}, errors.Join(err, recoverSource(src, before.Running, log))
		}
		select {
		case <-tick.C:
			continue
		case <-ctx.Done():
		}
		break
	}
	// ctx ended while the migration was under way.
	if err := cancelMigration(src, before.Running, log); err != nil {
		var done *completedAnyway
		if errors.As(err, &done) {
			log.Warn("migration completed although cancelled", "total", done.stats.TotalTime, "downtime", done.stats.Downtime)
			return done.stats, nil
		}
		return MigrateStats{}, errors.Join(fmt.Errorf("migrate to %s: %w", uri, ctx.Err()), err)
	}
	return MigrateStats{}, fmt.Errorf("migrate to %s: %w", uri, ctx.Err())
}

// recoveryTimeout bounds the cleanup after a failure, which runs even
// when the caller's ctx has ended.
const recoveryTimeout = 30 * time.Second

// completedAnyway is cancelMigration's report that the switchover had
// already happened: the VM runs on the target.
type completedAnyway struct{ stats MigrateStats }

func (c *completedAnyway) Error() string { return "migration completed before it could be cancelled" }

// cancelMigration asks src to stop the migration, waits until QEMU says
// it has stopped, and then makes sure the guest runs on src.
func cancelMigration(src *qmp.Client, wasRunning bool, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), recoveryTimeout)
	defer cancel()
	log.Warn("cancelling migration")
	if err := src.Execute(ctx, "migrate_cancel", nil, nil); err != nil {
		return fmt.Errorf("migrate_cancel: %w", err)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := queryMigrate(ctx, src)
		if err != nil {
			return err
		}
		switch info.Status {
		case "completed":
			return &completedAnyway{info.stats()}
		case "failed", "cancelled", "none":
			return recoverSource(src, wasRunning, log)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("migration still %s %s after migrate_cancel: %w", info.Status, recoveryTimeout, ctx.Err())
		}
	}
}

// recoverSource resumes the guest on src if it ran before the migration
// and is not running now (QEMU restarts it itself after most failures;
// this covers the rest).
func recoverSource(src *qmp.Client, wasRunning bool, log *slog.Logger) error {
	if !wasRunning {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), recoveryTimeout)
	defer cancel()
	var st struct {
		Running bool   `json:"running"`
		Status  string `json:"status"`
	}
	if err := src.Execute(ctx, "query-status", nil, &st); err != nil {
		return fmt.Errorf("source after failed migration: %w", err)
	}
	if st.Running {
		return nil
	}
	log.Warn("resuming the source after a failed migration", "status", st.Status)
	if err := src.Execute(ctx, "cont", nil, nil); err != nil {
		return fmt.Errorf("resuming the source (status %s): %w", st.Status, err)
	}
	return nil
}

func queryMigrate(ctx context.Context, c *qmp.Client) (MigrationInfo, error) {
	var raw json.RawMessage
	if err := c.Execute(ctx, "query-migrate", nil, &raw); err != nil {
		return MigrationInfo{}, err
	}
	return ParseMigrationInfo(raw)
}

// checkMigrationURI accepts the transports Dyad uses: tcp to a host and
// port, or a unix socket. QEMU's exec: and fd: are refused: exec: runs a
// shell command.
func checkMigrationURI(uri string) error {
	switch {
	case strings.HasPrefix(uri, "tcp:"):
		hp := strings.TrimPrefix(uri, "tcp:")
		i := strings.LastIndexByte(hp, ':')
		if i <= 0 || i == len(hp)-1 || strings.ContainsFunc(hp, func(r rune) bool { return r <= ' ' || r == ',' || r == 0x7f }) {
			return fmt.Errorf("migrate: URI %q: want tcp:HOST:PORT", uri)
		}
		return nil
	case strings.HasPrefix(uri, "unix:"):
		if err := checkPath(strings.TrimPrefix(uri, "unix:")); err != nil {
			return fmt.Errorf("migrate: URI %q: %w", uri, err)
		}
		return nil
	}
	return fmt.Errorf("migrate: URI %q: use tcp:HOST:PORT or unix:/PATH", uri)
}

// MigrationInfo is the part of QEMU's query-migrate reply that LiveMigrate
// uses.
type MigrationInfo struct {
	// Status is QEMU's MigrationStatus: "none", "setup", "active",
	// "completed", "failed", "cancelling", "cancelled" and others.
	Status           string
	TotalTime        time.Duration
	Downtime         time.Duration
	ExpectedDowntime time.Duration
	SetupTime        time.Duration
	TransferredBytes int64
	TotalBytes       int64
	RemainingBytes   int64
	// ErrorDesc is QEMU's reason for a failed migration.
	ErrorDesc string
}

func (i MigrationInfo) stats() MigrateStats {
	return MigrateStats{
		TotalTime:        i.TotalTime,
		Downtime:         i.Downtime,
		ExpectedDowntime: i.ExpectedDowntime,
		SetupTime:        i.SetupTime,
		TransferredBytes: i.TransferredBytes,
		TotalBytes:       i.TotalBytes,
	}
}

// migrationStatuses are QEMU 7.2's MigrationStatus values.
var migrationStatuses = map[string]bool{
	"none": true, "setup": true, "cancelling": true, "cancelled": true,
	"active": true, "postcopy-active": true, "postcopy-paused": true,
	"postcopy-recover": true, "completed": true, "failed": true,
	"colo": true, "pre-switchover": true, "device": true, "wait-unplug": true,
}

// maxMigrationMillis bounds the times in a reply (about 292 years would
// overflow time.Duration; a day is already absurd, a year is generous).
const maxMigrationMillis = 365 * 24 * 3600 * 1000

// ParseMigrationInfo decodes the "return" member of query-migrate. The
// bytes come from QEMU, so wrong types, negative numbers and unknown
// statuses are errors rather than zeros. QEMU omits status before the
// first migration; that is "none".
func ParseMigrationInfo(raw []byte) (MigrationInfo, error) {
	var w struct {
		Status           *string `json:"status"`
		TotalTime        *int64  `json:"total-time"`
		Downtime         *int64  `json:"downtime"`
		ExpectedDowntime *int64  `json:"expected-downtime"`
		SetupTime        *int64  `json:"setup-time"`
		ErrorDesc        string  `json:"error-desc"`
		RAM              *struct {
			Transferred int64 `json:"transferred"`
			Total       int64 `json:"total"`
			Remaining   int64 `json:"remaining"`
		} `json:"ram"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return MigrationInfo{}, fmt.Errorf("query-migrate reply: %w", err)
	}
	info := MigrationInfo{Status: "none", ErrorDesc: w.ErrorDesc}
	if w.Status != nil {
		if !migrationStatuses[*w.Status] {
			return MigrationInfo{}, fmt.Errorf("query-migrate reply: unknown status %q", *w.Status)
		}
		info.Status = *w.Status
	}
	for _, f := range []struct {
		name string
		v    *int64
		to   *time.Duration
	}{
		{"total-time", w.TotalTime, &info.TotalTime},
		{"downtime", w.Downtime, &info.Downtime},
		{"expected-downtime", w.ExpectedDowntime, &info.ExpectedDowntime},
		{"setup-time", w.SetupTime, &info.SetupTime},
	} {
		if f.v == nil {
			continue
		}
		if *f.v < 0 || *f.v > maxMigrationMillis {
			return MigrationInfo{}, fmt.Errorf("query-migrate reply: %s %d ms out of range", f.name, *f.v)
		}
		*f.to = time.Duration(*f.v) * time.Millisecond
	}
	if w.RAM != nil {
		if w.RAM.Transferred < 0 || w.RAM.Total < 0 || w.RAM.Remaining < 0 {
			return MigrationInfo{}, fmt.Errorf("query-migrate reply: negative RAM counters %+v", *w.RAM)
		}
		info.TransferredBytes, info.TotalBytes, info.RemainingBytes = w.RAM.Transferred, w.RAM.Total, w.RAM.Remaining
	}
	return info, nil
}
