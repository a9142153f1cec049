package lvm

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeLVM writes a shell script standing in for the lvm binary. The tests
// need /bin/sh, which the host has (the PM image does not, but there the
// real binary runs).
func fakeLVM(t *testing.T, script string) string {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	p := filepath.Join(t.TempDir(), "lvm")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExecRunnerOK(t *testing.T) {
	// Prints its arguments one per line, the environment variable, and
	// whether stdin is at end of file.
	p := fakeLVM(t, `for a in "$@"; do echo "arg=$a"; done
echo "env=$LVM_SUPPRESS_FD_WARNINGS"
if read x; then echo "stdin=data"; else echo "stdin=eof"; fi
echo "  WARNING: on stderr" >&2
`)
	out, err := ExecRunner(p)(t.Context(), []string{"pvs", "--config", `devices { a="b c" }`, "-o", "pv_name"})
	if err != nil {
		t.Fatal(err)
	}
	want := "arg=pvs\narg=--config\narg=devices { a=\"b c\" }\narg=-o\narg=pv_name\nenv=1\nstdin=eof\n"
	if string(out) != want {
		t.Errorf("stdout\n%s\nwant\n%s", out, want)
	}
}

func TestExecRunnerFailure(t *testing.T) {
	p := fakeLVM(t, `echo '{"report":[{"lv":[]}]}'
echo '  Volume group "nosuchvg" not found' >&2
echo '  Cannot process volume group nosuchvg' >&2
exit 5
`)
	out, err := ExecRunner(p)(t.Context(), []string{"lvs", "nosuchvg"})
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 5 {
		t.Fatalf("err = %v, want an *exec.ExitError with code 5", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, `Volume group "nosuchvg" not found; Cannot process volume group nosuchvg`) {
		t.Errorf("error lacks stderr: %s", msg)
	}
	if !strings.Contains(string(out), "report") {
		t.Errorf("stdout not returned: %q", out)
	}
}

func TestExecRunnerStderrTail(t *testing.T) {
	// 5000 bytes of noise, then the line that matters.
	p := fakeLVM(t, `i=0; while [ $i -lt 100 ]; do echo "  WARNING: noise noise noise noise noise noise $i" >&2; i=$((i+1)); done
echo "  the real reason" >&2
exit 3
`)
	_, err := ExecRunner(p)(t.Context(), []string{"vgs"})
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if !strings.HasSuffix(msg, "the real reason") || !strings.Contains(msg, ": ...") {
		t.Errorf("error = %s", msg)
	}
	if len(msg) > stderrTail+len(p)+64 {
		t.Errorf("error is %d bytes, want about %d", len(msg), stderrTail)
	}
}

func TestExecRunnerNotFound(t *testing.T) {
	_, err := ExecRunner(filepath.Join(t.TempDir(), "nope"))(t.Context(), []string{"pvs"})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want ErrNotExist", err)
	}
}

func TestExecRunnerCancel(t *testing.T) {
	// Exits on SIGINT like lvm outside its critical sections.
	p := fakeLVM(t, `trap 'echo interrupted >&2; exit 130' INT
echo started
while :; do sleep 0.05; done
`)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := ExecRunner(p)(ctx, []string{"vgchange", "-ay", "dyad_sg1"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > cancelGrace/2 {
		t.Errorf("took %v: SIGINT not delivered?", d)
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 12}
	for _, s := range []string{"  one\n", "", "  two\n  three\n"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if got := b.String(); got != "...two; three" {
		t.Errorf("String = %q", got)
	}
	if got := (&tailBuffer{max: 8}).String(); got != "" {
		t.Errorf("empty String = %q", got)
	}
}
