package hwcompat

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

func collectCPU(root string) (CPU, error) {
	p := sysPath(root, "proc", "cpuinfo")
	b, err := os.ReadFile(p)
	if err != nil {
		return CPU{}, wrapRead("CPU information", p, err)
	}
	c, err := parseCPUInfo(b)
	if err != nil {
		return CPU{}, fmt.Errorf("hardware inventory: %s: %w", p, err)
	}
	return c, nil
}

// parseCPUInfo decodes the x86 /proc/cpuinfo format: one stanza of
// "key : value" lines per logical CPU, each starting with "processor".
func parseCPUInfo(b []byte) (CPU, error) {
	var stanzas []map[string]string
	for line := range strings.Lines(string(b)) {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if key == "processor" {
			stanzas = append(stanzas, map[string]string{})
		}
		if len(stanzas) == 0 {
			continue
		}
		stanzas[len(stanzas)-1][key] = val
	}
	if len(stanzas) == 0 {
		return CPU{}, fmt.Errorf("no \"processor\" entries in cpuinfo")
	}

	first := stanzas[0]
	c := CPU{
		Vendor:    first["vendor_id"],
		ModelName: first["model name"],
		Threads:   len(stanzas),
	}
	for _, f := range []struct {
		key string
		dst *int
	}{{"cpu family", &c.Family}, {"model", &c.Model}, {"stepping", &c.Stepping}} {
		v, err := cpuNumber(first, f.key)
		if err != nil {
			return CPU{}, err
		}
		*f.dst = v
	}
	c.Flags = commonFlags(stanzas)
	sockets, cores, err := topology(stanzas)
	if err != nil {
		return CPU{}, err
	}
	c.Sockets, c.Cores = sockets, cores
	return c, nil
}

// cpuNumber parses a numeric field; absent or "unknown" (the kernel's word
// for a stepping it could not read) is 0.
func cpuNumber(st map[string]string, key string) (int, error) {
	v, ok := st[key]
	if !ok || v == "unknown" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("cpuinfo field %q: %q is not a non-negative integer", key, v)
	}
	return n, nil
}

func commonFlags(stanzas []map[string]string) []string {
	var common map[string]bool
	for _, st := range stanzas {
		v, ok := st["flags"]
		if !ok {
			continue
		}
		this := map[string]bool{}
		for _, f := range strings.Fields(v) {
			if common == nil || common[f] {
				this[f] = true
			}
		}
		common = this
	}
	flags := make([]string, 0, len(common))
	for f := range common {
		flags = append(flags, f)
	}
	slices.Sort(flags)
	return flags
}

// topology counts sockets and physical cores. "physical id" and "core id"
// identify each core exactly; kernels or hypervisors that omit "core id"
// still give "cpu cores" per socket; with neither, each thread is a core.
func topology(stanzas []map[string]string) (sockets, cores int, err error) {
	type coreKey struct{ socket, core string }
	socketCores := map[string]int{}
	coreIDs := map[coreKey]bool{}
	haveCoreID := true
	for _, st := range stanzas {
		sock := st["physical id"]
		if _, seen := socketCores[sock]; !seen {
			n, err := cpuNumber(st, "cpu cores")
			if err != nil {
				return 0, 0, err
			}
			socketCores[sock] = n
		}
		id, ok := st["core id"]
		if !ok {
			haveCoreID = false
		}
		coreIDs[coreKey{sock, id}] = true
	}
	sockets = len(socketCores)
	if haveCoreID {
		return sockets, len(coreIDs), nil
	}
	for _, n := range socketCores {
		if n == 0 {
			// A socket of unknown size makes the sum meaningless.
			return sockets, len(stanzas), nil
		}
		cores += n
	}
	return sockets, min(cores, len(stanzas)), nil
}
