package network

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

// Rename renames link from to to. The kernel renames only links that are
// down, so an up link is taken down and brought back up. Renaming is a
// no-op when from is already called to, or when from is gone and to
// exists (a rename done before a restart).
func (m *Manager) Rename(ctx context.Context, from, to string) error {
	if err := validLinkName(to); err != nil {
		return fmt.Errorf("rename %s: %w", from, err)
	}
	l, err := m.link(ctx, from)
	if errors.Is(err, ErrLinkNotFound) && from != to {
		if _, errTo := m.link(ctx, to); errTo == nil {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("rename %s to %s: %w", from, to, err)
	}
	if from == to {
		return nil
	}
	if _, err := m.link(ctx, to); err == nil {
		return fmt.Errorf("rename %s to %s: a link named %s already exists", from, to, to)
	}

	wasUp := l.Flags&unix.IFF_UP != 0
	if wasUp {
		if err := m.setFlag(l.Index, unix.IFF_UP, false); err != nil {
			return fmt.Errorf("rename %s to %s: take link down: %w", from, to, err)
		}
	}
	err = m.conn.Link.Set(&rtnetlink.LinkMessage{
		Index:      l.Index,
		Attributes: &rtnetlink.LinkAttributes{Name: to},
	})
	if err != nil {
		err = fmt.Errorf("rename %s to %s: %w", from, to, err)
	}
	if wasUp {
		// Bring the link back even when the rename failed: a port left
		// down by a failed rename would look like a cable fault.
		if upErr := m.setFlag(l.Index, unix.IFF_UP, true); upErr != nil {
			err = errors.Join(err, fmt.Errorf("bring %s back up after rename: %w", to, upErr))
		}
	}
	if err != nil {
		return err
	}
	m.log.Info("renamed link", "from", from, "to", to, "index", l.Index)
	return nil
}

// validLinkName applies the kernel's rules for interface names
// (dev_valid_name) so a bad name fails with a clear message.
func validLinkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty link name")
	case len(name) >= unix.IFNAMSIZ:
		return fmt.Errorf("link name %q is longer than %d bytes", name, unix.IFNAMSIZ-1)
	case name == "." || name == "..":
		return fmt.Errorf("link name %q is reserved", name)
	case strings.ContainsFunc(name, func(r rune) bool { return r == '/' || r == ':' || unicode.IsSpace(r) }):
		return fmt.Errorf("link name %q contains '/', ':' or white space", name)
	}
	return nil
}

// SetUp brings link name administratively up.
func (m *Manager) SetUp(ctx context.Context, name string) error {
	l, err := m.link(ctx, name)
	if err != nil {
		return fmt.Errorf("bring link up: %w", err)
	}
	if l.Flags&unix.IFF_UP != 0 {
		return nil
	}
	if err := m.setFlag(l.Index, unix.IFF_UP, true); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	m.log.Info("link up", "link", name)
	return nil
}

func (m *Manager) setFlag(index uint32, flag uint32, on bool) error {
	var flags uint32
	if on {
		flags = flag
	}
	return m.conn.Link.Set(&rtnetlink.LinkMessage{Index: index, Flags: flags, Change: flag})
}

// LinkState reports whether link name is administratively up and whether
// it has carrier (always false while the link is down).
func (m *Manager) LinkState(ctx context.Context, name string) (up, carrier bool, err error) {
	l, err := m.link(ctx, name)
	if err != nil {
		return false, false, fmt.Errorf("link state: %w", err)
	}
	return l.Flags&unix.IFF_UP != 0, l.Flags&unix.IFF_LOWER_UP != 0, nil
}

// Enslave puts link name into bridge master and brings it up: the taps of
// VMs, which QEMU creates, join their shared network's bridge this way.
func (m *Manager) Enslave(ctx context.Context, name, master string) error {
	l, err := m.link(ctx, name)
	if err != nil {
		return fmt.Errorf("enslave: %w", err)
	}
	br, err := m.link(ctx, master)
	if err != nil {
		return fmt.Errorf("enslave %s: %w", name, err)
	}
	idx := br.Index
	if err := m.conn.Link.Set(&rtnetlink.LinkMessage{Index: l.Index, Attributes: &rtnetlink.LinkAttributes{Master: &idx}}); err != nil {
		return fmt.Errorf("enslave %s to %s: %w", name, master, err)
	}
	return m.SetUp(ctx, name)
}
