// Command tinyinit is the /init of the guest the harness self-test boots
// instead of a Dyad image: it loads the virtio modules packed next to it,
// puts ibiz0 (10.99.0.N/24, and the management IP 10.99.0.10 on PM1) and
// priv0 (192.168.77.N/24) up, answers HTTP on port 80 (with a Dyad-like
// /api/v1/health), puts every other NIC up without an address, powers off
// on the ACPI power button and serves the test channel protocol. Run as a
// child (not PID 1) it is the tool that test channel exec requests call.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

func main() {
	if os.Getpid() != 1 {
		os.Exit(tool(os.Args[1:]))
	}
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "TINYINIT-FAILED: %v\n", err)
	}
	select {}
}

// tool: "echo WORDS..." prints them; "get URL" prints the body; "nics"
// lists the NICs; "send MAC ETHERTYPE PAYLOAD" broadcasts a frame.
func tool(args []string) int {
	switch {
	case len(args) > 0 && args[0] == "echo":
		fmt.Println(strings.Join(args[1:], " "))
		return 0
	case len(args) == 2 && args[0] == "get":
		c := http.Client{Timeout: 3 * time.Second}
		resp, err := c.Get(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer resp.Body.Close()
		io.Copy(os.Stdout, resp.Body)
		return 0
	case len(args) == 1 && args[0] == "nics":
		if err := nics(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case len(args) == 4 && args[0] == "send":
		if err := send(args[1], args[2], args[3]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "usage: echo WORDS | get URL | nics | send MAC ETHERTYPE PAYLOAD (got %q)\n", args)
	return 2
}

func run() error {
	for _, m := range []struct{ fs, dir string }{{"devtmpfs", "/dev"}, {"proc", "/proc"}, {"sysfs", "/sys"}} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.fs, m.dir, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
	}
	console, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	os.Stdout, os.Stderr = console, console
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	fmt.Printf("TINYINIT-BOOTED cmdline: %s", cmdline)

	order, err := os.ReadFile("/modules.order")
	if err != nil {
		return err
	}
	for _, m := range strings.Fields(string(order)) {
		if err := loadModule(m); err != nil {
			return err
		}
	}
	var node string
	for _, f := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(f, "dyad.node="); ok {
			node = v
		}
	}
	if err := network(node); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "tinyinit pm%s\n", node)
	})
	mux.HandleFunc("/api/v1/health", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"status":"ok","pm":%s,"role":"tinyinit"}`, node)
	})
	go http.ListenAndServe(":80", mux)
	if err := powerButton(); err != nil {
		return err
	}
	port, err := testPort()
	if err != nil {
		return err
	}
	fmt.Printf("TINYINIT-READY pm%s test channel %s\n", node, port)
	return serve(port)
}

// powerButton powers the machine off when any input device reports
// KEY_POWER, as the ACPI power button does.
func powerButton() error {
	devs, err := filepath.Glob("/dev/input/event*")
	if err != nil || len(devs) == 0 {
		return fmt.Errorf("no input devices for the power button: %v", err)
	}
	for _, d := range devs {
		f, err := os.Open(d)
		if err != nil {
			return err
		}
		go func() {
			const evKey, keyPower = 1, 116
			ev := make([]byte, 24) // struct input_event on amd64
			for {
				if _, err := io.ReadFull(f, ev); err != nil {
					return
				}
				typ, code, value := binary.NativeEndian.Uint16(ev[16:]), binary.NativeEndian.Uint16(ev[18:]), int32(binary.NativeEndian.Uint32(ev[20:]))
				if typ == evKey && code == keyPower && value == 1 {
					fmt.Println("TINYINIT power button: powering off")
					unix.Sync()
					unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
				}
			}
		}()
	}
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load %s: %w", path, err)
	}
	return nil
}

// network configures the NICs found by the MACs the harness assigns.
func network(node string) error {
	conn, err := rtnetlink.Dial(nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	addrs := map[string][]string{
		"52:54:00:d7:0" + node + ":01": {"192.168.77." + node},
		"52:54:00:d7:0" + node + ":02": {"10.99.0." + node},
	}
	if node == "1" {
		// PM1 plays primary: it holds the unit's management IP.
		addrs["52:54:00:d7:01:02"] = append(addrs["52:54:00:d7:01:02"], "10.99.0.10")
	}
	deadline := time.Now().Add(10 * time.Second)
	for mac, ips := range addrs {
		var ifi *net.Interface
		for ifi == nil {
			ifs, err := net.Interfaces()
			if err != nil {
				return err
			}
			for _, i := range ifs {
				if i.HardwareAddr.String() == mac {
					ifi = &i
				}
			}
			if ifi == nil {
				if time.Now().After(deadline) {
					return fmt.Errorf("no NIC with MAC %s", mac)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		for _, addr := range ips {
			ip := net.ParseIP(addr).To4()
			if err := conn.Address.New(&rtnetlink.AddressMessage{
				Family: unix.AF_INET, PrefixLength: 24, Index: uint32(ifi.Index),
				Attributes: &rtnetlink.AddressAttributes{Address: ip, Local: ip},
			}); err != nil {
				return fmt.Errorf("address %s on %s: %w", addr, ifi.Name, err)
			}
		}
		if err := conn.Link.Set(&rtnetlink.LinkMessage{
			Family: unix.AF_UNSPEC, Index: uint32(ifi.Index), Flags: unix.IFF_UP, Change: unix.IFF_UP,
		}); err != nil {
			return fmt.Errorf("up %s: %w", ifi.Name, err)
		}
	}
	// The NICs of other layouts (bond members, sync, business links) go up
	// without addresses, so that their carrier shows and frames can leave.
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, ifi := range ifs {
		if ifi.Flags&net.FlagLoopback != 0 || ifi.Flags&net.FlagUp != 0 {
			continue
		}
		if err := conn.Link.Set(&rtnetlink.LinkMessage{
			Family: unix.AF_UNSPEC, Index: uint32(ifi.Index), Flags: unix.IFF_UP, Change: unix.IFF_UP,
		}); err != nil {
			return fmt.Errorf("up %s: %w", ifi.Name, err)
		}
	}
	return nil
}

// nics prints "PCI-ADDRESS NAME MAC CARRIER" for every NIC, in PCI order;
// CARRIER is "-" while the link is down administratively.
func nics() error {
	devs, err := filepath.Glob("/sys/class/net/*/device")
	if err != nil {
		return err
	}
	var lines []string
	for _, d := range devs {
		// .../0000:00:03.0/virtio0: the PCI function holds the virtio device.
		real, err := filepath.EvalSymlinks(d)
		if err != nil {
			return err
		}
		dir := filepath.Dir(d)
		mac, err := os.ReadFile(filepath.Join(dir, "address"))
		if err != nil {
			return err
		}
		carrier := "-"
		if b, err := os.ReadFile(filepath.Join(dir, "carrier")); err == nil {
			carrier = strings.TrimSpace(string(b))
		}
		lines = append(lines, fmt.Sprintf("%s %s %s %s", filepath.Base(filepath.Dir(real)), filepath.Base(dir), strings.TrimSpace(string(mac)), carrier))
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	return nil
}

// send broadcasts one Ethernet frame of the given type (hex) carrying
// payload from the NIC with the given MAC.
func send(mac, etherType, payload string) error {
	et, err := strconv.ParseUint(etherType, 16, 16)
	if err != nil {
		return fmt.Errorf("ethertype %q: %w", etherType, err)
	}
	ifi, err := nicByMAC(mac)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	broadcast := [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	frame := append(append(append(broadcast[:6:6], ifi.HardwareAddr...), byte(et>>8), byte(et)), payload...)
	if len(frame) < 60 {
		frame = append(frame, make([]byte, 60-len(frame))...)
	}
	return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: broadcast})
}

func nicByMAC(mac string) (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, i := range ifs {
		if i.HardwareAddr.String() == mac {
			return &i, nil
		}
	}
	return nil, fmt.Errorf("no NIC with MAC %s", mac)
}

// testPort finds the virtio-serial port named dyad.test.
func testPort() (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, n := range names {
			b, _ := os.ReadFile(n)
			if strings.TrimSpace(string(b)) == "dyad.test" {
				return "/dev/" + filepath.Base(filepath.Dir(n)), nil
			}
		}
		if time.Now().After(deadline) {
			return "", errors.New("no virtio port named dyad.test")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type request struct {
	ID        uint64   `json:"id"`
	Op        string   `json:"op"`
	Argv      []string `json:"argv"`
	TimeoutMS int64    `json:"timeout_ms"`
	Path      string   `json:"path"`
}

type response struct {
	ID     uint64 `json:"id"`
	Exit   int    `json:"exit,omitempty"`
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	Data   []byte `json:"data,omitempty"`
	Error  string `json:"error,omitempty"`
}

func serve(port string) error {
	f, err := os.OpenFile(port, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	// A read returns EOF while no host is connected to the port: wait for
	// one, since the harness connects and disconnects as it pleases.
	r := bufio.NewReader(f)
	enc := json.NewEncoder(f)
	var line []byte
	for {
		chunk, err := r.ReadBytes('\n')
		line = append(line, chunk...)
		if errors.Is(err, io.EOF) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			return err
		}
		var req request
		err = json.Unmarshal(line, &req)
		line = line[:0]
		if err != nil {
			continue
		}
		resp := response{ID: req.ID}
		switch req.Op {
		case "ping":
		case "read":
			resp.Data, err = os.ReadFile(req.Path)
			if err != nil {
				resp.Error = err.Error()
			}
		case "exec":
			if len(req.Argv) == 0 {
				resp.Error = "empty argv"
				break
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(req.TimeoutMS)*time.Millisecond)
			var stdout, stderr strings.Builder
			cmd := exec.CommandContext(ctx, req.Argv[0], req.Argv[1:]...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			cancel()
			var exitErr *exec.ExitError
			switch {
			case errors.As(err, &exitErr):
				resp.Exit = exitErr.ExitCode()
			case err != nil:
				resp.Error = err.Error()
			}
			resp.Stdout, resp.Stderr = []byte(stdout.String()), []byte(stderr.String())
		default:
			resp.Error = "unknown op " + req.Op
		}
		if err := enc.Encode(resp); err != nil {
			fmt.Printf("tinyinit: test channel write: %v\n", err)
		}
	}
}
