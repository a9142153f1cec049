package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dyad-ha/dyad/services/quorum"
	"github.com/dyad-ha/dyad/services/unitca"
)

var (
	keyA = unitca.QuorumKey(bytes.Repeat([]byte{'a'}, 32))
	keyB = unitca.QuorumKey(bytes.Repeat([]byte{'b'}, 32))
	hexA = hex.EncodeToString(keyA)
	hexB = hex.EncodeToString(keyB)
)

func TestQuorumKeyIsItsOwn(t *testing.T) {
	secret := bytes.Repeat([]byte{'a'}, 32)
	if len(keyA) != 32 || bytes.Equal(keyA, unitca.HeartbeatKey(secret)) || bytes.Equal(keyA, keyB) {
		t.Fatal("the quorum key is not a key of its own")
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    config
		wantErr string
	}{
		{"keys file", []string{"-keys", "/etc/units"}, config{listen: ":7413", keysFile: "/etc/units"}, ""},
		{"single unit", []string{"-listen", "127.0.0.1:9", "-unit", "u1", "-key", hexA, "-debug"},
			config{listen: "127.0.0.1:9", unit: "u1", key: keyA, debug: true}, ""},
		{"both", []string{"-keys", "k", "-unit", "u1", "-key", hexA}, config{listen: ":7413", keysFile: "k", unit: "u1", key: keyA}, ""},
		{"nothing to serve", nil, config{}, "nothing to serve"},
		{"unit without key", []string{"-unit", "u1"}, config{}, "go together"},
		{"key without unit", []string{"-keys", "k", "-key", hexA}, config{}, "go together"},
		{"key not hex", []string{"-unit", "u1", "-key", "zz"}, config{}, "-key: quorum key is not 64 hex digits"},
		{"short key", []string{"-unit", "u1", "-key", hexA[:62]}, config{}, "64 hex digits"},
		{"bad unit", []string{"-unit", "u\x01", "-key", hexA}, config{}, "-unit: quorum: unit name"},
		{"long unit", []string{"-unit", strings.Repeat("u", 65), "-key", hexA}, config{}, "65 bytes"},
		{"argument", []string{"-keys", "k", "extra"}, config{}, `unexpected argument "extra"`},
		{"unknown flag", []string{"-port", "1"}, config{}, "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, new(bytes.Buffer))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("parseFlags = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestParseKeys(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		want    map[string][]byte
		wantErr string
	}{
		{"units", "# quorum keys\n\nua " + hexA + "\n  ub\t" + hexB + "  # second unit\n",
			map[string][]byte{"ua": keyA, "ub": keyB}, ""},
		{"no final newline", "ua " + hexA, map[string][]byte{"ua": keyA}, ""},
		{"unit alone", "# x\nua\n", nil, `units:2: want "UNIT HEXKEY", found 1 fields`},
		{"three fields", "ua " + hexA + " extra\n", nil, "units:1: want"},
		{"bad key", "ua " + hexA + "\n\nub nothex\n", nil, `units:3: unit "ub": quorum key is not 64 hex digits`},
		{"duplicate", "ua " + hexA + "\nub " + hexB + "\nua " + hexB + "\n", nil, `units:3: unit "ua" is already on line 1`},
		{"long unit", strings.Repeat("u", 65) + " " + hexA + "\n", nil, "units:1: quorum: unit name of 65 bytes"},
		{"empty", "# nothing yet\n", nil, "units: no unit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseKeys(strings.NewReader(tt.file), "units")
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr && !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("parseKeys = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "units")
	if err := os.WriteFile(file, []byte("ua "+hexA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     config
		want    []string
		wantErr string
	}{
		{"file", config{keysFile: file}, []string{"ua"}, ""},
		{"file and unit", config{keysFile: file, unit: "ub", key: keyB}, []string{"ua", "ub"}, ""},
		{"unit in both", config{keysFile: file, unit: "ua", key: keyB}, nil, `unit "ua" is given both by -unit and in`},
		{"no file", config{keysFile: filepath.Join(dir, "missing")}, nil, "no such file"},
	}
	for _, tt := range tests {
		keys, err := tt.cfg.loadKeys()
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || len(keys) != len(tt.want) {
			t.Errorf("%s: loadKeys = %v, %v; want units %v", tt.name, keys, err, tt.want)
		}
		for _, u := range tt.want {
			if keys[u] == nil {
				t.Errorf("%s: no key for %s", tt.name, u)
			}
		}
	}
}

// lockedBuffer is a log the test reads while the server writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestServe runs the server on loopback with the real client. The quiet
// period of a fresh server lasts MaxTTL, so queries show that a unit is
// served and acquires that the server refuses to grant yet.
func TestServe(t *testing.T) {
	file := filepath.Join(t.TempDir(), "units")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ua " + hexA + "\n")
	cfg, err := parseFlags([]string{"-keys", file, "-listen", "127.0.0.1:0"}, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := cfg.loadKeys()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", cfg.listen)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	addr := conn.LocalAddr().String()
	logs := new(lockedBuffer)
	log := slog.New(slog.NewTextHandler(logs, nil))
	hup := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, conn, keys, log, hup) }()

	a := quorum.NewClient("ua", 1, "boot-1", keyA)
	b := quorum.NewClient("ub", 2, "boot-2", keyB)
	query := func(c *quorum.Client, wait time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, err := c.Query(ctx, addr)
		return err
	}
	// served waits for c's unit to be served, or not, after a reload.
	served := func(c *quorum.Client, want bool) {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); ; {
			err := query(c, 200*time.Millisecond)
			if (err == nil) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("served %v: last query: %v", want, err)
			}
		}
	}

	if err := query(a, 2*time.Second); err != nil {
		t.Fatalf("query of a served unit: %v", err)
	}
	actx, acancel := context.WithTimeout(context.Background(), 2*time.Second)
	l, err := a.Acquire(actx, addr, time.Second)
	acancel()
	if err == nil || !strings.Contains(err.Error(), "quorum server starting") || l.Granted {
		t.Fatalf("Acquire of a fresh server = %+v, %v; want refused while starting", l, err)
	}
	if err := query(b, 300*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("query of an unknown unit: %v, want no reply", err)
	}

	write("ua " + hexA + "\nub " + hexB + "\n")
	hup <- syscall.SIGHUP
	served(b, true)

	write("ua " + hexA + "\nub\n")
	hup <- syscall.SIGHUP
	for deadline := time.Now().Add(3 * time.Second); !strings.Contains(logs.String(), "keeping the keys in use"); {
		if time.Now().After(deadline) {
			t.Fatalf("a broken keys file was not reported:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if want := fmt.Sprintf("%s:2: want", file); !strings.Contains(logs.String(), want) {
		t.Errorf("log does not name the line (%q):\n%s", want, logs)
	}
	served(b, true)

	write("ub " + hexB + "\n")
	hup <- syscall.SIGHUP
	served(a, false)

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v after its context ended", err)
	}
}
