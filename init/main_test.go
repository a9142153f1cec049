package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/dyad-ha/dyad/init/cmdline"
)

func TestPhaseOrder(t *testing.T) {
	phases := bootPhases()
	idx := map[string]int{}
	for i, p := range phases {
		if _, dup := idx[p.Name]; dup {
			t.Fatalf("phase %s listed twice", p.Name)
		}
		if p.Run == nil {
			t.Errorf("phase %s has no Run", p.Name)
		}
		idx[p.Name] = i
		// Any other failure must leave a PM that can be diagnosed.
		if p.Critical != (p.Name == "mount") {
			t.Errorf("phase %s: critical = %v; only mount may stop the boot", p.Name, p.Critical)
		}
	}
	for _, want := range []string{"mount", "cmdline", "modules", "powerbutton", "hostname", "data", "reaper", "network", "watchdog", "testchannel", "services"} {
		if _, ok := idx[want]; !ok {
			t.Errorf("phase %s missing", want)
		}
	}
	if phases[0].Name != "mount" {
		t.Errorf("first phase is %s, want mount", phases[0].Name)
	}
	for _, o := range []struct{ before, after, why string }{
		{"mount", "cmdline", "/proc/cmdline needs /proc"},
		{"cmdline", "hostname", "the host name comes from the command line"},
		{"cmdline", "data", "dyad.datadisk comes from the command line"},
		{"modules", "watchdog", "softdog"},
		{"modules", "data", "virtio_blk and ext4"},
		{"modules", "powerbutton", "button and evdev"},
		{"modules", "testchannel", "virtio_console"},
		{"modules", "network", "drivers"},
		{"data", "reaper", "datadisk waits for mke2fs itself"},
		{"reaper", "testchannel", "test channel commands are reaped by the reaper"},
		{"reaper", "services", "services are reaped by the reaper"},
		{"data", "services", "service logs go to /data/log"},
		{"network", "services", "the agent needs lo"},
		{"data", "watchdog", "nothing feeds the watchdog during a long mkfs"},
		{"network", "watchdog", "the watchdog is armed just before the main loop"},
	} {
		if idx[o.before] >= idx[o.after] {
			t.Errorf("phase %s must run before %s (%s)", o.before, o.after, o.why)
		}
	}
}

func TestHostname(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		want    string
		err     bool
	}{
		{"console=ttyS0", "dyad", false},
		{"dyad.node=2", "pm2", false},
		{"dyad.node=1 dyad.hostname=lab-a", "lab-a", false},
		{"dyad.hostname=bad_name dyad.node=1", "dyad", true},
		{"dyad.hostname=" + strings.Repeat("a", 64), "dyad", true},
		{"dyad.hostname=-x", "dyad", true},
		{"dyad.node=3", "dyad", true},
	} {
		p, err := cmdline.Parse(tc.cmdline)
		if err != nil {
			t.Fatal(err)
		}
		got, err := hostname(p)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("%q: got %q, %v; want %q, error %v", tc.cmdline, got, err, tc.want, tc.err)
		}
	}
}

func TestConsoleSwitches(t *testing.T) {
	var early, late bytes.Buffer
	st := newState(&early)
	st.Log.Info("dyad-init: early")
	st.Console.set(&late)
	st.Log.Info("dyad-init: late")
	if !strings.Contains(early.String(), "dyad-init: early") || strings.Contains(early.String(), "late") {
		t.Errorf("early writer got %q", early.String())
	}
	if !strings.Contains(late.String(), "dyad-init: late") {
		t.Errorf("console writer got %q", late.String())
	}
	if _, ok := st.Services.Log("dyad-agent"); !ok {
		t.Error("dyad-agent is not supervised")
	}
}
