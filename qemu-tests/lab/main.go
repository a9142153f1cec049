// Command lab boots a two-PM Dyad unit in QEMU from the artifacts in out/
// and serves its console on the host's loopback until Ctrl-C:
//
//	go run ./qemu-tests/lab [-out out] [-port 8080]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dyad-ha/dyad/qemu-tests/harness"
	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
)

// progressEvery is how often the lab reports while the console is not up.
const progressEvery = 5 * time.Second

func main() {
	out := flag.String("out", "out", "directory holding the built image (dyad-kernel, dyad-initramfs.cpio.gz)")
	workDir := flag.String("workdir", "", "directory for the PMs' disks and logs (default OUT/lab); both are recreated at start")
	port := flag.Int("port", 8080, "host loopback port for the console; a free one is picked if it is taken")
	memory := flag.Int("memory", 1024, "memory per PM in MiB")
	wait := flag.Duration("wait", 10*time.Minute, "how long to wait for the console to answer")
	flag.Parse()
	if *workDir == "" {
		*workDir = filepath.Join(*out, "lab")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, *out, *workDir, *port, *memory, *wait); err != nil {
		log.Error("lab failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, out, workDir string, port, memory int, wait time.Duration) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	u, err := harness.Start(ctx, harness.Options{Out: out, WorkDir: workDir, MemoryMiB: memory, Log: log})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	// Deferred, so that it also runs while a panic unwinds.
	defer func() {
		fmt.Println("Stopping the unit...")
		if cerr := u.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()

	target := harness.MgmtIP + ":80"
	ln, err := u.Forward(ctx, fmt.Sprintf("127.0.0.1:%d", port), target)
	if errors.Is(err, syscall.EADDRINUSE) {
		log.Warn("port taken, picking a free one", "port", port)
		ln, err = u.Forward(ctx, "127.0.0.1:0", target)
	}
	if err != nil {
		return err
	}
	url := "http://" + ln.Addr().String()

	fmt.Printf("Booting PMs (accel %s, namespace %s); waiting up to %s for the console at %s\n", u.Accel(), u.Namespace(), wait, url)
	if err := waitHealthy(ctx, u, url, wait); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	var logs []string
	for _, pm := range u.PMs() {
		logs = append(logs, pm.SerialLogPath())
	}
	bmcs := configureBMCs(ctx, log, u, url)
	fmt.Printf(`
Dyad lab unit %q is up.
  Console:       %s/
  First login:   admin / admin
  Serial logs:   %s
  Namespace:     %s (ip netns exec %s ...)
  Quorum server: %s (in the namespace)
  BMCs (IPMI):   %s
Ctrl-C stops the unit.
`, harness.UnitName, url, strings.Join(logs, ", "), u.Namespace(), u.Namespace(), harness.QuorumAddr, bmcs)
	<-ctx.Done()
	return nil
}

// waitHealthy polls GET /api/v1/health through the forwarder, reporting
// progress with the last console line of each PM.
func waitHealthy(ctx context.Context, u *harness.Unit, url string, wait time.Duration) error {
	client := &http.Client{Transport: &http.Transport{}, Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	start := time.Now()
	nextReport := start.Add(progressEvery)
	return harness.WaitFor(ctx, wait, "GET "+url+"/api/v1/health", func(ctx context.Context) (bool, error) {
		if time.Now().After(nextReport) {
			nextReport = nextReport.Add(progressEvery)
			fmt.Printf("  still waiting (%s)\n", time.Since(start).Round(time.Second))
			for _, pm := range u.PMs() {
				fmt.Printf("    pm%d: %s\n", pm.N(), lastLine(pm.SerialLog()))
			}
		}
		return healthy(ctx, client, url)
	})
}

func healthy(ctx context.Context, client *http.Client, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/api/v1/health", nil)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var health struct {
		Status string `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&health); err != nil {
		return false, fmt.Errorf("health: HTTP %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || health.Status != "ok" {
		return false, fmt.Errorf("health: HTTP %s, status %q", resp.Status, health.Status)
	}
	return true, nil
}

func lastLine(b []byte) string {
	b = bytes.TrimRight(b, "\r\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	const limit = 160
	if len(b) > limit {
		b = b[:limit]
	}
	return string(bytes.TrimSpace(b))
}

// configureBMCs gives each PM a simulated BMC (ipmi_sim) and tells the unit,
// so Power On and Power Off work in the lab as on hardware. A failure only
// costs those commands.
func configureBMCs(ctx context.Context, log *slog.Logger, u *harness.Unit, url string) string {
	c := apiclient.New(url, "admin", "admin", &http.Client{Timeout: 30 * time.Second})
	var out []string
	for _, pm := range u.PMs() {
		b, err := u.StartBMC(ctx, pm.N())
		if err == nil {
			_, err = c.SetBMC(ctx, pm.N(), unit.BMC{Addr: b.Addr, User: b.User, Password: b.Password})
		}
		if err != nil {
			log.Warn("no BMC for the PM: Power On will not work for it", "pm", pm.N(), "err", err)
			out = append(out, fmt.Sprintf("pm%d none", pm.N()))
			continue
		}
		out = append(out, fmt.Sprintf("pm%d %s", pm.N(), b.Addr))
	}
	return strings.Join(out, ", ")
}
