// Command bench boots a two-PM Dyad unit in QEMU from the built image and
// measures it: image size, boot time, formation time, API latency, the
// time the primary takes to declare a cut-off secondary lost, and the time
// the survivor takes to serve the management IP after the primary loses
// power; on a second unit, the live migration and the failover of a VM,
// against a plain QEMU migration of the same guest (vm.go). Each number is
// printed as "BENCH <name> <value> <unit>" and appended to a file per UTC
// day in the results directory:
//
//	go run ./qemu-tests/bench [-out out] [-results bench/results] [-repeat N]
package main

import (
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
)

const mgmtURL = "http://" + harness.MgmtIP

// Deadlines of the steps of one run.
const (
	bootTimeout     = 5 * time.Minute // start to health, and start to formed
	syncTimeout     = time.Minute     // secondary's unit database in step
	takeoverTimeout = 2 * time.Minute
	peerLossTimeout = time.Minute     // links cut to the peer declared broken
	reformTimeout   = 2 * time.Minute // links back to formed and in step
	requestTimeout  = 2 * time.Second // any single API request
)

// latencySamples is how many sequential GET /api/v1/pms the latency is
// taken from.
const latencySamples = 50

func main() {
	out := flag.String("out", "out", "directory holding the built image")
	results := flag.String("results", "bench/results", "directory of the result history, one file per UTC day")
	repeat := flag.Int("repeat", 1, "boot this many units; above 1 the median is reported with _min and _max")
	only := flag.String("only", "", `"vm" measures only the VM numbers (live migration, failover, the plain-QEMU reference)`)
	flag.Parse()
	if *repeat < 1 || flag.NArg() > 0 || *only != "" && *only != "vm" {
		flag.Usage()
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, *out, *results, *repeat, *only == "vm"); err != nil {
		log.Error("bench failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, out, results string, repeat int, vmOnly bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// QEMU takes the kernel and initramfs paths as given; the plain-QEMU
	// reference refuses relative ones.
	out, err := filepath.Abs(out)
	if err != nil {
		return err
	}

	sizes, err := imageSizes(filepath.Join(out, harness.InitramfsFile))
	if err != nil {
		return err
	}
	var runs [][]sample
	var accel string
	for i := 1; i <= repeat; i++ {
		log.Info("bench run", "run", i, "of", repeat)
		var s []sample
		var acc string // measureUnit's; the VM unit probes its own
		if !vmOnly {
			s, acc, err = measureUnit(ctx, log, out)
			if err != nil {
				return fmt.Errorf("run %d of %d: %w", i, repeat, err)
			}
		}
		vs, err := vmBench(ctx, log, out)
		if err != nil {
			return fmt.Errorf("run %d of %d: vm: %w", i, repeat, err)
		}
		s = append(s, vs...)
		log.Info("bench run done", "run", i, "samples", fmt.Sprint(s))
		runs, accel = append(runs, s), acc
	}
	if vmOnly {
		sizes = nil
	}
	lines := formatAll(append(sizes, summarize(runs)...))
	fmt.Print(lines)
	return appendResults(results, header(log, accel, repeat)+lines)
}

// sample is one measured value.
type sample struct {
	name  string
	value float64
	unit  string
}

func (s sample) String() string {
	switch s.unit {
	case "bytes":
		return fmt.Sprintf("BENCH %s %d %s", s.name, int64(s.value), s.unit)
	case "ms":
		return fmt.Sprintf("BENCH %s %.2f %s", s.name, s.value, s.unit)
	default:
		return fmt.Sprintf("BENCH %s %.3f %s", s.name, s.value, s.unit)
	}
}

func formatAll(samples []sample) string {
	var b strings.Builder
	for _, s := range samples {
		fmt.Fprintln(&b, s)
	}
	return b.String()
}

// imageSizes measures the initramfs as shipped and as the kernel unpacks it.
func imageSizes(initramfs string) ([]sample, error) {
	f, err := os.Open(initramfs)
	if err != nil {
		return nil, fmt.Errorf("image size (run make image): %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("image size: %w", err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("image size: %s: %w", initramfs, err)
	}
	n, err := io.Copy(io.Discard, zr)
	if err != nil {
		return nil, fmt.Errorf("image size: uncompressing %s: %w", initramfs, err)
	}
	return []sample{
		{"initramfs_bytes", float64(st.Size()), "bytes"},
		{"initramfs_uncompressed_bytes", float64(n), "bytes"},
	}, nil
}

// measureUnit boots one unit, measures it and powers it off again. The
// unit's logs are removed after a good run and kept after a failure.
func measureUnit(ctx context.Context, log *slog.Logger, out string) (_ []sample, accel string, err error) {
	workDir, err := os.MkdirTemp("", "dyad-bench-")
	if err != nil {
		return nil, "", fmt.Errorf("work dir: %w", err)
	}
	start := time.Now()
	u, err := harness.Start(ctx, harness.Options{Out: out, N: 2, WorkDir: workDir, Log: log})
	if err != nil {
		return nil, "", fmt.Errorf("%w (logs in %s)", err, workDir)
	}
	defer func() {
		err = errors.Join(err, u.Close())
		if err != nil {
			err = fmt.Errorf("%w (serial and QEMU logs in %s)", err, workDir)
			return
		}
		if rerr := os.RemoveAll(workDir); rerr != nil {
			log.Warn("removing work dir", "dir", workDir, "err", rerr)
		}
	}()

	// Polls get a connection of their own: a dead primary's connections
	// would otherwise hang until the request timeout.
	poll := apiclient.New(mgmtURL, "admin", "admin", &http.Client{
		Transport: &http.Transport{DialContext: u.Dial, DisableKeepAlives: true},
		Timeout:   requestTimeout,
	})
	var s []sample

	err = harness.WaitFor(ctx, bootTimeout, "GET /api/v1/health through the management IP", func(ctx context.Context) (bool, error) {
		_, err := poll.Health(ctx)
		return err == nil, err
	})
	if err != nil {
		return nil, "", err
	}
	s = append(s, sample{"pm_boot_to_api_seconds", time.Since(start).Seconds(), "s"})

	var pms []unit.PM
	err = harness.WaitFor(ctx, bootTimeout-time.Since(start), "the unit to form (2 PMs running, one primary, all paths up)", func(ctx context.Context) (bool, error) {
		var err error
		if pms, err = poll.PMs(ctx); err != nil {
			return false, err
		}
		err = unit.Formed(pms)
		return err == nil, err
	})
	if err != nil {
		return nil, "", err
	}
	s = append(s, sample{"unit_formed_seconds", time.Since(start).Seconds(), "s"})

	// Measured with a session, as the console and dyadctl work: a password
	// would cost a bcrypt hash per request.
	session := u.HTTPClient()
	session.Timeout = requestTimeout
	lat, err := apiLatency(ctx, "api_latency", apiclient.New(mgmtURL, "admin", "admin", session))
	if err != nil {
		return nil, "", err
	}
	s = append(s, lat...)

	st, err := storageBench(ctx, log, u, poll)
	if err != nil {
		return nil, "", fmt.Errorf("storage: %w", err)
	}
	s = append(s, st...)
	// A nested boot can take minutes under TCG on a loaded host: its
	// failure leaves the number out rather than every other one.
	if ns, err := nestedBench(ctx, log, u, s); err != nil {
		log.Warn("nested guest boot not measured", "err", err)
	} else {
		s = ns
	}

	// Before the power-off: it needs both PMs, and the unit is formed
	// again before the primary fails.
	peer, err := peerLoss(ctx, log, u, poll, primaryOf(pms))
	if err != nil {
		return nil, "", err
	}
	s = append(s, peer)

	// Fail the primary in steady state, as a real failure would find it.
	if pms, err = waitSteady(ctx, poll, syncTimeout, "the unit formed with the secondary's unit database in step"); err != nil {
		return nil, "", err
	}
	takeover, err := primaryTakeover(ctx, log, u, poll, primaryOf(pms))
	if err != nil {
		return nil, "", err
	}
	s = append(s, takeover...)
	return s, u.Accel(), nil
}

// peerLoss cuts every link of the secondary and times how long the primary
// takes to declare it broken, as peer_loss_detect_seconds. It then plugs the
// links back and waits until the unit is formed and in step again. Cut off,
// the secondary promotes itself too; the epochs settle that once the links
// are back, which is why the wait is for a formed unit and not just for the
// links.
func peerLoss(ctx context.Context, log *slog.Logger, u *harness.Unit, poll *apiclient.Client, primary int) (sample, error) {
	secondary := 3 - primary
	links := []string{harness.LinkPriv0, harness.LinkIbiz0}
	log.Info("cutting every link of the secondary", "pm", secondary, "links", links)
	cut := time.Now()
	for _, l := range links {
		if err := u.PM(secondary).SetLink(ctx, l, false); err != nil {
			return sample{}, fmt.Errorf("peer loss: %w", err)
		}
	}
	// The primary keeps its links, so the management IP stays its own.
	err := harness.WaitFor(ctx, peerLossTimeout, fmt.Sprintf("pm%d to report pm%d broken", primary, secondary), func(ctx context.Context) (bool, error) {
		pms, err := poll.PMs(ctx)
		if err != nil {
			return false, err
		}
		for _, pm := range pms {
			if pm.ID == secondary {
				if pm.State != unit.PMBroken {
					return false, fmt.Errorf("pm%d is %s", secondary, pm.State)
				}
				return true, nil
			}
		}
		return false, fmt.Errorf("pm%d not listed", secondary)
	})
	if err != nil {
		return sample{}, fmt.Errorf("peer loss: %w", err)
	}
	detected := sample{"peer_loss_detect_seconds", time.Since(cut).Seconds(), "s"}

	log.Info("plugging the secondary's links back", "pm", secondary)
	for _, l := range links {
		if err := u.PM(secondary).SetLink(ctx, l, true); err != nil {
			return sample{}, fmt.Errorf("peer loss: restoring: %w", err)
		}
	}
	if _, err := waitSteady(ctx, poll, reformTimeout, "the unit to form again after the secondary's links came back"); err != nil {
		return sample{}, fmt.Errorf("peer loss: %w", err)
	}
	return detected, nil
}

// waitSteady waits until the unit is formed and both PMs hold the same
// unit database position, and returns the PMs as last seen.
func waitSteady(ctx context.Context, poll *apiclient.Client, timeout time.Duration, what string) ([]unit.PM, error) {
	var pms []unit.PM
	err := harness.WaitFor(ctx, timeout, what, func(ctx context.Context) (bool, error) {
		var err error
		if pms, err = poll.PMs(ctx); err != nil {
			return false, err
		}
		if err := unit.Formed(pms); err != nil {
			return false, err
		}
		if pms[0].DatabaseSeq == 0 || pms[0].DatabaseSeq != pms[1].DatabaseSeq {
			return false, fmt.Errorf("database positions %v", seqs(pms))
		}
		return true, nil
	})
	return pms, err
}

// primaryTakeover powers off the primary and times, from that moment, the
// survivor answering GET /api/v1/unit as primary (primary_takeover_seconds)
// and GET /api/v1/health on the management IP as itself
// (mgmt_ip_takeover_seconds). Both are polled at once so that neither
// poll's latency delays the other's clock.
func primaryTakeover(ctx context.Context, log *slog.Logger, u *harness.Unit, poll *apiclient.Client, lost int) ([]sample, error) {
	survivor := 3 - lost
	log.Info("powering off the primary", "pm", lost)
	failed := time.Now()
	if err := u.PM(lost).PowerOff(ctx); err != nil {
		return nil, err
	}
	var (
		wg                 sync.WaitGroup
		unitDone, mgmtDone time.Duration
		unitErr, mgmtErr   error
	)
	wg.Go(func() {
		unitErr = harness.WaitFor(ctx, takeoverTimeout, fmt.Sprintf("pm%d to answer as primary on the management IP", survivor), func(ctx context.Context) (bool, error) {
			un, err := poll.Unit(ctx)
			if err != nil {
				return false, err
			}
			if un.Primary != survivor {
				return false, fmt.Errorf("primary is pm%d", un.Primary)
			}
			return true, nil
		})
		unitDone = time.Since(failed)
	})
	wg.Go(func() {
		mgmtErr = harness.WaitFor(ctx, takeoverTimeout, fmt.Sprintf("GET /api/v1/health on the management IP to answer from pm%d", survivor), func(ctx context.Context) (bool, error) {
			h, err := poll.Health(ctx)
			if err != nil {
				return false, err
			}
			if h.PM != survivor {
				return false, fmt.Errorf("answered by pm%d", h.PM)
			}
			return true, nil
		})
		mgmtDone = time.Since(failed)
	})
	wg.Wait()
	if err := errors.Join(unitErr, mgmtErr); err != nil {
		return nil, err
	}
	return []sample{
		{"primary_takeover_seconds", unitDone.Seconds(), "s"},
		{"mgmt_ip_takeover_seconds", mgmtDone.Seconds(), "s"},
	}, nil
}

// apiLatency times sequential authenticated GET /api/v1/pms over a kept-alive
// connection, after one request that opens it, as name_ms and name_p95_ms.
func apiLatency(ctx context.Context, name string, c *apiclient.Client) ([]sample, error) {
	if _, err := c.PMs(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ms := make([]float64, 0, latencySamples)
	for range latencySamples {
		t := time.Now()
		if _, err := c.PMs(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		ms = append(ms, float64(time.Since(t).Microseconds())/1000)
	}
	return []sample{
		{name + "_ms", median(ms), "ms"},
		{name + "_p95_ms", percentile(ms, 95), "ms"},
	}, nil
}

// primaryOf is the id of the primary of a formed unit.
func primaryOf(pms []unit.PM) int {
	for _, pm := range pms {
		if pm.Role == unit.RolePrimary {
			return pm.ID
		}
	}
	panic("bench: primaryOf called on a unit without a primary")
}

func seqs(pms []unit.PM) []uint64 {
	var s []uint64
	for _, pm := range pms {
		s = append(s, pm.DatabaseSeq)
	}
	return s
}

// header is the comment line that precedes a run's lines in the history.
func header(log *slog.Logger, accel string, repeat int) string {
	rev := "unknown"
	if b, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		rev = strings.TrimSpace(string(b))
	} else {
		log.Warn("git revision unknown", "err", err)
	}
	return fmt.Sprintf("# %s rev=%s accel=%s nproc=%d repeat=%d\n",
		time.Now().UTC().Format(time.RFC3339), rev, accel, runtime.NumCPU(), repeat)
}

func appendResults(dir, text string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	path := filepath.Join(dir, time.Now().UTC().Format(time.DateOnly)+".txt")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	return nil
}
