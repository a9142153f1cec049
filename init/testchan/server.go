package testchan

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dyad-ha/dyad/init/reap"
)

// DefaultMaxOutput caps each of stdout, stderr and read data.
const DefaultMaxOutput = 4 << 20

// maxRequest bounds one request line.
const maxRequest = 1 << 20

// Server answers test channel requests. Requests run concurrently, so a ping
// is answered while a long exec is still running.
type Server struct {
	Log    *slog.Logger
	Reaper *reap.Reaper
	Env    []string // environment of executed commands
	// Logs returns the recent output of a supervised service.
	Logs func(service string) ([]byte, bool)
	// Signal sends sig to a supervised service.
	Signal func(service string, sig syscall.Signal) error
	// Shutdown starts an orderly power-off or reboot; it is called after the
	// response has been written.
	Shutdown  func(reboot bool)
	MaxOutput int // 0 means DefaultMaxOutput
}

func (s *Server) maxOutput() int {
	if s.MaxOutput > 0 {
		return s.MaxOutput
	}
	return DefaultMaxOutput
}

// Serve answers requests read from rw until reading fails (io.EOF when the
// peer goes away), then waits for requests in flight and returns the error.
func (s *Server) Serve(ctx context.Context, rw io.ReadWriter) error {
	br := bufio.NewReaderSize(rw, 64<<10)
	var wmu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	reply := func(r Response) error {
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode response: %w", err)
		}
		wmu.Lock()
		defer wmu.Unlock()
		if _, err := rw.Write(append(b, '\n')); err != nil {
			s.Log.Warn("dyad-init: test channel write", "err", err)
			return err
		}
		return nil
	}
	for {
		line, tooLong, err := readLine(br, maxRequest)
		if tooLong {
			reply(Response{Error: fmt.Sprintf("request longer than %d bytes", maxRequest)})
		} else if len(strings.TrimSpace(string(line))) > 0 {
			req, perr := ParseRequest(line)
			if perr != nil {
				reply(Response{ID: req.ID, Error: perr.Error()})
			} else {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s.handle(ctx, req, reply)
				}()
			}
		}
		if err != nil {
			return err
		}
	}
}

// readLine reads one '\n'-terminated line of at most max bytes; a longer line
// is consumed and reported as tooLong.
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	for {
		frag, err := br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(frag) > max {
				tooLong, line = true, nil
			} else {
				line = append(line, frag...)
			}
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, tooLong, err
		}
	}
}

func (s *Server) handle(ctx context.Context, req Request, reply func(Response) error) {
	s.Log.Debug("dyad-init: test channel request", "id", req.ID, "op", req.Op)
	switch req.Op {
	case OpExec:
		reply(s.exec(ctx, req))
	case OpRead:
		reply(s.read(req))
	case OpPWrite, OpSHA256, OpDWrite, OpWriteFile:
		reply(s.storage(ctx, req))
	case OpLog:
		resp := Response{ID: req.ID}
		if data, ok := s.Logs(req.Service); ok {
			resp.Data = data
		} else {
			resp.Error = fmt.Sprintf("unknown service %q", req.Service)
		}
		reply(resp)
	case OpSignal:
		resp := Response{ID: req.ID}
		if err := s.Signal(req.Service, Signals[req.Signal]); err != nil {
			resp.Error = err.Error()
		}
		reply(resp)
	case OpKillPidfile:
		resp := Response{ID: req.ID}
		pid, err := killPidfile(req.Path, Signals[req.Signal])
		if err != nil {
			resp.Error = err.Error()
		} else {
			resp.Data = []byte(strconv.Itoa(pid))
		}
		reply(resp)
	case OpPing:
		reply(Response{ID: req.ID})
	case OpPowerOff, OpReboot:
		// The harness waits for this answer before it waits for the PM to go
		// away, so answer first.
		reply(Response{ID: req.ID})
		s.Shutdown(req.Op == OpReboot)
	}
}

func (s *Server) read(req Request) Response {
	resp := Response{ID: req.ID}
	f, err := os.Open(req.Path)
	if err != nil {
		resp.Error = err.Error()
		return resp
	}
	defer f.Close()
	// Files in /proc and /sys report size 0, so read rather than stat.
	data, err := io.ReadAll(io.LimitReader(f, int64(s.maxOutput())+1))
	if err != nil {
		resp.Error = err.Error()
	}
	if len(data) > s.maxOutput() {
		data = data[:s.maxOutput()]
		resp.Error = fmt.Sprintf("%s is longer than %d bytes; truncated", req.Path, s.maxOutput())
	}
	resp.Data = data
	return resp
}

// FindPort returns the device node (under dev) of the virtio-serial port that
// sysfs (sysPorts, normally /sys/class/virtio-ports) names name.
func FindPort(sysPorts, dev, name string) (string, error) {
	files, err := filepath.Glob(filepath.Join(sysPorts, "*", "name"))
	if err != nil {
		return "", fmt.Errorf("scan virtio ports: %w", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return filepath.Join(dev, filepath.Base(filepath.Dir(f))), nil
		}
	}
	return "", fmt.Errorf("no virtio port named %q in %s", name, sysPorts)
}

// Port is where the test channel lives.
type Port struct {
	SysPorts string        // /sys/class/virtio-ports
	Dev      string        // /dev
	Name     string        // dyad.test
	Interval time.Duration // between looks for the port, and for a host while none is connected
}

// ServePort waits for the port to appear (virtio_console may load late)
// and serves it, waiting for the host side whenever it is not connected,
// until ctx is done. The port is opened again only after it failed.
func (s *Server) ServePort(ctx context.Context, p Port) {
	warned, found := false, false
	for ctx.Err() == nil {
		path, err := FindPort(p.SysPorts, p.Dev, p.Name)
		if err == nil {
			if !found {
				s.Log.Info("dyad-init: test channel enabled", "port", path)
				found = true
			}
			err = s.serveDevice(ctx, path, p.Interval)
		}
		if err != nil && !warned {
			s.Log.Warn("dyad-init: test channel not available yet; retrying", "err", err)
			warned = true
		}
		t := time.NewTimer(p.Interval)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

func (s *Server) serveDevice(ctx context.Context, path string, interval time.Duration) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open test channel: %w", err)
	}
	defer f.Close()
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	s.Log.Debug("dyad-init: test channel open", "port", path)
	return s.Serve(ctx, struct {
		io.Reader
		io.Writer
	}{hostWait{ctx: ctx, f: f, interval: interval}, f})
}

// hostWait reads a virtio-serial port across the host's absences. While no
// host is connected a read returns EOF; closing and reopening the port then
// would make the kernel discard whatever a reconnecting host sends before
// the reopen, and would leave the answers of requests in flight with
// nowhere to go. So the port stays open and the read is retried.
type hostWait struct {
	ctx      context.Context
	f        io.Reader
	interval time.Duration
}

func (h hostWait) Read(p []byte) (int, error) {
	for {
		n, err := h.f.Read(p)
		if n > 0 || !errors.Is(err, io.EOF) {
			return n, err
		}
		t := time.NewTimer(h.interval)
		select {
		case <-h.ctx.Done():
			t.Stop()
			return 0, h.ctx.Err()
		case <-t.C:
		}
	}
}
