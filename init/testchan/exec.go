package testchan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dyad-ha/dyad/init/reap"
	"golang.org/x/sys/unix"
)

// cappedBuffer keeps the first max bytes written and counts the rest, so a
// chatty command is drained (never blocked on a full pipe) but bounded.
type cappedBuffer struct {
	buf     bytes.Buffer
	max     int
	dropped int64
}

func (c *cappedBuffer) readFrom(f *os.File) {
	b := make([]byte, 32<<10)
	for {
		n, err := f.Read(b)
		room := max(c.max-c.buf.Len(), 0)
		c.buf.Write(b[:min(n, room)])
		c.dropped += int64(n - min(n, room))
		if err != nil {
			return
		}
	}
}

// outputDrain bounds how long output is read after the command exited: a
// background process may hold the pipes open forever.
const outputDrain = time.Second

func (s *Server) exec(ctx context.Context, req Request) Response {
	resp := Response{ID: req.ID}
	code := -1
	resp.Exit = &code

	path := req.Argv[0]
	if !strings.Contains(path, "/") {
		p, err := lookPath(path, s.Env)
		if err != nil {
			resp.Error = err.Error()
			return resp
		}
		path = p
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		resp.Error = fmt.Sprintf("stdout pipe: %v", err)
		return resp
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		resp.Error = fmt.Sprintf("stderr pipe: %v", err)
		return resp
	}
	defer outR.Close()
	defer errR.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		outW.Close()
		errW.Close()
		resp.Error = fmt.Sprintf("open %s: %v", os.DevNull, err)
		return resp
	}
	argv := append([]string{path}, req.Argv[1:]...)
	p, exited, err := s.Reaper.Start(argv, &os.ProcAttr{
		Env:   s.Env,
		Files: []*os.File{null, outW, errW},
		// Own process group: a timeout kills what the command started too.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	null.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		resp.Error = fmt.Sprintf("start %s: %v", path, err)
		return resp
	}
	defer p.Release()

	stdout, stderr := &cappedBuffer{max: s.maxOutput()}, &cappedBuffer{max: s.maxOutput()}
	copied := make(chan struct{}, 2)
	go func() { stdout.readFrom(outR); copied <- struct{}{} }()
	go func() { stderr.readFrom(errR); copied <- struct{}{} }()

	timer := time.NewTimer(req.Timeout())
	defer timer.Stop()
	var e reap.Exit
	var problems []string
	select {
	case e = <-exited:
	case <-timer.C:
		killGroup(p)
		e = <-exited
		problems = append(problems, fmt.Sprintf("timed out after %v; killed", req.Timeout()))
	case <-ctx.Done():
		killGroup(p)
		e = <-exited
		problems = append(problems, fmt.Sprintf("cancelled: %v; killed", ctx.Err()))
	}
	deadline := time.Now().Add(outputDrain)
	outR.SetReadDeadline(deadline)
	errR.SetReadDeadline(deadline)
	<-copied
	<-copied

	code = e.Code()
	resp.Stdout, resp.Stderr = stdout.buf.Bytes(), stderr.buf.Bytes()
	for _, o := range []struct {
		name string
		c    *cappedBuffer
	}{{"stdout", stdout}, {"stderr", stderr}} {
		if o.c.dropped > 0 {
			problems = append(problems, fmt.Sprintf("%s truncated to %d bytes (%d dropped)", o.name, o.c.max, o.c.dropped))
		}
	}
	resp.Error = strings.Join(problems, "; ")
	return resp
}

// lookPath finds name in the PATH of env, the environment the command gets,
// rather than in init's own (the kernel gives PID 1 no PATH).
func lookPath(name string, env []string) (string, error) {
	var path string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
		}
		if p, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH %q", name, path)
}

func killGroup(p *os.Process) {
	_ = unix.Kill(-p.Pid, unix.SIGKILL)
	if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		_ = unix.Kill(p.Pid, unix.SIGKILL)
	}
}
