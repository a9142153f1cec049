package hwcompat

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

func collectMemory(root string) (Memory, error) {
	p := sysPath(root, "proc", "meminfo")
	b, err := os.ReadFile(p)
	if err != nil {
		return Memory{}, wrapRead("memory information", p, err)
	}
	total, err := parseMemTotal(b)
	if err != nil {
		return Memory{}, fmt.Errorf("hardware inventory: %s: %w", p, err)
	}
	return Memory{TotalBytes: total}, nil
}

// parseMemTotal returns MemTotal in bytes; /proc/meminfo counts in KiB
// although it writes "kB".
func parseMemTotal(b []byte) (uint64, error) {
	for line := range strings.Lines(string(b)) {
		key, val, ok := strings.Cut(line, ":")
		if !ok || key != "MemTotal" {
			continue
		}
		fields := strings.Fields(val)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("MemTotal %q is not \"<number> kB\"", strings.TrimSpace(val))
		}
		kib, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("MemTotal %q: %w", fields[0], err)
		}
		if kib == 0 || kib > math.MaxUint64/1024 {
			return 0, fmt.Errorf("MemTotal %d kB is out of range", kib)
		}
		return kib * 1024, nil
	}
	return 0, fmt.Errorf("no MemTotal line in meminfo")
}
