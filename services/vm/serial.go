package vm

import (
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
)

// Serial log bounds: the log is cut back to keepLog bytes once it passes
// maxLog, so a chatty guest never fills the data partition.
const (
	maxLog  = 1 << 20
	keepLog = 512 << 10
)

// serialMux is the agent's end of a VM's serial console. QEMU's socket
// takes one client, so the agent holds it for as long as the VM runs: it
// appends everything the guest prints to the VM's serial log and fans it
// out to the attached consoles, and passes their keystrokes to the guest.
type serialMux struct {
	conn net.Conn
	log  *slog.Logger

	mu      sync.Mutex
	file    *os.File
	size    int64
	path    string
	clients map[*serialClient]struct{}
	closed  bool
}

type serialClient struct {
	out chan []byte
	pc  net.Conn // the mux's end of the pipe
}

func openSerialMux(sock, logPath string, log *slog.Logger) (*serialMux, error) {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		conn.Close()
		return nil, err
	}
	st, _ := f.Stat()
	m := &serialMux{conn: conn, log: log, file: f, path: logPath, clients: map[*serialClient]struct{}{}}
	if st != nil {
		m.size = st.Size()
	}
	go m.read()
	return m, nil
}

func (m *serialMux) read() {
	buf := make([]byte, 4096)
	for {
		k, err := m.conn.Read(buf)
		if k > 0 {
			b := append([]byte(nil), buf[:k]...)
			m.mu.Lock()
			m.append(b)
			for c := range m.clients {
				select {
				case c.out <- b:
				default:
					// A console that does not keep up loses output rather
					// than stalling the guest's serial port.
				}
			}
			m.mu.Unlock()
		}
		if err != nil {
			m.Close()
			return
		}
	}
}

// append writes b to the log; m.mu is held.
func (m *serialMux) append(b []byte) {
	if m.file == nil {
		return
	}
	if m.size+int64(len(b)) > maxLog {
		m.trim()
	}
	k, err := m.file.Write(b)
	m.size += int64(k)
	if err != nil {
		m.log.Warn("serial log", "err", err)
	}
}

// trim keeps the newest keepLog bytes of the log.
func (m *serialMux) trim() {
	old, err := os.ReadFile(m.path)
	if err != nil {
		return
	}
	if len(old) > keepLog {
		old = old[len(old)-keepLog:]
	}
	tmp := m.path + ".tmp"
	if err := os.WriteFile(tmp, old, 0o600); err != nil {
		return
	}
	if err := os.Rename(tmp, m.path); err != nil {
		return
	}
	m.file.Close()
	f, err := os.OpenFile(m.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		m.file = nil
		return
	}
	m.file, m.size = f, int64(len(old))
}

// Attach returns a console connection: what the guest prints from now on
// can be read from it, and what is written to it reaches the guest.
func (m *serialMux) Attach() net.Conn {
	mine, theirs := net.Pipe()
	c := &serialClient{out: make(chan []byte, 256), pc: mine}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		mine.Close()
		return theirs
	}
	m.clients[c] = struct{}{}
	m.mu.Unlock()
	go func() {
		for b := range c.out {
			if _, err := mine.Write(b); err != nil {
				break
			}
		}
		mine.Close()
	}()
	go func() {
		io.Copy(m.conn, mine)
		m.mu.Lock()
		if _, ok := m.clients[c]; ok {
			delete(m.clients, c)
			close(c.out)
		}
		m.mu.Unlock()
		mine.Close()
	}()
	return theirs
}

// Close ends the mux and every attached console.
func (m *serialMux) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	m.conn.Close()
	for c := range m.clients {
		close(c.out)
		delete(m.clients, c)
	}
	if m.file != nil {
		m.file.Close()
		m.file = nil
	}
}
