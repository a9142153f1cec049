package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		line string
		want string
		ok   bool
	}{
		{"crash\n", CmdCrash, true},
		{"crash", CmdCrash, true},
		{"crash\r\n", CmdCrash, true}, // a terminal's Enter without ICRNL
		{"  crash \t\n", CmdCrash, true},
		{"\n", "", false},
		{"", "", false},
		{"Crash\n", "", false},
		{"crashed\n", "", false},
		{"cr ash\n", "", false},
		{"crash now\n", "", false},
		{"DURABLE boot=x n=1\n", "", false},
	} {
		got, ok := ParseCommand(tc.line)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseCommand(%q) = %q, %v; want %q, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"crash\n", "crash\r\n", "", "\x00crash", strings.Repeat("c", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		cmd, ok := ParseCommand(line)
		if ok != (cmd != "") {
			t.Fatalf("ParseCommand(%q) = %q, %v", line, cmd, ok)
		}
		if ok && (cmd != CmdCrash || strings.TrimSpace(line) != cmd) {
			t.Fatalf("ParseCommand(%q) = %q: not exactly a known command", line, cmd)
		}
	})
}

// errReader returns its data, then err.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		err = e.err
	}
	return n, err
}

func TestServeConsole(t *testing.T) {
	long := strings.Repeat("x", 3*maxCommandLine) + "crash\n"
	for _, tc := range []struct {
		name   string
		input  string
		cmds   []string
		output []string // substrings of the console output, in order
	}{
		{"one crash", "crash\n", []string{CmdCrash}, nil},
		{"terminal line ends", "crash\r\n\r\ncrash\r\n", []string{CmdCrash, CmdCrash}, nil},
		{"last line without newline", "crash", []string{CmdCrash}, nil},
		{"unknown command is answered", "reboot\ncrash\n", []string{CmdCrash}, []string{`GUEST UNKNOWN COMMAND "reboot" (known: crash)`}},
		{"blank lines are silent", "\n \n\t\n", nil, nil},
		// A line longer than any command is dropped whole, even if it
		// ends in one.
		{"overlong line", long + "crash\n", []string{CmdCrash}, nil},
		{"overlong line at the end", strings.Repeat("y", 2*maxCommandLine), nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			g := &guest{log: slog.New(slog.DiscardHandler), out: &out}
			var ran []string
			readErr := errors.New("console gone")
			err := g.serveConsole(&errReader{strings.NewReader(tc.input), readErr}, func(cmd string) { ran = append(ran, cmd) })
			if !errors.Is(err, readErr) {
				t.Errorf("serveConsole returned %v, want the read error", err)
			}
			if !slices.Equal(ran, tc.cmds) {
				t.Errorf("ran %q, want %q", ran, tc.cmds)
			}
			rest := out.String()
			for _, want := range tc.output {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("console output %q lacks %q", out.String(), want)
				}
				rest = rest[i+len(want):]
			}
			if len(tc.output) == 0 && out.Len() > 0 {
				t.Errorf("console output %q, want none", out.String())
			}
		})
	}
}
