package lvm

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The testdata reports were captured from lvm 2.03.16 (Debian 12) on loop
// devices with device-mapper absent, hence lv_attr "-wi-XX----" (state
// unknown); *_missing.json after detaching one loop device. lvs_snapshot.json
// is written by hand in the same shape, since a snapshot cannot be created
// without device-mapper.

func TestParsePVs(t *testing.T) {
	tests := []struct {
		file string
		want []PV
	}{
		{"pvs.json", []PV{
			{Name: "/dev/loop0", VG: "dyad_sg1", Size: 205520896, Free: 0, UUID: "Nr16fT-2Na2-ST8W-EdRS-Jv9l-6vyI-Ct3ClN", Attr: "a--"},
			{Name: "/dev/loop1", VG: "dyad_sg1", Size: 205520896, Free: 0, UUID: "hd13RR-ZECX-pTbM-PXIQ-Wy4F-taB8-7BRzlA", Attr: "a--"},
			{Name: "/dev/loop2", VG: "dyad_sg2", Size: 62914560, Free: 62914560, UUID: "H5f3ye-uwDd-S1QK-4tK1-WPSO-ZNzo-KVj4kR", Attr: "a--"},
		}},
		{"pvs_missing.json", []PV{
			{Name: "/dev/loop0", VG: "dyad_sg1", Size: 205520896, Free: 0, UUID: "Nr16fT-2Na2-ST8W-EdRS-Jv9l-6vyI-Ct3ClN", Attr: "a--"},
			{Name: "/dev/loop2", VG: "", Size: 67108864, Free: 67108864, UUID: "H5f3ye-uwDd-S1QK-4tK1-WPSO-ZNzo-KVj4kR", Attr: "---"},
			{Name: "[unknown]", VG: "dyad_sg1", Size: 205520896, Free: 62914560, UUID: "hd13RR-ZECX-pTbM-PXIQ-Wy4F-taB8-7BRzlA", Attr: "a-m", Missing: true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got, err := ParsePVs(mustRead(t, filepath.Join("testdata", tc.file)))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseVGs(t *testing.T) {
	tests := []struct {
		file string
		want []VG
	}{
		{"vgs.json", []VG{
			{Name: "dyad_sg1", Size: 411041792, Free: 0, ExtentSize: 4194304, PVCount: 2, LVCount: 3,
				UUID: "EvDR5o-Sx0K-362C-0T7G-gqvi-4q6H-rD0PRy", Attr: "wz--n-", Tags: []string{"dyad", "sg1"}},
			{Name: "dyad_sg2", Size: 62914560, Free: 62914560, ExtentSize: 4194304, PVCount: 1, LVCount: 0,
				UUID: "Y1oFIK-McB2-F1eM-0pom-dffc-ssqq-MDiLy5", Attr: "wz--n-"},
		}},
		{"vgs_missing.json", []VG{
			{Name: "dyad_sg1", Size: 411041792, Free: 62914560, ExtentSize: 4194304, PVCount: 2, LVCount: 2, MissingPVs: 1,
				UUID: "EvDR5o-Sx0K-362C-0T7G-gqvi-4q6H-rD0PRy", Attr: "wz-pn-", Tags: []string{"dyad", "sg1"}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got, err := ParseVGs(mustRead(t, filepath.Join("testdata", tc.file)))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseLVs(t *testing.T) {
	created := time.Date(2026, 11, 22, 7, 35, 47, 0, time.UTC)
	created2 := time.Date(2026, 11, 22, 7, 36, 57, 0, time.UTC)
	cet := time.FixedZone("", 3600)
	tests := []struct {
		file string
		want []LV
	}{
		// vol5 has two segments (two rows); vol7 is striped (one row, two devices).
		{"lvs.json", []LV{
			{Name: "vol3", VG: "dyad_sg1", Size: 159383552, Attr: "-wi-XX----", Devices: []string{"/dev/loop0"},
				Created: created, DataPercent: -1, Tags: []string{"dyad"}, UUID: "ph6c9Q-ZVUt-KoC1-IjuO-LhVN-I2QI-04GWrb"},
			{Name: "vol5", VG: "dyad_sg1", Size: 209715200, Attr: "-wi-XX----", Devices: []string{"/dev/loop1", "/dev/loop0"},
				Created: created2, DataPercent: -1, UUID: "AdLiaC-nwkJ-V2E7-TwtE-f0pE-gHkI-Dua173"},
			{Name: "vol7", VG: "dyad_sg1", Size: 41943040, Attr: "-wi-XX----", Devices: []string{"/dev/loop0", "/dev/loop1"},
				Created: created2, DataPercent: -1, Tags: []string{"dyad", "vm_web"}, UUID: "2QuIVj-6qnd-3ntV-nlen-lJMy-ZwpY-8TrQt5"},
		}},
		{"lvs_missing.json", []LV{
			{Name: "vol3", VG: "dyad_sg1", Size: 159383552, Attr: "-wi-XX----", Devices: []string{"/dev/loop0"},
				Created: created, DataPercent: -1, Tags: []string{"dyad"}, UUID: "ph6c9Q-ZVUt-KoC1-IjuO-LhVN-I2QI-04GWrb"},
			{Name: "vol5", VG: "dyad_sg1", Size: 188743680, Attr: "-wi-XX--p-", Devices: []string{"/dev/loop0", "[unknown]"},
				Created: created, DataPercent: -1, UUID: "wHNShr-WbNZ-52LA-IoU9-TJY6-bF2o-f4KDri"},
		}},
		{"lvs_empty.json", []LV{}},
		{"lvs_snapshot.json", []LV{
			{Name: "vol3", VG: "dyad_sg1", Size: 1 << 30, Attr: "owi-aos---", Devices: []string{"/dev/vdb"},
				Created: time.Date(2025, 3, 14, 9, 26, 53, 0, cet), DataPercent: -1, Tags: []string{"dyad"},
				UUID: "0Zq1rV-Jc7E-2mpb-s3Qy-Xd1L-hV0w-9k2TfA"},
			{Name: "vol3_sb1741940813", VG: "dyad_sg1", Size: 1 << 30, Attr: "swi-a-s---", Origin: "vol3",
				Devices: []string{"/dev/vdc"}, Created: time.Date(2025, 3, 14, 9, 26, 53, 0, cet), DataPercent: 12.5,
				UUID: "Hc4m1P-8KqN-y3Vd-LQ0e-aW7R-tZ2u-Ff9oXb"},
			{Name: "vol4", VG: "dyad_sg1", Size: 512 << 20, Attr: "owi---s---", Devices: []string{"/dev/vdb"},
				Created: time.Date(2025, 3, 14, 10, 2, 11, 0, cet), DataPercent: -1, Tags: []string{"dyad"},
				UUID: "bN2e8W-Qm0r-4Yx1-Tz7K-uP3c-Ja6L-Rd5gMs"},
			{Name: "vol4_sb1741943000", VG: "dyad_sg1", Size: 512 << 20, Attr: "swi-I-s---", Origin: "vol4",
				Devices: []string{"/dev/vdc"}, Created: time.Date(2025, 3, 14, 10, 3, 20, 0, cet), DataPercent: 100,
				UUID: "kE9s0D-3FvB-xW1q-Lm8N-gR4t-Yp2H-Zc7aUe"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got, err := ParseLVs(mustRead(t, filepath.Join("testdata", tc.file)))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d LVs, want %d: %+v", len(got), len(tc.want), got)
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if !g.Created.Equal(w.Created) {
					t.Errorf("%s: Created %v, want %v", w.Name, g.Created, w.Created)
				}
				g.Created, w.Created = time.Time{}, time.Time{}
				if !reflect.DeepEqual(g, w) {
					t.Errorf("got  %+v\nwant %+v", g, w)
				}
			}
		})
	}
}

func TestLVAttr(t *testing.T) {
	tests := []struct {
		attr                               string
		active, partial, snapshot, invalid bool
	}{
		{"-wi-a-----", true, false, false, false},
		{"-wi-------", false, false, false, false},
		{"-wi-XX----", false, false, false, false},
		{"-wi-a---p-", true, true, false, false},
		{"owi-aos---", true, false, false, false},
		{"swi-a-s---", true, false, true, false},
		{"swi-I-s---", false, false, true, true},
		{"Swi-a-s---", true, false, true, false},
		{"", false, false, false, false},
		{"s", false, false, true, false},
	}
	for _, tc := range tests {
		l := LV{Attr: tc.attr}
		if l.Active() != tc.active || l.Partial() != tc.partial || l.IsSnapshot() != tc.snapshot || l.Invalid() != tc.invalid {
			t.Errorf("%q: active %v partial %v snapshot %v invalid %v", tc.attr, l.Active(), l.Partial(), l.IsSnapshot(), l.Invalid())
		}
	}
}

// TestParseNoise: lines LVM prints on stdout before the report, and
// anything after it, are skipped.
func TestParseNoise(t *testing.T) {
	in := "  WARNING: something {odd}\n" + string(mustRead(t, "testdata/vgs.json")) + "  trailing message\n"
	vgs, err := ParseVGs([]byte(in))
	if err != nil || len(vgs) != 2 {
		t.Fatalf("ParseVGs = %+v, %v", vgs, err)
	}
	// A report on one line, as from a profile with compact output.
	pvs, err := ParsePVs([]byte(`{"report":[{"pv":[{"pv_name":"/dev/vdb","vg_name":"","pv_size":"1","pv_free":"1","pv_uuid":"u","pv_missing":"","pv_attr":"---"}]}]}`))
	if err != nil || len(pvs) != 1 || pvs[0].Name != "/dev/vdb" {
		t.Fatalf("ParsePVs = %+v, %v", pvs, err)
	}
	// Several sections, as with report/command log output: find ours.
	lvs, err := ParseLVs([]byte(`{"report":[{"vg":[]},{"lv":[]}],"log":[{"log_seq_num":"1"}]}`))
	if err != nil || len(lvs) != 0 {
		t.Fatalf("ParseLVs = %+v, %v", lvs, err)
	}
}

const pvRow = `"pv_name":"/dev/vdb","vg_name":"dyad_sg1","pv_size":"%s","pv_free":"0","pv_uuid":"u","pv_missing":"","pv_attr":"a--"`

func TestParseErrors(t *testing.T) {
	pv := func(size string) string {
		return `{"report":[{"pv":[{` + strings.Replace(pvRow, "%s", size, 1) + `}]}]}`
	}
	vg := func(kv string) string {
		return `{"report":[{"vg":[{"vg_name":"v","vg_size":"1","vg_free":"1","vg_extent_size":"4194304",` +
			`"pv_count":"1","lv_count":"0","vg_uuid":"u","vg_tags":"","vg_missing_pv_count":"0","vg_attr":"wz--n-"` + kv + `}]}]}`
	}
	lv := func(field, value string) string {
		r := map[string]string{"lv_name": "vol1", "vg_name": "v", "lv_size": "4194304", "lv_attr": "-wi-a-----",
			"origin": "", "devices": "/dev/vdb(0)", "lv_time": "2025-03-14 09:26:53 +0100", "snap_percent": "",
			"data_percent": "", "lv_tags": "", "lv_uuid": "u"}
		var b strings.Builder
		b.WriteString(`{"report":[{"lv":[{`)
		first := true
		for _, k := range lvFields {
			v, ok := r[k]
			if k == field {
				if value == "<absent>" {
					continue
				}
				v, ok = value, true
			}
			if !ok {
				continue
			}
			if !first {
				b.WriteString(",")
			}
			first = false
			b.WriteString(`"` + k + `":"` + v + `"`)
		}
		b.WriteString(`}]}]}`)
		return b.String()
	}
	// The helpers build valid reports when nothing is changed.
	if _, err := ParsePVs([]byte(pv("512"))); err != nil {
		t.Fatalf("pv helper: %v", err)
	}
	if _, err := ParseVGs([]byte(vg(""))); err != nil {
		t.Fatalf("vg helper: %v", err)
	}
	if _, err := ParseLVs([]byte(lv("", ""))); err != nil {
		t.Fatalf("lv helper: %v", err)
	}
	tests := []struct {
		name  string
		parse func([]byte) error
		in    string
		want  string // in the error
	}{
		{"empty", parsePVs, "", "no JSON"},
		{"blank", parsePVs, "  \n\n", "no JSON"},
		{"text", parsePVs, "  No volume groups found\n", "no JSON"},
		{"truncated", parsePVs, `{"report":[{"pv":[{"pv_name":"/dev/vdb"`, "unexpected EOF"},
		{"no report key", parsePVs, `{}`, `no "pv" section`},
		{"empty report", parsePVs, `{"report":[]}`, `no "pv" section`},
		{"null report", parsePVs, `{"report":null}`, `no "pv" section`},
		{"wrong section", parsePVs, `{"report":[{"vg":[]}]}`, `no "pv" section`},
		{"report not array", parsePVs, `{"report":{"pv":[]}}`, "cannot unmarshal"},
		{"rows not array", parsePVs, `{"report":[{"pv":{}}]}`, "cannot unmarshal"},
		{"null row", parsePVs, `{"report":[{"pv":[null]}]}`, "null"},
		{"number value", parsePVs, `{"report":[{"pv":[{"pv_size":512}]}]}`, "cannot unmarshal"},
		{"missing field", parsePVs, `{"report":[{"pv":[{"pv_name":"/dev/vdb"}]}]}`, "missing"},
		{"negative size", parsePVs, pv("-512"), "non-negative"},
		{"plus size", parsePVs, pv("+512"), "non-negative"},
		{"empty size", parsePVs, pv(""), "non-negative"},
		{"fraction size", parsePVs, pv("512.5"), "non-negative"},
		{"suffix size", parsePVs, pv("512B"), "non-negative"},
		{"overflow size", parsePVs, pv("9223372036854775808"), "non-negative"},
		{"empty pv name", parsePVs, `{"report":[{"pv":[{` + strings.Replace(strings.Replace(pvRow, "%s", "1", 1), `"/dev/vdb"`, `""`, 1) + `}]}]}`, "empty pv_name"},
		{"vg count overflow", parseVGs, vg(`,"pv_count":"99999999999999999999"`), "pv_count"},
		{"vg empty name", parseVGs, strings.Replace(vg(""), `"vg_name":"v"`, `"vg_name":""`, 1), "empty vg_name"},
		{"vg missing tags", parseVGs, strings.Replace(vg(""), `"vg_tags":"",`, "", 1), "vg_tags"},
		{"lv missing devices", parseLVs, lv("devices", "<absent>"), `"devices": missing`},
		{"lv bad devices", parseLVs, lv("devices", "/dev/vdb"), "device(extent)"},
		{"lv bad extent", parseLVs, lv("devices", "/dev/vdb(x)"), "device(extent)"},
		{"lv bare extent", parseLVs, lv("devices", "(0)"), "device(extent)"},
		{"lv bad time", parseLVs, lv("lv_time", "yesterday"), "not a time"},
		{"lv unix time", parseLVs, lv("lv_time", "1741940813"), "not a time"},
		{"lv bad percent", parseLVs, lv("snap_percent", "lots"), "not a percentage"},
		{"lv negative percent", parseLVs, lv("data_percent", "-1.00"), "not a percentage"},
		{"lv NaN percent", parseLVs, lv("snap_percent", "NaN"), "not a percentage"},
		{"lv big percent", parseLVs, lv("snap_percent", "100.01"), "not a percentage"},
		{"lv negative size", parseLVs, lv("lv_size", "-4194304"), "non-negative"},
		{"lv empty name", parseLVs, lv("lv_name", ""), "empty lv_name"},
		{"lv missing origin", parseLVs, lv("origin", "<absent>"), `"origin": missing`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.parse([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func parsePVs(b []byte) error { _, err := ParsePVs(b); return err }
func parseVGs(b []byte) error { _, err := ParseVGs(b); return err }
func parseLVs(b []byte) error { _, err := ParseLVs(b); return err }

// seeds are the captured reports plus the error inputs' shapes.
func seeds(f *testing.F) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{"", "{}", `{"report":[]}`, `{"report":[{"pv":[null]}]}`,
		`{"report":[{"lv":[{"devices":"(0),/dev/x()"}]}]}`, "x\n {\"report\":[{\"vg\":[{}]}]}"} {
		f.Add([]byte(s))
	}
}

func FuzzParsePVs(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		pvs, err := ParsePVs(b)
		if err != nil {
			return
		}
		for _, p := range pvs {
			if p.Name == "" || p.Size < 0 || p.Free < 0 {
				t.Errorf("accepted %+v", p)
			}
		}
	})
}

func FuzzParseVGs(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		vgs, err := ParseVGs(b)
		if err != nil {
			return
		}
		for _, v := range vgs {
			if v.Name == "" || v.Size < 0 || v.Free < 0 || v.PVCount < 0 || v.MissingPVs < 0 {
				t.Errorf("accepted %+v", v)
			}
		}
	})
}

func FuzzParseLVs(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		lvs, err := ParseLVs(b)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, l := range lvs {
			if l.Name == "" || l.Size < 0 || l.DataPercent < -1 || l.DataPercent > 100 {
				t.Errorf("accepted %+v", l)
			}
			if seen[l.VG+"/"+l.Name] {
				t.Errorf("%s/%s twice", l.VG, l.Name)
			}
			seen[l.VG+"/"+l.Name] = true
			_, _, _, _ = l.Active(), l.Partial(), l.IsSnapshot(), l.Invalid()
		}
	})
}
