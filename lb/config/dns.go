package config

import (
	"net/netip"
	"path/filepath"
	"reflect"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// MaxDNS is the most resolvers a link may name.
const MaxDNS = 8

// rawDNS is links[i].dns: a list of addresses, or auto.
type rawDNS struct {
	Auto  bool
	Addrs []string
}

func (r *rawDNS) decodeNode(d *decoder, path string, n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value != "auto" || quoted(n) {
			return d.errAt(n, path, "%s: want a list of addresses ([192.0.2.53, 2001:db8::53]), or auto", quote(n.Value))
		}
		r.Auto = true
		return nil
	case yaml.SequenceNode:
		return d.sequence(path, n, reflect.ValueOf(&r.Addrs).Elem(), MaxDNS)
	}
	return d.errAt(n, path, "want a list of addresses, or auto, not %s", kindName(n))
}

// fillDNS takes dns and dns_from. A resolver of a family the link does
// not carry could never be reached by it.
func (c *Config) fillDNS(i int, rl *rawLink, l *Link) error {
	if rl.DNS == nil {
		if rl.DNSFrom != nil {
			return c.LinkError(i, "dns_from", "%s: dns_from is where dns: auto reads the lease, and this link has no dns: auto", quote(*rl.DNSFrom))
		}
		return nil
	}
	if rl.DNS.Auto {
		l.DNSAuto = true
		if rl.DNSFrom != nil {
			if p := *rl.DNSFrom; !filepath.IsAbs(p) || filepath.Clean(p) != p {
				return c.LinkError(i, "dns_from", "%s is not a clean absolute path", quote(p))
			}
			l.DNSFrom = *rl.DNSFrom
		}
		return nil
	}
	if rl.DNSFrom != nil {
		return c.LinkError(i, "dns_from", "%s: dns_from is for dns: auto, and this link lists its servers", quote(*rl.DNSFrom))
	}
	if len(rl.DNS.Addrs) == 0 {
		return c.LinkError(i, "dns", "an empty list: name the link's resolvers, or write auto")
	}
	for j, s := range rl.DNS.Addrs {
		field := "dns[" + strconv.Itoa(j) + "]"
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" || a.Is4In6() {
			return c.LinkError(i, field, "%s is not an IP address", quote(s))
		}
		if why := BadResolver(a); why != "" {
			return c.LinkError(i, field, "%s %s", a, why)
		}
		if a.Is4() && !l.HasV4() {
			return c.LinkError(i, field, "%s is IPv4, and link %s carries no IPv4 (no gateway)", a, quote(l.Name))
		}
		if a.Is6() && !l.HasV6() {
			return c.LinkError(i, field, "%s is IPv6, and link %s carries no IPv6 (no gateway6)", a, quote(l.Name))
		}
		for _, b := range l.DNS {
			if a == b {
				return c.LinkError(i, field, "%s is listed twice", a)
			}
		}
		l.DNS = append(l.DNS, a)
	}
	return nil
}

// BadResolver says why a cannot be a link's resolver, or "". Its queries
// are routed by the link, so it must be an address somewhere past it.
func BadResolver(a netip.Addr) string {
	switch {
	case a.IsUnspecified(), a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "cannot be a resolver"
	case a.IsLoopback():
		return "is this host: a local resolver does not follow a link (point it at /run/flowpin/resolv.conf instead)"
	case a.IsLinkLocalUnicast():
		return "is link-local: give the resolver's routable address"
	}
	return ""
}
