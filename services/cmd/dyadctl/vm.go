package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
)

// vmSubcommands lists the vm commands for a usage error.
const vmSubcommands = "list, show, create, start, shutdown, poweroff, dump, boot-from-cd, migrate, reset-device, config, remove, console, serial-log"

// parseVMCommand parses the vm commands; ok is false for a command line
// that is not one of them.
func parseVMCommand(args []string) (cmd command, ok bool, err error) {
	if len(args) == 0 || args[0] != "vm" {
		return command{}, false, nil
	}
	if len(args) == 1 {
		return command{}, true, fmt.Errorf("%w: vm takes a command: %s", errUsage, vmSubcommands)
	}
	words := strings.Join(args, " ")
	sub, rest := args[1], args[2:]
	switch sub {
	case "list":
		if len(rest) != 0 {
			return command{}, true, fmt.Errorf("%w: vm list takes no arguments", errUsage)
		}
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.VMs(ctx) },
			print: func(w io.Writer, v any) error { return printVMs(w, v.([]unit.VM)) },
		}, true, nil
	case "show":
		ref, err := oneVM(subFlags("vm show"), rest)
		if err != nil {
			return command{}, true, err
		}
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return findVM(ctx, c, ref) },
			print: func(w io.Writer, v any) error { return printVM(w, v.(unit.VM)) },
		}, true, nil
	case "create":
		req, err := parseVMCreate(rest)
		if err != nil {
			return command{}, true, err
		}
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.CreateVM(ctx, req) },
			print: func(w io.Writer, v any) error { return printVM(w, v.(unit.VM)) },
		}, true, nil
	case "start", "poweroff", "dump", "reset-device":
		ref, err := oneVM(subFlags("vm "+sub), rest)
		if err != nil {
			return command{}, true, err
		}
		return vmAction(words, ref, sub, unit.VMAction{}), true, nil
	case "shutdown":
		fs := subFlags("vm shutdown")
		timeout := fs.Duration("timeout", 0, "how long the guest may take to shut down (default: the unit's, 2m)")
		ref, err := oneVM(fs, rest)
		if err != nil {
			return command{}, true, err
		}
		var args unit.VMAction
		if *timeout != 0 {
			if *timeout < time.Second || *timeout%time.Second != 0 || *timeout > 24*time.Hour {
				return command{}, true, fmt.Errorf("%w: invalid --timeout %s: want whole seconds from 1s to 24h, such as 120s or 5m", errUsage, *timeout)
			}
			args.TimeoutSeconds = int(*timeout / time.Second)
		}
		return vmAction(words, ref, sub, args), true, nil
	case "boot-from-cd":
		fs := subFlags("vm boot-from-cd")
		cd := fs.String("cd", "", "the VCD to boot from, an .iso of the VCD folder (default: the VM's)")
		ref, err := oneVM(fs, rest)
		if err != nil {
			return command{}, true, err
		}
		return vmAction(words, ref, sub, unit.VMAction{CD: *cd}), true, nil
	case "migrate":
		fs := subFlags("vm migrate")
		to := fs.Int("to", 0, "the PM to migrate to (default: the other PM)")
		ref, err := oneVM(fs, rest)
		if err != nil {
			return command{}, true, err
		}
		if *to < 0 {
			return command{}, true, fmt.Errorf("%w: invalid --to %d: want a PM number", errUsage, *to)
		}
		return vmAction(words, ref, sub, unit.VMAction{To: *to}), true, nil
	case "config":
		ref, req, err := parseVMConfig(rest)
		if err != nil {
			return command{}, true, err
		}
		return command{
			name: words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) {
				v, err := findVM(ctx, c, ref)
				if err != nil {
					return nil, err
				}
				out, err := c.ConfigVM(ctx, v.ID, req)
				return out, explainRefusal(err, v)
			},
			print: func(w io.Writer, v any) error { return printVM(w, v.(unit.VM)) },
		}, true, nil
	case "remove":
		fs := subFlags("vm remove")
		yes := fs.Bool("yes", false, "confirm that the VM and its boot volume are deleted on both PMs")
		deleteData := fs.Bool("delete-data", false, "delete the VM's other volumes too")
		ref, err := oneVM(fs, rest)
		if err != nil {
			return command{}, true, err
		}
		if !*yes {
			what := "its boot volume"
			if *deleteData {
				what = "all its volumes"
			}
			return command{}, true, fmt.Errorf("vm remove deletes VM %s and %s with their data on both PMs; run again with --yes to go ahead", ref, what)
		}
		return command{
			name: words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) {
				v, err := findVM(ctx, c, ref)
				if err != nil {
					return nil, err
				}
				if err := c.RemoveVM(ctx, v.ID, *deleteData); err != nil {
					return nil, explainRefusal(err, v)
				}
				return vmRemoval{ID: v.ID, Name: v.Name, DeleteData: *deleteData}, nil
			},
			print: func(w io.Writer, v any) error { return printRemoval(w, v.(vmRemoval)) },
		}, true, nil
	case "console":
		if len(rest) == 0 {
			return command{}, true, fmt.Errorf("%w: vm console takes one VM name or id", errUsage)
		}
		return command{
			name: words,
			// The console is a session, not a fetch: it reads the
			// operator's terminal until Ctrl-] or the VM goes away.
			// runVMConsole reads its own arguments (the VM, any flags).
			session: func(ctx context.Context, c *apiclient.Client, stdin io.Reader, stdout io.Writer) error {
				return runVMConsole(ctx, c, rest, stdin, stdout)
			},
		}, true, nil
	case "serial-log":
		ref, err := oneVM(subFlags("vm serial-log"), rest)
		if err != nil {
			return command{}, true, err
		}
		return command{
			name: words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) {
				v, err := findVM(ctx, c, ref)
				if err != nil {
					return nil, err
				}
				b, err := c.SerialLog(ctx, v.ID)
				return string(b), err
			},
			print: func(w io.Writer, v any) error {
				_, err := io.WriteString(w, v.(string))
				return err
			},
		}, true, nil
	}
	return command{}, true, fmt.Errorf("%w: unknown command vm %s; want one of: %s", errUsage, sub, vmSubcommands)
}

// oneVM parses a command that takes one VM and flags.
func oneVM(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parseFlags(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", fmt.Errorf("%w: %s takes one VM name or id", errUsage, fs.Name())
	}
	return pos[0], nil
}

// vmAction is a command of the VM's state table, sent with its slug.
func vmAction(words, ref, slug string, args unit.VMAction) command {
	return command{
		name: words,
		fetch: func(ctx context.Context, c *apiclient.Client) (any, error) {
			v, err := findVM(ctx, c, ref)
			if err != nil {
				return nil, err
			}
			out, err := c.VMCommand(ctx, v.ID, slug, args)
			return out, explainRefusal(err, v)
		},
		print: func(w io.Writer, v any) error { return printVMs(w, []unit.VM{v.(unit.VM)}) },
	}
}

// vmRemoval is what vm remove prints with --json.
type vmRemoval struct {
	ID         int    `json:"id"`
	Name       string `json:"name"`
	DeleteData bool   `json:"delete_data"`
}

func printRemoval(w io.Writer, r vmRemoval) error {
	kept := "its other volumes are kept in the unit, unattached"
	if r.DeleteData {
		kept = "its other volumes were deleted too"
	}
	_, err := fmt.Fprintf(w, "Removed VM %s (id %d) with its boot volume; %s.\n", r.Name, r.ID, kept)
	return err
}

// findVM finds a VM by id or, failing that, by name: a name made of
// digits is found when no VM has that id.
func findVM(ctx context.Context, c *apiclient.Client, ref string) (unit.VM, error) {
	if id, err := strconv.Atoi(ref); err == nil && id >= 1 {
		v, err := c.VM(ctx, id)
		var ae *apiclient.APIError
		if err == nil || !errors.As(err, &ae) || ae.StatusCode != 404 {
			return v, err
		}
	}
	vms, err := c.VMs(ctx)
	if err != nil {
		return unit.VM{}, err
	}
	for _, v := range vms {
		if v.Name == ref {
			return v, nil
		}
	}
	return unit.VM{}, fmt.Errorf("no VM with id or name %q", ref)
}

// vmCommandWords are the dyadctl commands of the console's VM commands.
func vmCommandWords(command string) (string, bool) {
	switch command {
	case "Start":
		return "start", true
	case "Shutdown":
		return "shutdown", true
	case "Power Off":
		return "poweroff", true
	case "Dump":
		return "dump", true
	case "Boot From CD":
		return "boot-from-cd", true
	case "Migrate":
		return "migrate", true
	case "Reset Device":
		return "reset-device", true
	case "Config":
		return "config", true
	case "Remove":
		return "remove", true
	case "Console":
		return "console", true
	}
	return "", false
}

// explainRefusal adds to a 409 that refused a command in the VM's state
// the commands that state allows, as dyadctl commands.
func explainRefusal(err error, v unit.VM) error {
	return explainAllowed(err, "vm", v.Name, vmCommandWords)
}

// explainAllowed adds to a 409 that refused a command in the state of
// the VM or PM ref (kind "vm" or "pm") the commands that state allows, as
// dyadctl commands; words gives a command's dyadctl words, false for one
// only the web console has.
func explainAllowed(err error, kind, ref string, words func(string) (string, bool)) error {
	var ae *apiclient.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 409 || ae.Allowed == nil {
		return err
	}
	if len(ae.Allowed) == 0 {
		return fmt.Errorf("%w\nno command is allowed now: wait for %s %s to leave this state (dyadctl %s show %s)",
			err, strings.ToUpper(kind), ref, kind, ref)
	}
	msg := "allowed now:"
	var others []string
	for _, a := range ae.Allowed {
		if w, ok := words(a); ok {
			msg += "\n  dyadctl " + kind + " " + w + " " + ref
		} else {
			others = append(others, a)
		}
	}
	if len(others) > 0 {
		msg += "\n  (in the web console: " + strings.Join(others, ", ") + ")"
	}
	return fmt.Errorf("%w\n%s", err, msg)
}

// volumeList collects --volume and --existing-volume in the order given.
type volumeList struct {
	vols     *[]unit.VMVolumeRequest
	existing bool // the flag names existing volumes: ID[:boot]
}

func (l volumeList) String() string { return "" }

func (l volumeList) Set(s string) error {
	parts := strings.Split(s, ":")
	boot := false
	if n := len(parts); n > 1 && parts[n-1] == "boot" {
		boot, parts = true, parts[:n-1]
	}
	if l.existing {
		if len(parts) != 1 {
			return fmt.Errorf("want ID or ID:boot, not %q", s)
		}
		id, err := strconv.Atoi(parts[0])
		if err != nil || id < 1 {
			return fmt.Errorf("invalid volume id %q: want a positive integer", parts[0])
		}
		*l.vols = append(*l.vols, unit.VMVolumeRequest{Existing: id, Boot: boot})
		return nil
	}
	if len(parts) != 2 || parts[0] == "" {
		return fmt.Errorf("want NAME:SIZE or NAME:SIZE:boot, not %q", s)
	}
	mib, err := parseMiB(parts[1])
	if err != nil {
		return err
	}
	*l.vols = append(*l.vols, unit.VMVolumeRequest{Name: parts[0], SizeMiB: mib, Boot: boot})
	return nil
}

// nicList collects --nic NETWORK[=MAC].
type nicList struct{ nics *[]unit.VMNICRequest }

func (l nicList) String() string { return "" }

func (l nicList) Set(s string) error {
	network, mac, hasMAC := strings.Cut(s, "=")
	if network == "" {
		return fmt.Errorf("want NETWORK or NETWORK=MAC, not %q", s)
	}
	if hasMAC {
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 {
			return fmt.Errorf("invalid MAC %q: want six bytes such as 52:54:00:12:34:56", mac)
		}
		mac = hw.String()
	}
	*l.nics = append(*l.nics, unit.VMNICRequest{Network: network, MAC: mac})
	return nil
}

// idList collects a repeated volume id flag.
type idList struct{ ids *[]int }

func (l idList) String() string { return "" }

func (l idList) Set(s string) error {
	id, err := strconv.Atoi(s)
	if err != nil || id < 1 {
		return fmt.Errorf("invalid volume id %q: want a positive integer", s)
	}
	*l.ids = append(*l.ids, id)
	return nil
}

// parseMiB reads a size (see parseSize) that must be a whole number of
// MiB: the API counts VM memory and volumes in MiB.
func parseMiB(s string) (int64, error) {
	b, err := parseSize(s)
	if err != nil {
		return 0, err
	}
	if b%(1<<20) != 0 {
		return 0, fmt.Errorf("invalid size %q: want a whole number of MiB, such as 512M or 1G", s)
	}
	return b >> 20, nil
}

func parseVMCreate(args []string) (unit.VMCreate, error) {
	var req unit.VMCreate
	fs := subFlags("vm create")
	fs.IntVar(&req.VCPUs, "vcpus", 1, "virtual CPUs")
	memory := fs.String("memory", "", "memory, such as 512M or 2G")
	fs.Var(volumeList{vols: &req.Volumes}, "volume", "a new volume NAME:SIZE[:boot]")
	fs.Var(volumeList{vols: &req.Volumes, existing: true}, "existing-volume", "an existing volume ID[:boot]")
	group := fs.Int("group", 0, "the storage group of the new volumes")
	fs.Var(nicList{nics: &req.NICs}, "nic", "a shared network NETWORK[=MAC]")
	fs.StringVar(&req.Boot, "boot", "", "boot source: disk, cd or test-guest")
	fs.StringVar(&req.CD, "cd", "", "the VCD, an .iso of the PMs' VCD folder")
	fs.BoolVar(&req.Is64Bit, "64bit", false, "a 64-bit guest (needs at least 600 MiB)")
	fs.BoolVar(&req.Start, "start", false, "start the VM once its volumes are ready")
	placement := fs.String("placement", "", "HA load balancing: auto, manual:PM or mixed:PM (default auto)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return unit.VMCreate{}, err
	}
	if len(pos) != 1 {
		return unit.VMCreate{}, fmt.Errorf("%w: vm create takes one VM name", errUsage)
	}
	req.Name = pos[0]
	if *memory == "" {
		return unit.VMCreate{}, fmt.Errorf("%w: vm create needs --memory, such as --memory 512M", errUsage)
	}
	if req.MemoryMiB, err = parseMiB(*memory); err != nil {
		return unit.VMCreate{}, fmt.Errorf("%w: --memory: %v", errUsage, err)
	}
	if len(req.Volumes) == 0 {
		return unit.VMCreate{}, fmt.Errorf("%w: vm create needs a boot volume: --volume NAME:SIZE or --existing-volume ID", errUsage)
	}
	if *group < 0 {
		return unit.VMCreate{}, fmt.Errorf("%w: invalid --group %d: want a storage group id", errUsage, *group)
	}
	boots := 0
	for i := range req.Volumes {
		if req.Volumes[i].Existing == 0 {
			req.Volumes[i].Group = *group
		}
		if req.Volumes[i].Boot {
			boots++
		}
	}
	if boots == 0 && len(req.Volumes) == 1 {
		req.Volumes[0].Boot = true // the only volume is the one to boot from
	}
	switch req.Boot {
	case "", "disk", "cd", "test-guest":
	default:
		return unit.VMCreate{}, fmt.Errorf("%w: invalid --boot %q: want disk, cd or test-guest", errUsage, req.Boot)
	}
	if *placement != "" {
		p, err := parsePlacement(*placement)
		if err != nil {
			return unit.VMCreate{}, err
		}
		req.Placement = &p
	}
	return req, nil
}

// parsePlacement reads auto, manual:PM or mixed:PM.
func parsePlacement(s string) (unit.Placement, error) {
	policy, pm, hasPM := strings.Cut(s, ":")
	switch {
	case policy == unit.PlaceAuto && !hasPM:
		return unit.Placement{Policy: policy}, nil
	case (policy == unit.PlaceManual || policy == unit.PlaceMixed) && (pm == "1" || pm == "2"):
		n, _ := strconv.Atoi(pm)
		return unit.Placement{Policy: policy, PM: n}, nil
	}
	return unit.Placement{}, fmt.Errorf("%w: invalid --placement %q: want auto, manual:PM or mixed:PM (PM 1 or 2)", errUsage, s)
}

func parseVMConfig(args []string) (string, unit.VMConfig, error) {
	var req unit.VMConfig
	fs := subFlags("vm config")
	vcpus := fs.Int("vcpus", 0, "virtual CPUs")
	memory := fs.String("memory", "", "memory, such as 512M or 2G")
	fs.Var(volumeList{vols: &req.AddVolumes}, "add-volume", "attach a new volume NAME:SIZE")
	fs.Var(volumeList{vols: &req.AddVolumes, existing: true}, "add-existing", "attach an existing volume ID")
	fs.Var(idList{ids: &req.Detach}, "detach", "detach volume ID (kept in the unit)")
	fs.Var(idList{ids: &req.Delete}, "delete", "detach volume ID and delete it")
	var nics []unit.VMNICRequest
	fs.Var(nicList{nics: &nics}, "nic", "a shared network NETWORK[=MAC]; replaces the VM's networks")
	noNICs := fs.Bool("no-nics", false, "remove all the VM's networks")
	yes := fs.Bool("yes", false, "confirm that --delete destroys data")
	placement := fs.String("placement", "", "HA load balancing: auto, manual:PM or mixed:PM (changes in any state)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return "", unit.VMConfig{}, err
	}
	if *placement != "" {
		p, err := parsePlacement(*placement)
		if err != nil {
			return "", unit.VMConfig{}, err
		}
		req.Placement = &p
	}
	if len(pos) != 1 {
		return "", unit.VMConfig{}, fmt.Errorf("%w: vm config takes one VM name or id", errUsage)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["vcpus"] {
		if *vcpus < 1 {
			return "", unit.VMConfig{}, fmt.Errorf("%w: invalid --vcpus %d: want a positive number", errUsage, *vcpus)
		}
		req.VCPUs = vcpus
	}
	if set["memory"] {
		mib, err := parseMiB(*memory)
		if err != nil {
			return "", unit.VMConfig{}, fmt.Errorf("%w: --memory: %v", errUsage, err)
		}
		req.MemoryMiB = &mib
	}
	switch {
	case *noNICs && len(nics) > 0:
		return "", unit.VMConfig{}, fmt.Errorf("%w: give --nic or --no-nics, not both", errUsage)
	case *noNICs:
		nics = []unit.VMNICRequest{}
		req.NICs = &nics
	case len(nics) > 0:
		req.NICs = &nics
	}
	if req.VCPUs == nil && req.MemoryMiB == nil && len(req.AddVolumes) == 0 && len(req.Detach) == 0 && len(req.Delete) == 0 && req.NICs == nil && req.Placement == nil {
		return "", unit.VMConfig{}, fmt.Errorf("%w: vm config needs something to change: --vcpus, --memory, --add-volume, --add-existing, --detach, --delete, --nic, --no-nics or --placement", errUsage)
	}
	if len(req.Delete) > 0 && !*yes {
		return "", unit.VMConfig{}, fmt.Errorf("vm config --delete destroys the data of volume(s) %s on both PMs; run again with --yes to go ahead", joinInts(req.Delete))
	}
	return pos[0], req, nil
}

func joinInts(ids []int) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.Itoa(id)
	}
	return strings.Join(s, ", ")
}

func printVMs(w io.Writer, vms []unit.VM) error {
	if len(vms) == 0 {
		_, err := fmt.Fprintln(w, "No virtual machines.")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tNODE\tVCPUS\tMEMORY\tACTIVITY")
	for _, v := range vms {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", v.ID, orDash(v.Name), orDash(v.State), pmName(v.Node),
			v.VCPUs, unit.FormatBytes(v.MemoryBytes), orDash(v.Activity))
	}
	return tw.Flush()
}

func printVM(w io.Writer, v unit.VM) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "ID:\t%d\n", v.ID)
	fmt.Fprintf(tw, "Name:\t%s\n", orDash(v.Name))
	fmt.Fprintf(tw, "UUID:\t%s\n", orDash(v.UUID))
	fmt.Fprintf(tw, "State:\t%s\n", orDash(v.State))
	fmt.Fprintf(tw, "Activity:\t%s\n", orDash(v.Activity))
	allowed := make([]string, 0, len(v.Allowed))
	for _, a := range v.Allowed {
		if word, ok := vmCommandWords(a); ok {
			a += " (" + word + ")"
		}
		allowed = append(allowed, a)
	}
	fmt.Fprintf(tw, "Allowed:\t%s\n", orDash(strings.Join(allowed, ", ")))
	fmt.Fprintf(tw, "Node:\t%s\n", pmName(v.Node))
	fmt.Fprintf(tw, "vCPUs:\t%d\n", v.VCPUs)
	fmt.Fprintf(tw, "Memory:\t%s\n", unit.FormatBytes(v.MemoryBytes))
	boot := orDash(v.Boot)
	if v.CD != "" {
		boot += " (CD " + v.CD + ")"
	}
	fmt.Fprintf(tw, "Boot:\t%s\n", boot)
	crashes := strconv.Itoa(v.Crashes)
	if v.Critical {
		crashes += " (Critical: reset the device to restart it)"
	}
	fmt.Fprintf(tw, "Crashes:\t%s\n", crashes)
	fmt.Fprintf(tw, "Starts:\t%d\n", v.Starts)
	fmt.Fprintf(tw, "Started:\t%s\n", formatTime(v.Started))
	for _, warn := range v.Warnings {
		fmt.Fprintf(tw, "Warning:\t%s\n", warn)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nVolumes:")
	if len(v.Volumes) == 0 {
		fmt.Fprintln(w, "None.")
	} else {
		tw = newTable(w)
		fmt.Fprintln(tw, "ID\tNAME\tSIZE\tBOOT\tSTATE")
		for _, vol := range v.Volumes {
			boot := "no"
			if vol.Boot {
				boot = "yes"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", vol.VolumeID, orDash(vol.Name), unit.FormatBytes(vol.SizeBytes), boot, orDash(vol.State))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	fmt.Fprintln(w, "\nNetworks:")
	if len(v.NICs) == 0 {
		fmt.Fprintln(w, "None.")
	} else {
		tw = newTable(w)
		fmt.Fprintln(tw, "NETWORK\tMAC")
		for _, n := range v.NICs {
			fmt.Fprintf(tw, "%s\t%s\n", orDash(n.Network), orDash(n.MAC))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	m := v.Migration
	if m == nil {
		return nil
	}
	fmt.Fprintln(w, "\nMigration:")
	tw = newTable(w)
	fmt.Fprintf(tw, "From:\t%s\n", pmName(m.From))
	fmt.Fprintf(tw, "To:\t%s\n", pmName(m.To))
	fmt.Fprintf(tw, "Status:\t%s\n", orDash(m.Status))
	fmt.Fprintf(tw, "Started:\t%s\n", formatTime(m.Started))
	fmt.Fprintf(tw, "Finished:\t%s\n", formatTime(m.Finished))
	if m.TotalMs > 0 || m.DowntimeMs > 0 {
		fmt.Fprintf(tw, "Total time:\t%s\n", time.Duration(m.TotalMs)*time.Millisecond)
		fmt.Fprintf(tw, "Downtime:\t%s\n", time.Duration(m.DowntimeMs)*time.Millisecond)
	}
	if m.Error != "" {
		fmt.Fprintf(tw, "Error:\t%s\n", m.Error)
	}
	return tw.Flush()
}
