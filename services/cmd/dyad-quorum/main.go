// Command dyad-quorum is the quorum lease server of Dyad units (package
// services/quorum). Run it on a machine outside the units that both PMs of
// each unit reach over a path other than their own links:
//
//	dyad-quorum [-listen :7413] -keys /etc/dyad-quorum/units
//	dyad-quorum [-listen :7413] -unit NAME -key HEX
//
// The keys file has a line "UNIT HEXKEY" per unit; '#' starts a comment.
// HEXKEY is the unit's quorum key as `dyadctl quorum key` prints it on a PM
// of the unit. SIGHUP reloads the keys; the leases stay. A reload that
// fails keeps the keys in use.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/dyad-ha/dyad/services/quorum"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	os.Exit(run(ctx, os.Args[1:], os.Stderr, hup))
}

// config is the command line.
type config struct {
	listen   string
	keysFile string
	unit     string
	key      []byte // of unit
	debug    bool
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	var key string
	fs := flag.NewFlagSet("dyad-quorum", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", fmt.Sprintf(":%d", quorum.DefaultPort), "UDP `address` to serve on")
	fs.StringVar(&c.keysFile, "keys", "", "`file` of \"UNIT HEXKEY\" lines, reloaded on SIGHUP")
	fs.StringVar(&c.unit, "unit", "", "`name` of a single unit to serve (with -key)")
	fs.StringVar(&key, "key", "", "quorum key of -unit, in `hex`")
	fs.BoolVar(&c.debug, "debug", false, "log every request dropped or refused")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	switch {
	case fs.NArg() > 0:
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case (c.unit == "") != (key == ""):
		return config{}, errors.New("-unit and -key go together")
	case c.unit == "" && c.keysFile == "":
		return config{}, errors.New("nothing to serve: give -keys FILE, or -unit NAME -key HEX")
	case c.unit != "":
		if err := quorum.ValidUnit(c.unit); err != nil {
			return config{}, fmt.Errorf("-unit: %w", err)
		}
		k, err := parseKey(key)
		if err != nil {
			return config{}, fmt.Errorf("-key: %w", err)
		}
		c.key = k
	}
	return c, nil
}

// loadKeys reads the keys of every unit to serve.
func (c config) loadKeys() (map[string][]byte, error) {
	keys := map[string][]byte{}
	if c.keysFile != "" {
		f, err := os.Open(c.keysFile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if keys, err = parseKeys(f, c.keysFile); err != nil {
			return nil, err
		}
	}
	if c.unit != "" {
		if _, ok := keys[c.unit]; ok {
			return nil, fmt.Errorf("unit %q is given both by -unit and in %s", c.unit, c.keysFile)
		}
		keys[c.unit] = c.key
	}
	return keys, nil
}

// parseKeys reads a keys file; name is for errors.
func parseKeys(r io.Reader, name string) (map[string][]byte, error) {
	keys := map[string][]byte{}
	lineOf := map[string]int{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("%s:%d: want \"UNIT HEXKEY\", found %d fields", name, n, len(f))
		}
		if err := quorum.ValidUnit(f[0]); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if first, ok := lineOf[f[0]]; ok {
			return nil, fmt.Errorf("%s:%d: unit %q is already on line %d", name, n, f[0], first)
		}
		k, err := parseKey(f[1])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: unit %q: %w", name, n, f[0], err)
		}
		keys[f[0]], lineOf[f[0]] = k, n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", name, n+1, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no unit", name)
	}
	return keys, nil
}

// parseKey decodes a quorum key: an HMAC-SHA256 output, so 32 bytes.
func parseKey(s string) ([]byte, error) {
	k, err := hex.DecodeString(s)
	if err != nil || len(k) != 32 {
		return nil, errors.New("quorum key is not 64 hex digits")
	}
	return k, nil
}

// run is the command; it returns the exit code.
func run(ctx context.Context, args []string, stderr io.Writer, hup <-chan os.Signal) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "dyad-quorum: %v\n", err)
		return 2
	}
	level := slog.LevelInfo
	if cfg.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	keys, err := cfg.loadKeys()
	if err != nil {
		log.Error("keys", "err", err)
		return 1
	}
	conn, err := net.ListenPacket("udp", cfg.listen)
	if err != nil {
		log.Error("listen", "err", err)
		return 1
	}
	defer conn.Close()
	if err := serve(ctx, cfg, conn, keys, log, hup); err != nil {
		log.Error("serve", "err", err)
		return 1
	}
	return 0
}

// serve answers on conn with keys until ctx ends, reloading the keys on
// every signal from hup.
func serve(ctx context.Context, cfg config, conn net.PacketConn, keys map[string][]byte,
	log *slog.Logger, hup <-chan os.Signal) error {
	var cur atomic.Pointer[map[string][]byte]
	cur.Store(&keys)
	srv := quorum.NewServer(func(unit string) ([]byte, bool) {
		k, ok := (*cur.Load())[unit]
		return k, ok
	}, log)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			m, err := cfg.loadKeys()
			if err != nil {
				log.Error("reload keys: keeping the keys in use", "err", err)
				continue
			}
			cur.Store(&m)
			log.Info("keys reloaded", "units", len(m))
		}
	}()
	log.Info("dyad-quorum serving", "addr", conn.LocalAddr().String(), "units", len(keys),
		"quiet", quorum.MaxTTL.String())
	err := srv.Serve(ctx, conn)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
