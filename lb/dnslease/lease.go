// Package dnslease reads the DNS servers a link's DHCP or PPP client
// wrote down (links[i].dns: auto): the daemon, apply and verify plan the
// servers' routes from the same reading.
package dnslease

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"flowpin/lb/config"
)

// Read is what the leases of c's links with dns: auto hold, by link name
// (nil when no link has dns: auto), and for each such link the file read
// ("" when none exists) and why it could not be read.
func Read(c *config.Config) (servers map[string][]netip.Addr, from map[string]string, errs map[string]error) {
	for _, l := range c.Links {
		if !l.DNSAuto {
			continue
		}
		if servers == nil {
			servers, from, errs = map[string][]netip.Addr{}, map[string]string{}, map[string]error{}
		}
		s, f, err := ReadLease(pathsOf(l))
		servers[l.Name], from[l.Name] = s, f
		if err != nil {
			errs[l.Name] = err
		}
	}
	return servers, from, errs
}

// Warnings say which dns: auto links' leases could not be read, in
// link order, from what Read returned.
func Warnings(c *config.Config, from map[string]string, errs map[string]error) []string {
	var out []string
	for _, l := range c.Links {
		switch {
		case !l.DNSAuto:
		case errs[l.Name] != nil:
			out = append(out, fmt.Sprintf("link %s: dns: auto: %v", l.Name, errs[l.Name]))
		case from[l.Name] == "":
			out = append(out, fmt.Sprintf("link %s: dns: auto: no lease file found yet (looked at %s; give dns_from)", l.Name, strings.Join(pathsOf(l), ", ")))
		}
	}
	return out
}

func pathsOf(l config.Link) []string {
	if l.DNSFrom != "" {
		return []string{l.DNSFrom}
	}
	return LeasePaths(l.Interface)
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
	f, fi, err := config.OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
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
