// Package resolv is the daemon's DNS part: it writes the resolv.conf
// that a local resolver (dnsmasq's resolv-file=) reads, listing the DNS
// servers of the links that are up (those of dns: auto as lb/dnslease
// read them).
package resolv

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"flowpin/lb/config"
	"flowpin/lb/plan"
)

// DefaultDir holds the file the daemon writes, FileName.
const DefaultDir = "/run/flowpin"

// FileName is the file a local resolver is pointed at.
const FileName = "resolv.conf"

// Servers lists the servers of the links up, each once: the links of the
// policy unmatched flows take (default_policy, or default) tier by tier,
// then any other link, in config order; each link's servers in the order
// given (auto: the lease's servers, by link name). up says whether link
// i's family (IPv6 with v6) is up.
func Servers(c *config.Config, auto map[string][]netip.Addr, up func(link int, v6 bool) bool) []netip.Addr {
	var order []int
	for _, tier := range c.Policies[c.Unmatched].Tiers {
		for _, i := range tier {
			if !slices.Contains(order, i) {
				order = append(order, i)
			}
		}
	}
	for i := range c.Links {
		if !slices.Contains(order, i) {
			order = append(order, i)
		}
	}
	var out []netip.Addr
	for _, i := range order {
		for _, a := range plan.LinkResolvers(c, i, auto) {
			if !slices.Contains(out, a) && up(i, a.Is6()) {
				out = append(out, a)
			}
		}
	}
	return out
}

// Pick is what the file lists: the servers of the links in the route
// (inRoute), or when those have none (every link out by the operator,
// or only links without servers left) every link's, as Servers orders
// them. A resolv file without servers is worse than one whose servers
// are out of reach: glibc's resolver then asks 127.0.0.1, itself for a
// local dnsmasq, and the first link back answers sooner from a list.
func Pick(c *config.Config, auto map[string][]netip.Addr, inRoute func(link int, v6 bool) bool) []netip.Addr {
	if s := Servers(c, auto, inRoute); len(s) > 0 {
		return s
	}
	return Servers(c, auto, func(int, bool) bool { return true })
}

// Render is the file's text for servers.
func Render(servers []netip.Addr) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by flowpin: the DNS servers of the links that are up, in the\n")
	b.WriteString("# default policy's order, rewritten on every change. Point a local resolver\n")
	b.WriteString("# at it (dnsmasq: resolv-file=; see flowpin's README); do not edit it.\n")
	if len(servers) == 0 {
		b.WriteString("# No link has DNS servers yet (dns: auto without a lease).\n")
	}
	for _, a := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	return b.Bytes()
}

// Writer writes Dir/resolv.conf when what it would hold changed (and the
// first time), atomically: readers see the old file or the new one.
type Writer struct {
	Dir  string
	last []byte
	// listed are the servers the file holds since the last write that
	// succeeded.
	listed []netip.Addr
	// mtime is the last file's modification time.
	mtime time.Time
}

// Write makes the file list servers. It says whether it wrote.
func (w *Writer) Write(servers []netip.Addr) (bool, error) {
	data := Render(servers)
	if w.last != nil && bytes.Equal(data, w.last) {
		return false, nil
	}
	// dnsmasq notices a new file by its mtime, in whole seconds: a
	// second change within the second of the first (a link down and
	// back) would go unread. Each file is given a second of its own.
	path := filepath.Join(w.Dir, FileName)
	if w.mtime.IsZero() {
		// The first write of this process goes on from the file a
		// daemon before it wrote: that one's mtime may be ahead of the
		// clock (below), and a restart that wrote the same second again
		// would go unread.
		if fi, err := os.Stat(path); err == nil {
			w.mtime = fi.ModTime().Truncate(time.Second)
		}
	}
	mtime := time.Now().Truncate(time.Second)
	if !mtime.After(w.mtime) {
		mtime = w.mtime.Add(time.Second)
	}
	if err := writeAtomic(path, data, mtime); err != nil {
		return false, err
	}
	w.last, w.mtime, w.listed = data, mtime, slices.Clone(servers)
	return true, nil
}

// Listed are the servers the file holds now: those of the last write
// that succeeded (none before the first).
func (w *Writer) Listed() []netip.Addr { return slices.Clone(w.listed) }

// writeAtomic writes data to a temporary file beside path, with mtime,
// and renames it over path, so a reader never sees half a file.
func writeAtomic(path string, data []byte, mtime time.Time) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := ownDir(dir); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // gone after the rename; left only on failure
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	// Readable by the resolver, which may run as its own user.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ownDir checks that only this user may create, rename or delete entries
// in dir: whoever else could (a --resolv-dir of /tmp, sticky or not, or a
// directory left 0777) could put their own file, or a symlink to one,
// where the resolver reads its servers, and so send the LAN's queries
// to a server of theirs.
func ownDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case !ok:
		return fmt.Errorf("%s: no owner to check", dir)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s belongs to uid %d, not to uid %d: others may write the resolv file there", dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s has mode %v: others may write the resolv file there (give the daemon a directory of its own)", dir, fi.Mode().Perm())
	}
	return nil
}
