package vm

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	pm8 := Host{MemoryBytes: 8 * GiB, CPUs: 8}
	pm4 := Host{MemoryBytes: 4 * GiB, CPUs: 4}
	boot := func(name string) []Volume { return []Volume{{Name: name, SizeBytes: GiB, Boot: true}} }
	good := Spec{Name: "web1", VCPUs: 2, MemoryBytes: GiB, Is64Bit: true, Volumes: boot("web1-boot"),
		NICs: []NIC{{Network: "biz1"}}}
	unit := Unit{PMs: []Host{pm8, pm8}, Networks: []string{"biz1", "biz2"}}
	with := func(f func(s *Spec)) Spec {
		s := good
		s.Volumes = slices.Clone(good.Volumes)
		s.NICs = slices.Clone(good.NICs)
		f(&s)
		return s
	}
	unitWith := func(f func(u *Unit)) Unit {
		u := unit
		f(&u)
		return u
	}
	manyVolumes := func(prefix string, n int) []Volume {
		v := make([]Volume, n)
		for i := range v {
			v[i] = Volume{Name: prefix + "-" + strings.Repeat("x", i+1), SizeBytes: GiB, Boot: i == 0}
		}
		return v
	}
	mac := func(s string) net.HardwareAddr {
		m, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	tests := []struct {
		name string
		spec Spec
		unit Unit
		// wantErr are substrings, one per expected problem, in order.
		wantErr  []string
		wantWarn []string
	}{
		{name: "good", spec: good, unit: unit},
		{name: "1 vCPU", spec: with(func(s *Spec) { s.VCPUs = 1 }), unit: unit},
		{name: "8 vCPUs on 8-CPU PMs warns", spec: with(func(s *Spec) { s.VCPUs = 8 }), unit: unit,
			wantWarn: []string{"the unit's VMs would have 8 vCPUs, but a PM has 8 CPUs of which 2 are reserved for the system, leaving 6"}},
		{name: "6 vCPUs on 8-CPU PMs fits", spec: with(func(s *Spec) { s.VCPUs = 6 }), unit: unit},
		{name: "smaller PM sets the vCPU budget", spec: with(func(s *Spec) { s.VCPUs = 3 }), unit: unitWith(func(u *Unit) { u.PMs = []Host{pm8, pm4} }),
			wantWarn: []string{"would have 3 vCPUs, but a PM has 4 CPUs of which 2 are reserved for the system, leaving 2"}},
		{name: "other VMs' vCPUs count", spec: good, unit: unitWith(func(u *Unit) {
			u.VMs = []Spec{{Name: "db", VCPUs: 5, MemoryBytes: GiB, Volumes: boot("db-boot")}}
		}), wantWarn: []string{"would have 7 vCPUs"}},
		{name: "0 vCPUs", spec: with(func(s *Spec) { s.VCPUs = 0 }), unit: unit, wantErr: []string{"0 vCPUs: a VM has 1 to 8 vCPUs"}},
		{name: "9 vCPUs", spec: with(func(s *Spec) { s.VCPUs = 9 }), unit: unit, wantErr: []string{"9 vCPUs: a VM has 1 to 8 vCPUs"}},

		{name: "32-bit minimum", spec: with(func(s *Spec) { s.Is64Bit = false; s.MemoryBytes = 256 * MiB }), unit: unit},
		{name: "32-bit below minimum", spec: with(func(s *Spec) { s.Is64Bit = false; s.MemoryBytes = 255 * MiB }), unit: unit,
			wantErr: []string{"memory 255 MiB: a VM needs at least 256 MiB"}},
		{name: "64-bit minimum", spec: with(func(s *Spec) { s.MemoryBytes = 600 * MiB }), unit: unit},
		{name: "64-bit below minimum", spec: with(func(s *Spec) { s.MemoryBytes = 512 * MiB }), unit: unit,
			wantErr: []string{"memory 512 MiB: a 64-bit VM needs at least 600 MiB"}},
		{name: "memory not whole MiB", spec: with(func(s *Spec) { s.MemoryBytes = GiB + 1 }), unit: unit,
			wantErr: []string{"memory 1073741825 bytes: must be a whole number of MiB"}},
		{name: "memory up to the smaller PM less the reserve", spec: with(func(s *Spec) { s.MemoryBytes = 3 * GiB }),
			unit: unitWith(func(u *Unit) { u.PMs = []Host{pm8, pm4} })},
		{name: "memory above the smaller PM less the reserve", spec: with(func(s *Spec) { s.MemoryBytes = 3*GiB + MiB }),
			unit:    unitWith(func(u *Unit) { u.PMs = []Host{pm8, pm4} }),
			wantErr: []string{"memory 3073 MiB: a VM may have at most 3 GiB (the smaller PM's 4 GiB less 1 GiB reserved for the system)"}},
		{name: "configured reserve", spec: with(func(s *Spec) { s.MemoryBytes = 3 * GiB }),
			unit:    unitWith(func(u *Unit) { u.PMs = []Host{pm4, pm4}; u.ReservedMemory = 2 * GiB }),
			wantErr: []string{"at most 2 GiB (the smaller PM's 4 GiB less 2 GiB reserved"}},
		{name: "memory never over-provisioned", spec: with(func(s *Spec) { s.MemoryBytes = 2 * GiB }),
			unit: unitWith(func(u *Unit) {
				u.PMs = []Host{{MemoryBytes: 4 * GiB, CPUs: 8}, pm8}
				u.VMs = []Spec{{Name: "db", VCPUs: 1, MemoryBytes: 1536 * MiB, Volumes: boot("db-boot")}}
			}),
			wantErr: []string{"memory 2 GiB: memory is never over-provisioned, and the other VMs already have 1536 MiB of the 3 GiB available (the smaller PM's 4 GiB less 1 GiB reserved for the system), leaving 1536 MiB"}},
		{name: "memory exactly fills the PM", spec: with(func(s *Spec) { s.MemoryBytes = 1536 * MiB }),
			unit: unitWith(func(u *Unit) {
				u.PMs = []Host{{MemoryBytes: 4 * GiB, CPUs: 8}, pm8}
				u.VMs = []Spec{{Name: "db", VCPUs: 1, MemoryBytes: 1536 * MiB, Volumes: boot("db-boot")}}
			})},
		{name: "one PM only", spec: good, unit: unitWith(func(u *Unit) { u.PMs = []Host{pm4} })},
		{name: "no PM", spec: good, unit: unitWith(func(u *Unit) { u.PMs = nil }), wantErr: []string{"the unit has no PM"}},

		{name: "no boot volume", spec: with(func(s *Spec) { s.Volumes[0].Boot = false }), unit: unit,
			wantErr: []string{"0 boot volumes: a VM has exactly one"}},
		{name: "no volume", spec: with(func(s *Spec) { s.Volumes = nil }), unit: unit,
			wantErr: []string{"0 boot volumes: a VM has exactly one"}},
		{name: "two boot volumes", spec: with(func(s *Spec) { s.Volumes = append(s.Volumes, Volume{Name: "d", SizeBytes: 1, Boot: true}) }), unit: unit,
			wantErr: []string{"2 boot volumes: a VM has exactly one"}},
		{name: "volume listed twice", spec: with(func(s *Spec) { s.Volumes = append(s.Volumes, Volume{Name: "web1-boot", SizeBytes: 1}) }), unit: unit,
			wantErr: []string{`volume "web1-boot" is listed twice`}},
		{name: "volume of another VM", spec: good, unit: unitWith(func(u *Unit) {
			u.VMs = []Spec{{Name: "db", VCPUs: 1, MemoryBytes: GiB, Volumes: boot("web1-boot")}}
		}), wantErr: []string{`volume "web1-boot" already belongs to VM "db"`}},
		{name: "volume of size 0", spec: with(func(s *Spec) { s.Volumes[0].SizeBytes = 0 }), unit: unit,
			wantErr: []string{`volume "web1-boot": size 0 bytes: must be positive`}},
		{name: "bad volume name", spec: with(func(s *Spec) { s.Volumes[0].Name = "a,b" }), unit: unit,
			wantErr: []string{`volume: name "a,b": use letters`}},
		{name: "62 volumes with VCDs", spec: with(func(s *Spec) { s.Volumes = manyVolumes("w", 20) }), unit: unitWith(func(u *Unit) {
			u.VCDs = 2
			u.VMs = []Spec{{Name: "db", VCPUs: 1, MemoryBytes: GiB, Volumes: manyVolumes("d", 40)}}
		})},
		{name: "63 volumes with VCDs", spec: with(func(s *Spec) { s.Volumes = manyVolumes("w", 21) }), unit: unitWith(func(u *Unit) {
			u.VCDs = 2
			u.VMs = []Spec{{Name: "db", VCPUs: 1, MemoryBytes: GiB, Volumes: manyVolumes("d", 40)}}
		}), wantErr: []string{"63 volumes: a unit holds at most 62 volumes, VM volumes and VCDs together (2 VCDs and 40 volumes of other VMs are there already)"}},

		{name: "unknown network", spec: with(func(s *Spec) { s.NICs = append(s.NICs, NIC{Network: "biz9"}) }), unit: unit,
			wantErr: []string{`network 2: "biz9" is not a shared network of the unit`}},
		{name: "operator MAC", spec: with(func(s *Spec) { s.NICs[0].MAC = mac("00:16:3e:00:00:01") }), unit: unit},
		{name: "multicast MAC", spec: with(func(s *Spec) { s.NICs[0].MAC = mac("01:00:5e:00:00:01") }), unit: unit,
			wantErr: []string{"network 1: MAC 01:00:5e:00:00:01 is a multicast address"}},
		{name: "MAC used by another VM", spec: with(func(s *Spec) { s.NICs[0].MAC = mac("02:00:00:00:00:01") }), unit: unitWith(func(u *Unit) {
			u.VMs = []Spec{{Name: "db", VCPUs: 1, MemoryBytes: GiB, Volumes: boot("db-boot"), NICs: []NIC{{Network: "biz1", MAC: mac("02:00:00:00:00:01")}}}}
		}), wantErr: []string{"network 1: MAC 02:00:00:00:00:01 is already used in the unit"}},
		{name: "MAC used twice in the VM", spec: with(func(s *Spec) {
			s.NICs = []NIC{{Network: "biz1", MAC: mac("02:00:00:00:00:01")}, {Network: "biz2", MAC: mac("02:00:00:00:00:01")}}
		}), unit: unit, wantErr: []string{"network 2: MAC 02:00:00:00:00:01 is already used in the unit"}},

		{name: "bad name", spec: with(func(s *Spec) { s.Name = "my vm" }), unit: unit,
			wantErr: []string{`name "my vm": use letters, digits`}},
		{name: "empty name", spec: with(func(s *Spec) { s.Name = "" }), unit: unit, wantErr: []string{"a name is required"}},
		{name: "name taken", spec: good, unit: unitWith(func(u *Unit) {
			u.VMs = []Spec{{Name: "web1", VCPUs: 1, MemoryBytes: GiB, Volumes: boot("other")}}
		}), wantErr: []string{`a VM named "web1" already exists`}},
		{name: "every problem reported at once", spec: Spec{Name: "x", VCPUs: 12, MemoryBytes: 100 * MiB}, unit: unit,
			wantErr: []string{"12 vCPUs", "memory 100 MiB: a VM needs at least 256 MiB", "0 boot volumes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			warns, err := Validate(tt.spec, tt.unit)
			if len(warns) != len(tt.wantWarn) {
				t.Errorf("warnings %q, want %d like %q", warns, len(tt.wantWarn), tt.wantWarn)
			} else {
				for i, w := range tt.wantWarn {
					if !strings.Contains(warns[i], w) {
						t.Errorf("warning %d: %q, want it to contain %q", i, warns[i], w)
					}
				}
			}
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var re *ResourceError
			if !errors.As(err, &re) {
				t.Fatalf("Validate = %v, want a *ResourceError", err)
			}
			if len(re.Problems) != len(tt.wantErr) {
				t.Fatalf("problems %+v, want %d like %q", re.Problems, len(tt.wantErr), tt.wantErr)
			}
			for i, w := range tt.wantErr {
				if !strings.Contains(re.Problems[i].Message, w) {
					t.Errorf("problem %d: %q, want it to contain %q", i, re.Problems[i].Message, w)
				}
			}
		})
	}
}

func TestCheckVolumeChange(t *testing.T) {
	old := Spec{Name: "web1", Volumes: []Volume{{Name: "boot", Boot: true}, {Name: "data"}}}
	tests := []struct {
		name string
		next []Volume
		want string
	}{
		{"unchanged", old.Volumes, ""},
		{"data volume detached", []Volume{{Name: "boot", Boot: true}}, ""},
		{"volume added", append(slices.Clone(old.Volumes), Volume{Name: "logs"}), ""},
		{"boot flag moved, old boot volume kept", []Volume{{Name: "boot"}, {Name: "data", Boot: true}}, ""},
		{"boot volume detached", []Volume{{Name: "data"}}, `volume "boot" is the boot volume of VM "web1": it cannot be detached or deleted on its own; remove the VM to delete it`},
		{"all volumes detached", nil, `volume "boot" is the boot volume`},
	}
	for _, tt := range tests {
		err := CheckVolumeChange(old, Spec{Name: "web1", Volumes: tt.next})
		if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"web1", true},
		{"Web-1.prod_a", true},
		{"9lives", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{"-web", false},
		{".hidden", false},
		{"a,b", false},
		{"a b", false},
		{"a/b", false},
		{"a=b", false},
		{"é", false},
		{"a\n", false},
	}
	for _, tt := range tests {
		if err := CheckName(tt.name); (err == nil) != tt.ok {
			t.Errorf("CheckName(%q) = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}
