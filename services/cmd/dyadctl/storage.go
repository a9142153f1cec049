package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/dyad-ha/dyad/services/apiclient"
	"github.com/dyad-ha/dyad/services/unit"
)

// parseStorageCommand parses the volume, storage-group and disk commands;
// ok is false for a command line that is none of them.
func parseStorageCommand(args []string) (cmd command, ok bool, err error) {
	if len(args) < 2 {
		return command{}, false, nil
	}
	words := strings.Join(args, " ")
	rest := args[2:]
	switch args[0] + " " + args[1] {
	case "volume list":
		if len(rest) != 0 {
			return command{}, false, nil
		}
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.Volumes(ctx) },
			print: func(w io.Writer, v any) error { return printVolumes(w, v.([]unit.Volume)) },
		}, true, nil
	case "volume show":
		if len(rest) != 1 {
			return command{}, true, fmt.Errorf("%w: volume show takes one volume id or name", errUsage)
		}
		ref := rest[0]
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return findVolume(ctx, c, ref) },
			print: func(w io.Writer, v any) error { return printVolume(w, v.(unit.Volume)) },
		}, true, nil
	case "volume create":
		fs := subFlags("volume create")
		group := fs.Int("group", 0, "storage group id")
		pos, err := parseFlags(fs, rest)
		if err != nil {
			return command{}, true, err
		}
		if len(pos) != 2 {
			return command{}, true, fmt.Errorf("%w: volume create takes a name and a size", errUsage)
		}
		size, err := parseSize(pos[1])
		if err != nil {
			return command{}, true, fmt.Errorf("%w: %v", errUsage, err)
		}
		if *group < 0 {
			return command{}, true, fmt.Errorf("%w: invalid --group %d: want a storage group id", errUsage, *group)
		}
		spec := unit.VolumeSpec{Name: pos[0], SizeBytes: size, Group: *group}
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.CreateVolume(ctx, spec) },
			print: func(w io.Writer, v any) error { return printVolume(w, v.(unit.Volume)) },
		}, true, nil
	case "volume grow":
		if len(rest) != 2 {
			return command{}, true, fmt.Errorf("%w: volume grow takes a volume id and the new size", errUsage)
		}
		id, err := parseID("volume", rest[0])
		if err != nil {
			return command{}, true, err
		}
		size, err := parseSize(rest[1])
		if err != nil {
			return command{}, true, fmt.Errorf("%w: %v", errUsage, err)
		}
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.GrowVolume(ctx, id, size) },
			print: func(w io.Writer, v any) error { return printVolume(w, v.(unit.Volume)) },
		}, true, nil
	case "volume delete":
		fs := subFlags("volume delete")
		yes := fs.Bool("yes", false, "confirm that the volume's data is destroyed on both PMs")
		pos, err := parseFlags(fs, rest)
		if err != nil {
			return command{}, true, err
		}
		if len(pos) != 1 {
			return command{}, true, fmt.Errorf("%w: volume delete takes one volume id", errUsage)
		}
		id, err := parseID("volume", pos[0])
		if err != nil {
			return command{}, true, err
		}
		if !*yes {
			return command{}, true, fmt.Errorf("volume delete destroys volume %d and its data on both PMs; run again with --yes to go ahead", id)
		}
		return command{
			name: words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) {
				if err := c.DeleteVolume(ctx, id); err != nil {
					return nil, err
				}
				return deletion{ID: id, Status: "deleting"}, nil
			},
			print: func(w io.Writer, v any) error {
				_, err := fmt.Fprintf(w, "Deleting volume %d: its legs are being removed on both PMs.\n", v.(deletion).ID)
				return err
			},
		}, true, nil
	case "volume resolve":
		fs := subFlags("volume resolve")
		survivor := fs.Int("survivor", 0, "the PM whose data is kept")
		pos, err := parseFlags(fs, rest)
		if err != nil {
			return command{}, true, err
		}
		if len(pos) != 1 {
			return command{}, true, fmt.Errorf("%w: volume resolve takes one volume id", errUsage)
		}
		id, err := parseID("volume", pos[0])
		if err != nil {
			return command{}, true, err
		}
		if *survivor < 1 {
			return command{}, true, fmt.Errorf("%w: volume resolve needs --survivor PM: the PM whose data is kept (the other side is kept as a snapshot)", errUsage)
		}
		return command{
			name: words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) {
				return c.ResolveSplitBrain(ctx, id, *survivor)
			},
			print: func(w io.Writer, v any) error { return printVolume(w, v.(unit.Volume)) },
		}, true, nil
	case "volume snapshot-delete":
		if len(rest) != 2 {
			return command{}, true, fmt.Errorf("%w: volume snapshot-delete takes a volume id and a snapshot name", errUsage)
		}
		id, err := parseID("volume", rest[0])
		if err != nil {
			return command{}, true, err
		}
		name := rest[1]
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.DeleteSnapshot(ctx, id, name) },
			print: func(w io.Writer, v any) error { return printVolume(w, v.(unit.Volume)) },
		}, true, nil
	case "storage-group list":
		if len(rest) != 0 {
			return command{}, false, nil
		}
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.StorageGroups(ctx) },
			print: func(w io.Writer, v any) error { return printStorageGroups(w, v.([]unit.StorageGroup)) },
		}, true, nil
	case "disk list":
		if len(rest) != 0 {
			return command{}, false, nil
		}
		return command{
			name:  words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) { return c.Disks(ctx) },
			print: func(w io.Writer, v any) error { return printDisks(w, v.([]unit.Disk)) },
		}, true, nil
	case "disk activate":
		fs := subFlags("disk activate")
		group := fs.Int("group", 0, "storage group id")
		erase := fs.Bool("erase", false, "erase a disk that holds data")
		pos, err := parseFlags(fs, rest)
		if err != nil {
			return command{}, true, err
		}
		if len(pos) != 2 {
			return command{}, true, fmt.Errorf("%w: disk activate takes a PM id and a disk name", errUsage)
		}
		pm, err := parseID("PM", pos[0])
		if err != nil {
			return command{}, true, err
		}
		if *group < 0 {
			return command{}, true, fmt.Errorf("%w: invalid --group %d: want a storage group id", errUsage, *group)
		}
		disk := pos[1]
		return command{
			name: words,
			fetch: func(ctx context.Context, c *apiclient.Client) (any, error) {
				return activateDisk(ctx, c, pm, disk, *group, *erase)
			},
			print: func(w io.Writer, v any) error { return printDisks(w, []unit.Disk{v.(unit.Disk)}) },
		}, true, nil
	}
	return command{}, false, nil
}

// deletion is what volume delete prints with --json: the API's answer.
type deletion struct {
	ID     int    `json:"id"`
	Status string `json:"status"`
}

func subFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseFlags parses a command's flags wherever they stand among its
// arguments ("volume create data 1GiB --group 2") and returns the other
// arguments. After "--" everything is an argument. The commands' flags are
// booleans and integers, so a "--" is never the value of a flag.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %s: %v", errUsage, fs.Name(), err)
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func parseID(what, s string) (int, error) {
	id, err := strconv.Atoi(s)
	if err != nil || id < 1 {
		return 0, fmt.Errorf("%w: invalid %s id %q: want a positive integer", errUsage, what, s)
	}
	return id, nil
}

// findVolume finds a volume by id or, failing that, by name: a name made
// of digits is found when no volume has that id.
func findVolume(ctx context.Context, c *apiclient.Client, ref string) (unit.Volume, error) {
	if id, err := strconv.Atoi(ref); err == nil && id >= 1 {
		v, err := c.Volume(ctx, id)
		var ae *apiclient.APIError
		if err == nil || !errors.As(err, &ae) || ae.StatusCode != 404 {
			return v, err
		}
	}
	vols, err := c.Volumes(ctx)
	if err != nil {
		return unit.Volume{}, err
	}
	for _, v := range vols {
		if v.Name == ref {
			return v, nil
		}
	}
	return unit.Volume{}, fmt.Errorf("no volume with id or name %q", ref)
}

// activateDisk refuses a foreign disk without erase before asking the unit,
// which refuses it too: the operator learns which flag says yes.
func activateDisk(ctx context.Context, c *apiclient.Client, pm int, disk string, group int, erase bool) (unit.Disk, error) {
	if !erase {
		disks, err := c.Disks(ctx)
		if err != nil {
			return unit.Disk{}, err
		}
		for _, d := range disks {
			if d.PM == pm && d.Name == disk && d.State == unit.DiskForeign {
				what := "data"
				if d.Detail != "" {
					what = "data (" + d.Detail + ")"
				}
				return unit.Disk{}, fmt.Errorf("disk %s of PM %d holds %s: activating it erases the whole disk; run again with --erase to go ahead", disk, pm, what)
			}
		}
	}
	return c.ActivateDisk(ctx, pm, disk, group, erase)
}

// sizeUnits maps size suffixes to bytes. The one-letter forms are binary,
// as in LVM and qemu-img; "KB", "MB", "GB", "TB" are decimal.
var sizeUnits = map[string]int64{
	"": 1, "B": 1,
	"K": 1 << 10, "KIB": 1 << 10, "KB": 1e3,
	"M": 1 << 20, "MIB": 1 << 20, "MB": 1e6,
	"G": 1 << 30, "GIB": 1 << 30, "GB": 1e9,
	"T": 1 << 40, "TIB": 1 << 40, "TB": 1e12,
	"P": 1 << 50, "PIB": 1 << 50, "PB": 1e15,
}

// parseSize reads a size such as "64MiB", "1GiB", "512M", "10G", "1 TB" or
// "4096" (bytes). Units are case-insensitive.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid size %q: want a whole number of bytes or of a unit, such as 4096, 64MiB or 10G", s)
	}
	suffix := strings.TrimSpace(t[i:])
	if strings.HasPrefix(suffix, ".") || strings.HasPrefix(suffix, ",") {
		return 0, fmt.Errorf("invalid size %q: use whole numbers and a smaller unit (1536MiB, not 1.5GiB)", s)
	}
	mult, ok := sizeUnits[strings.ToUpper(suffix)]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (use B, KiB, MiB, GiB, TiB or K, M, G, T; KB, MB, GB, TB are powers of 1000)", s, suffix)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("invalid size %q: must be more than zero", s)
	}
	return n * mult, nil
}

func pmName(pm int) string {
	if pm == 0 {
		return "-"
	}
	return "PM" + strconv.Itoa(pm)
}

func legsSummary(legs []unit.Leg) string {
	parts := make([]string, 0, len(legs))
	for _, l := range legs {
		disk := orDash(l.Disk)
		if l.Failed {
			disk = "failed"
		}
		parts = append(parts, pmName(l.PM)+" "+disk)
	}
	return orDash(strings.Join(parts, ", "))
}

func printVolumes(w io.Writer, vols []unit.Volume) error {
	if len(vols) == 0 {
		_, err := fmt.Fprintln(w, "No volumes.")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tGROUP\tSIZE\tSTATE\tPRIMARY\tLEGS")
	for _, v := range vols {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n", v.ID, orDash(v.Name), v.Group, unit.FormatBytes(v.SizeBytes),
			v.StateText(), pmName(v.Primary), legsSummary(v.Legs))
	}
	return tw.Flush()
}

func printVolume(w io.Writer, v unit.Volume) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "ID:\t%d\n", v.ID)
	fmt.Fprintf(tw, "Name:\t%s\n", orDash(v.Name))
	fmt.Fprintf(tw, "Group:\t%d\n", v.Group)
	fmt.Fprintf(tw, "Size:\t%s (%d bytes)\n", unit.FormatBytes(v.SizeBytes), v.SizeBytes)
	fmt.Fprintf(tw, "State:\t%s\n", v.StateText())
	if s := v.Sync; s != nil {
		fmt.Fprintf(tw, "Resync:\tfrom %s, %s/s, %s left\n", pmName(s.Source), unit.FormatBytes(s.RateBytes), unit.FormatBytes(s.OutOfSyncBytes))
	}
	fmt.Fprintf(tw, "Primary:\t%s\n", pmName(v.Primary))
	fmt.Fprintf(tw, "Device:\t%s (minor %d)\n", orDash(v.Device), v.Minor)
	fmt.Fprintf(tw, "Created:\t%s\n", formatTime(v.Created))
	fmt.Fprintf(tw, "Detail:\t%s\n", orDash(v.Detail))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nLegs:")
	if len(v.Legs) == 0 {
		fmt.Fprintln(w, "None reported.")
	} else {
		tw = newTable(w)
		fmt.Fprintln(tw, "PM\tROLE\tDISK\tCONNECTION\tBACKING\tON DISKS\tLAST PRIMARY\tDETAIL")
		for _, l := range v.Legs {
			disk := orDash(l.Disk)
			if l.Failed {
				disk += " (failed)"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.PM, orDash(l.Role), disk, orDash(l.Connection),
				orDash(l.Backing), orDash(strings.Join(l.Disks, ",")), formatTime(l.LastPrimary), orDash(l.Detail))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(v.SplitBrain) > 0 {
		fmt.Fprintf(w, "\nSplit brain: both legs were written apart. Keep one side with\n  dyadctl volume resolve %d --survivor PM\nThe other side is kept as a snapshot.\n", v.ID)
		tw = newTable(w)
		fmt.Fprintln(tw, "PM\tGENERATION\tLAST PRIMARY\tLAST WRITER")
		for _, s := range v.SplitBrain {
			last := "no"
			if s.LastWriter {
				last = "yes"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.PM, orDash(s.Generation), formatTime(s.LastPrimary), last)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(v.Snapshots) > 0 {
		fmt.Fprintln(w, "\nSnapshots:")
		tw = newTable(w)
		fmt.Fprintln(tw, "NAME\tPM\tSIZE\tCREATED\tREASON")
		for _, s := range v.Snapshots {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", s.Name, s.PM, unit.FormatBytes(s.SizeBytes), formatTime(s.Created), orDash(s.Reason))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func printStorageGroups(w io.Writer, groups []unit.StorageGroup) error {
	if len(groups) == 0 {
		_, err := fmt.Fprintln(w, "No storage groups.")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tCAPACITY\tFREE\tVOLUMES\tDISKS")
	for _, g := range groups {
		disks := make([]string, 0, len(g.Disks))
		for _, d := range g.Disks {
			disks = append(disks, pmName(d.PM)+" "+d.Name)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", g.ID, orDash(g.Name), unit.FormatBytes(g.CapacityBytes),
			unit.FormatBytes(g.FreeBytes), g.Volumes, orDash(strings.Join(disks, ", ")))
	}
	return tw.Flush()
}

func printDisks(w io.Writer, disks []unit.Disk) error {
	if len(disks) == 0 {
		_, err := fmt.Fprintln(w, "No disks reported.")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "PM\tDISK\tSIZE\tSTATE\tGROUP\tMODEL\tSERIAL\tDETAIL")
	for _, d := range disks {
		group := "-"
		if d.Group != 0 {
			group = strconv.Itoa(d.Group)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.PM, d.Name, unit.FormatBytes(d.SizeBytes), orDash(string(d.State)),
			group, orDash(d.Model), orDash(d.Serial), orDash(d.Detail))
	}
	return tw.Flush()
}
