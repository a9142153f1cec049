// Package supervise runs the long-lived services of a PM under PID 1: it
// restarts them with back-off, keeps their recent output in memory, appends it
// to a log file and copies it to the console.
package supervise

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/dyad-ha/dyad/init/logfile"
	"github.com/dyad-ha/dyad/init/reap"
	"golang.org/x/sys/unix"
)

// ExitConfig is EX_CONFIG from sysexits.h: the service found its configuration
// unusable, so restarting it cannot help.
const ExitConfig = 78

// Service is a program to keep running.
type Service struct {
	Name string   // used in console prefixes, log file names and the test channel
	Path string   // absolute path of the executable
	Args []string // arguments after argv[0]
	Env  []string
}

// Config tunes the supervisor. DefaultConfig returns the values of the
// appliance contract.
type Config struct {
	LogDir      string        // per-service log files go to LogDir/<name>.log
	Console     io.Writer     // receives every output line prefixed "[<name>] "
	RingSize    int           // bytes of recent output kept per service
	LogFileMax  int64         // a log file is rotated to .1 when it would exceed this
	MinBackoff  time.Duration // first restart delay
	MaxBackoff  time.Duration // the delay doubles up to this
	ResetAfter  time.Duration // a run at least this long resets the delay
	StopTimeout time.Duration // SIGTERM grace period before SIGKILL
	ConfigLines int           // lines of output shown when a service reports a config error
}

// DefaultConfig returns the contract's settings.
func DefaultConfig(console io.Writer) Config {
	return Config{
		LogDir:      "/data/log",
		Console:     console,
		RingSize:    256 << 10,
		LogFileMax:  8 << 20,
		MinBackoff:  time.Second,
		MaxBackoff:  30 * time.Second,
		ResetAfter:  time.Minute,
		StopTimeout: 10 * time.Second,
		ConfigLines: 40,
	}
}

// Status is a snapshot of one service.
type Status struct {
	Name        string
	Pid         int           // 0 when not running
	Starts      int           // how many times the process was started
	LastExit    string        // how the last run ended, "" before the first exit
	Backoff     time.Duration // delay used before the latest restart
	ConfigError bool          // exited with ExitConfig and will not be restarted
}

// Supervisor runs a fixed set of services.
type Supervisor struct {
	log      *slog.Logger
	reaper   *reap.Reaper
	cfg      Config
	console  sync.Mutex // serialises lines on cfg.Console
	svcs     map[string]*service
	order    []*service
	stopping chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

type service struct {
	spec   Service
	ring   *ring
	fileMu sync.Mutex // output readers of consecutive runs may overlap
	file   *logfile.File
	fileOK bool // false after a write error was logged, to log it once

	mu     sync.Mutex
	proc   *os.Process
	status Status
}

// New returns a supervisor for svcs; nothing runs until Start.
func New(log *slog.Logger, r *reap.Reaper, cfg Config, svcs ...Service) *Supervisor {
	s := &Supervisor{
		log:      log,
		reaper:   r,
		cfg:      cfg,
		svcs:     map[string]*service{},
		stopping: make(chan struct{}),
	}
	for _, spec := range svcs {
		svc := &service{
			spec:   spec,
			ring:   newRing(cfg.RingSize),
			file:   &logfile.File{Path: filepath.Join(cfg.LogDir, spec.Name+".log"), Max: cfg.LogFileMax},
			fileOK: true,
			status: Status{Name: spec.Name},
		}
		s.svcs[spec.Name] = svc
		s.order = append(s.order, svc)
	}
	return s
}

// Start launches every service. It returns at once; the services run until
// Stop.
func (s *Supervisor) Start(ctx context.Context) {
	for _, svc := range s.order {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.run(ctx, svc)
		}()
	}
}

// Log returns the recent output of the named service.
func (s *Supervisor) Log(name string) ([]byte, bool) {
	svc, ok := s.svcs[name]
	if !ok {
		return nil, false
	}
	return svc.ring.bytes(), true
}

// Signal sends sig to the named service's process.
func (s *Supervisor) Signal(name string, sig syscall.Signal) error {
	svc, ok := s.svcs[name]
	if !ok {
		return fmt.Errorf("unknown service %q", name)
	}
	svc.mu.Lock()
	pid := svc.status.Pid
	svc.mu.Unlock()
	if pid == 0 {
		return fmt.Errorf("service %s is not running", name)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal %s: %w", name, err)
	}
	return nil
}

// Status returns a snapshot of the named service.
func (s *Supervisor) Status(name string) (Status, bool) {
	svc, ok := s.svcs[name]
	if !ok {
		return Status{}, false
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	return svc.status, true
}

// Stop sends SIGTERM to every running service, SIGKILL to the process group of
// those still running after the grace period, and returns when all have
// exited or ctx is done. Services are not restarted afterwards.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stopping) })
	s.signalAll(unix.SIGTERM, false)
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		s.closeLogs()
		close(done)
	}()
	grace := time.NewTimer(s.cfg.StopTimeout)
	defer grace.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop services: %w", ctx.Err())
	case <-grace.C:
	}
	s.log.Warn("dyad-init: services did not stop in time; killing them", "grace", s.cfg.StopTimeout)
	s.signalAll(unix.SIGKILL, true)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop services after SIGKILL: %w", ctx.Err())
	}
}

// closeLogs closes the log files so the data partition can be unmounted;
// output arriving later (from a leftover grandchild) still reaches the ring
// and the console.
func (s *Supervisor) closeLogs() {
	for _, svc := range s.order {
		svc.file.Close()
	}
}

func (s *Supervisor) signalAll(sig unix.Signal, group bool) {
	for _, svc := range s.order {
		svc.mu.Lock()
		if p := svc.proc; p != nil {
			if group {
				// The group outlives its leader only while members remain, so
				// its id cannot have been reused while proc is still set.
				_ = unix.Kill(-p.Pid, sig)
			}
			if err := p.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
				s.log.Warn("dyad-init: signal service", "service", svc.spec.Name, "signal", sig.String(), "err", err)
			}
		}
		svc.mu.Unlock()
	}
}

func (s *Supervisor) stopped() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

func (s *Supervisor) run(ctx context.Context, svc *service) {
	name := svc.spec.Name
	backoff := s.cfg.MinBackoff
	for {
		started := time.Now()
		exit, err := s.runOnce(svc)
		if errors.Is(err, errStopping) {
			return
		}
		ran := time.Since(started)
		var how string
		if err != nil {
			how = err.Error()
			s.log.Error("dyad-init: cannot start service", "service", name, "err", err)
		} else {
			how = exit.String()
			s.log.Warn("dyad-init: service exited", "service", name, "exit", how, "ran", ran.Round(time.Millisecond))
		}
		if err == nil && exit.Status.Exited() && exit.Status.ExitStatus() == ExitConfig {
			s.reportConfigError(svc)
			svc.mu.Lock()
			svc.status.LastExit, svc.status.ConfigError = how, true
			svc.mu.Unlock()
			return
		}
		if ran >= s.cfg.ResetAfter {
			backoff = s.cfg.MinBackoff
		}
		svc.mu.Lock()
		svc.status.LastExit, svc.status.Backoff = how, backoff
		svc.mu.Unlock()
		if s.stopped() {
			return
		}
		s.log.Info("dyad-init: restarting service", "service", name, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-s.stopping:
			t.Stop()
			return
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

var errStopping = errors.New("supervisor is stopping")

// runOnce starts the service and waits for it to exit.
func (s *Supervisor) runOnce(svc *service) (reap.Exit, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return reap.Exit{}, fmt.Errorf("output pipe: %w", err)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		r.Close()
		w.Close()
		return reap.Exit{}, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	attr := &os.ProcAttr{
		Env:   svc.spec.Env,
		Files: []*os.File{null, w, w},
		// Its own process group, so a SIGKILL at shutdown also reaches
		// whatever the service started.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	}
	argv := append([]string{svc.spec.Path}, svc.spec.Args...)

	svc.mu.Lock()
	if s.stopped() {
		svc.mu.Unlock()
		r.Close()
		w.Close()
		null.Close()
		return reap.Exit{}, errStopping
	}
	p, exited, err := s.reaper.Start(argv, attr)
	if err == nil {
		svc.proc = p
		svc.status.Pid = p.Pid
		svc.status.Starts++
	}
	svc.mu.Unlock()
	w.Close()
	null.Close()
	if err != nil {
		r.Close()
		return reap.Exit{}, fmt.Errorf("start %s: %w", svc.spec.Path, err)
	}
	s.log.Info("dyad-init: service started", "service", svc.spec.Name, "pid", p.Pid)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		s.copyOutput(svc, r)
	}()

	exit := <-exited
	// Let the last lines reach the ring before the exit is reported; a
	// grandchild still holding the pipe must not block the restart.
	flush := time.NewTimer(outputFlush)
	select {
	case <-copied:
	case <-flush.C:
	}
	flush.Stop()
	svc.mu.Lock()
	svc.proc = nil
	svc.status.Pid = 0
	svc.mu.Unlock()
	p.Release()
	return exit, nil
}

// outputFlush bounds the wait for a dead service's last output.
const outputFlush = time.Second

// maxLine bounds one output line; longer lines are split.
const maxLine = 16 << 10

func (s *Supervisor) copyOutput(svc *service, r *os.File) {
	defer r.Close()
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if line[len(line)-1] != '\n' {
				line = append(line, '\n')
			}
			s.emit(svc, line)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func (s *Supervisor) emit(svc *service, line []byte) {
	svc.ring.add(line)
	svc.fileMu.Lock()
	if _, err := svc.file.Write(line); err != nil {
		if svc.fileOK {
			s.log.Warn("dyad-init: cannot write service log file; keeping output in memory only", "service", svc.spec.Name, "err", err)
		}
		svc.fileOK = false
		svc.file.Reset()
	} else {
		svc.fileOK = true
	}
	svc.fileMu.Unlock()
	s.toConsole(append([]byte("["+svc.spec.Name+"] "), line...))
}

func (s *Supervisor) toConsole(b []byte) {
	if s.cfg.Console == nil {
		return
	}
	s.console.Lock()
	defer s.console.Unlock()
	_, _ = s.cfg.Console.Write(b)
}

func (s *Supervisor) reportConfigError(svc *service) {
	name := svc.spec.Name
	msg := fmt.Sprintf("dyad-init: %s reported a configuration error; not restarting. Fix the kernel command line or /data/dyad/config.json", name)
	// The console is where the operator looks; init's log goes there too,
	// so the message is written once, with the service's last words.
	tail := svc.ring.tail(s.cfg.ConfigLines)
	s.toConsole([]byte(fmt.Sprintf("%s\ndyad-init: last output of %s:\n", msg, name)))
	for _, l := range bytes.SplitAfter(tail, []byte("\n")) {
		if len(l) > 0 {
			s.toConsole(append([]byte("["+name+"] "), l...))
		}
	}
}
