package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/term"

	"github.com/dyad-ha/dyad/services/apiclient"
)

// escapeKey ends a console session: Ctrl-], as telnet and virsh console
// have it. Every other byte, Ctrl-C included, goes to the guest.
const escapeKey = 0x1d

// errEscape is how the keyboard side of a session reports Ctrl-].
var errEscape = errors.New("escape key")

// runVMConsole attaches the serial console of the VM args names to the
// terminal: the guest's output goes to stdout, the keys typed go to the
// guest until Ctrl-]. A terminal stdin is put in raw mode for the session
// (keys go through one by one, unechoed) and restored after. A stdin that
// is not a terminal (a pipe) is sent as it is; its end ends the session.
func runVMConsole(ctx context.Context, c *apiclient.Client, args []string, stdin io.Reader, stdout io.Writer) error {
	ref, err := oneVM(subFlags("vm console"), args)
	if err != nil {
		return err
	}
	v, err := findVM(ctx, c, ref)
	if err != nil {
		return err
	}
	conn, err := c.DialConsole(ctx, v.ID, "serial")
	if err != nil {
		return explainRefusal(err, v)
	}
	defer conn.Close()

	if fd, ok := terminalFd(stdin); ok {
		old, err := term.MakeRaw(fd)
		if err != nil {
			return fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		defer term.Restore(fd, old)
	}
	// Raw mode does not turn "\n" into "\r\n" on output: these lines
	// carry their own.
	fmt.Fprintf(stdout, "Connected to the serial console of VM %s (id %d). Ctrl-] quits.\r\n", v.Name, v.ID)
	end, err := attachConsole(ctx, conn, stdin, stdout)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\r\n%s\r\n", end)
	return nil
}

// terminalFd returns the file descriptor of r when r is a terminal.
func terminalFd(r io.Reader) (int, bool) {
	f, ok := r.(interface{ Fd() uintptr })
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}

// attachConsole relays until the operator quits, stdin ends, the unit
// closes the console or ctx ends, and says which. conn is left to the
// caller to close; that also ends the copy to stdout.
func attachConsole(ctx context.Context, conn net.Conn, stdin io.Reader, stdout io.Writer) (string, error) {
	fromVM := make(chan error, 1)
	go func() {
		_, err := io.Copy(stdout, conn)
		fromVM <- err
	}()
	// This goroutine may stay blocked reading stdin after the session:
	// dyadctl exits right after it.
	fromKeys := make(chan error, 1)
	go func() { fromKeys <- copyKeys(conn, stdin) }()

	select {
	case err := <-fromVM:
		if err != nil {
			return "", fmt.Errorf("console: %w", err)
		}
		return "The unit closed the console: the VM stopped, restarted or moved.", nil
	case err := <-fromKeys:
		switch {
		case errors.Is(err, errEscape):
			return "Console detached; the VM keeps running.", nil
		case err == nil:
			return "End of input; console detached.", nil
		}
		return "", fmt.Errorf("console: %w", err)
	case <-ctx.Done():
		return "Interrupted; console detached.", nil
	}
}

// copyKeys sends what stdin reads to the guest up to the escape key; it
// returns errEscape at the escape key and nil at the end of stdin.
func copyKeys(conn io.Writer, stdin io.Reader) error {
	buf := make([]byte, 4096)
	for {
		n, err := stdin.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			i := bytes.IndexByte(chunk, escapeKey)
			if i >= 0 {
				chunk = chunk[:i]
			}
			if len(chunk) > 0 {
				if _, werr := conn.Write(chunk); werr != nil {
					return fmt.Errorf("sending to the guest: %w", werr)
				}
			}
			if i >= 0 {
				return errEscape
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the keyboard: %w", err)
		}
	}
}
