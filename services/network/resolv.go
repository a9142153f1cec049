package network

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// resolvHeader starts every resolv.conf the reconciler writes; it also
// tells a file it wrote from one an operator or another tool wrote.
const resolvHeader = "# Written by dyad from the unit's network configuration; edits are overwritten.\n"

// resolvConf renders the resolver configuration for name servers dns and
// search domains search.
func resolvConf(dns []netip.Addr, search []string) []byte {
	var b bytes.Buffer
	b.WriteString(resolvHeader)
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	for _, s := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", s.Unmap())
	}
	return b.Bytes()
}

// syncResolvConf writes the resolver configuration when its content
// changes. Without name servers or search domains the configuration does
// not manage name resolution: a file someone else wrote is left alone,
// and one the reconciler wrote is emptied of its servers.
func (m *Manager) syncResolvConf(dns []netip.Addr, search []string) (bool, error) {
	want := resolvConf(dns, search)
	cur, err := os.ReadFile(m.resolvConf)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("read %s: %w", m.resolvConf, err)
	}
	if bytes.Equal(cur, want) {
		return false, nil
	}
	if len(dns) == 0 && len(search) == 0 && !bytes.HasPrefix(cur, []byte(resolvHeader)) {
		return false, nil
	}
	if err := writeFileAtomic(m.resolvConf, want, 0o644); err != nil {
		return false, err
	}
	return true, nil
}

// writeFileAtomic replaces path with data so that readers, and the file
// after a crash, see either the old or the new content, never a part.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
