// Package resolv is the daemon's DNS part: it writes the resolv.conf
// that a local resolver (dnsmasq's resolv-file=, systemd-resolved) reads,
// listing the DNS servers of the links that are up, and reads the servers
// of links with dns: auto from their DHCP or PPP client's lease.
package resolv

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

// Render is the file's text for servers.
func Render(servers []netip.Addr) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by flowpin: the DNS servers of the links that are up, in the\n")
	b.WriteString("# default policy's order, rewritten on every change. Point a local resolver\n")
	b.WriteString("# at it (dnsmasq: resolv-file=; see flowpin's README); do not edit it.\n")
	if len(servers) == 0 {
		b.WriteString("# No link with DNS servers is up.\n")
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
	mtime := time.Now().Truncate(time.Second)
	if !mtime.After(w.mtime) {
		mtime = w.mtime.Add(time.Second)
	}
	if err := writeAtomic(filepath.Join(w.Dir, FileName), data, mtime); err != nil {
		return false, err
	}
	w.last, w.mtime = data, mtime
	return true, nil
}

// writeAtomic writes data to a temporary file beside path, with mtime,
// and renames it over path, so a reader never sees half a file.
func writeAtomic(path string, data []byte, mtime time.Time) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
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

// maxLease is how much of a lease file is read: its end, where a
// client appends its latest lease.
const maxLease = 256 << 10

// LeasePaths are where dns: auto looks for link iface's servers when
// the link names no dns_from, first found first: dhclient's lease file
// (Debian's ifupdown), systemd-networkd's lease, dhcpcd's resolv.conf
// fragments (dhcpcd 9's hook state, then older dhcpcd), and for ppp
// interfaces pppd's usepeerdns file.
func LeasePaths(iface string) []string {
	out := []string{
		"/var/lib/dhcp/dhclient." + iface + ".leases",
	}
	if ifi, err := net.InterfaceByName(iface); err == nil {
		out = append(out, "/run/systemd/netif/leases/"+strconv.Itoa(ifi.Index))
	}
	out = append(out,
		"/run/dhcpcd/hook-state/resolv.conf/"+iface+".dhcp",
		"/run/dhcpcd/resolv.conf/"+iface+".dhcp",
	)
	if strings.HasPrefix(iface, "ppp") {
		out = append(out, "/run/ppp/resolv.conf", "/etc/ppp/resolv.conf")
	}
	return out
}

// ReadLease reads the servers of the first of paths that exists. A file
// that exists but names none gives none: the lease has no DNS servers.
func ReadLease(paths []string) ([]netip.Addr, string, error) {
	for _, p := range paths {
		data, err := readTail(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, p, err
		}
		return ParseLease(data), p, nil
	}
	return nil, "", nil
}

func readTail(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	off := max(fi.Size()-maxLease, 0)
	buf := make([]byte, fi.Size()-off)
	n, err := f.ReadAt(buf, off)
	if n == len(buf) {
		err = nil
	}
	return buf[:n], err
}

// ParseLease finds DNS servers in a lease file of any of the usual
// forms: resolv.conf lines (nameserver ADDR: pppd, dhcpcd's fragments);
// dhclient's `option domain-name-servers A, B;` (the last lease in the
// file wins: dhclient appends); networkd's DNS=A B; dhcpcd's
// domain_name_servers='A B'. At most config.MaxDNS, each once; what is
// not an address is skipped.
func ParseLease(data []byte) []netip.Addr {
	var ns, last []netip.Addr
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "nameserver"):
			ns = append(ns, addrs(strings.TrimPrefix(line, "nameserver"))...)
		case strings.HasPrefix(line, "option domain-name-servers"):
			last = addrs(strings.TrimSuffix(strings.TrimPrefix(line, "option domain-name-servers"), ";"))
		case strings.HasPrefix(line, "DNS="):
			last = addrs(strings.TrimPrefix(line, "DNS="))
		case strings.HasPrefix(line, "domain_name_servers="), strings.HasPrefix(line, "new_domain_name_servers="):
			_, v, _ := strings.Cut(line, "=")
			last = addrs(strings.Trim(v, `'"`))
		}
	}
	if len(ns) == 0 {
		ns = last
	}
	var out []netip.Addr
	for _, a := range ns {
		if !slices.Contains(out, a) && len(out) < config.MaxDNS {
			out = append(out, a)
		}
	}
	return out
}

// addrs are the addresses in s, separated by commas or blanks.
func addrs(s string) []netip.Addr {
	var out []netip.Addr
	for f := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		if a, err := netip.ParseAddr(f); err == nil && a.Zone() == "" && !a.Is4In6() {
			out = append(out, a)
		}
	}
	return out
}
