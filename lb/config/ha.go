package config

import "net/netip"

// fillHA takes the links' nat_source and the top-level ha. Both nodes of a
// pair run the same config; what keeps their flows alive across a
// takeover is that nothing a node decides depends on anything but that
// config (README, "HA pair").
func (c *Config) fillHA(raw *rawConfig) error {
	c.HA = raw.HA
	for i := range raw.Links {
		if err := c.fillNATSource(i, raw.Links[i].NATSource); err != nil {
			return err
		}
	}
	// The SNAT to a nat_source goes by the interface a flow leaves by (one
	// map lookup), not by the link: a link without NAT on that interface
	// would have its flows SNATed too.
	for i, l := range c.Links {
		if l.NAT {
			continue
		}
		for _, o := range c.Links {
			if o.Interface == l.Interface && o.NATSource.IsValid() {
				return c.LinkError(i, "nat", "false, but it shares interface %s with link %s, whose nat_source %s its flows leaving by %s would be SNATed to as well: give links on one interface the same nat", l.Interface, quote(o.Name), o.NATSource, l.Interface)
			}
		}
	}
	if !c.HA {
		return nil
	}
	for i, l := range c.Links {
		// Masquerade takes the address of the node that saw a flow first,
		// which the other node does not have; and the kernel deletes a
		// masqueraded flow when its address leaves the interface
		// (masq_inet_event, net/netfilter/nf_nat_masquerade.c).
		if l.NAT && l.HasV4() && !l.NATSource.Is4() {
			return c.LinkError(i, "nat", "true without an IPv4 nat_source, and ha is true: masquerade would NAT to this node's own address, which the peer does not have, so no flow of link %s could survive a takeover (give nat_source: the link's VIP)", quote(l.Name))
		}
	}
	if len(c.NATSources()) == 0 {
		return c.FieldError("ha", "true, but no link has a nat_source: a node of the pair knows it is the one routing the flows (and runs hooks and on-demand commands) by holding the VIPs, which are the links' nat_source addresses")
	}
	return nil
}

// thisNetwork is 0.0.0.0/8, addresses no host has (RFC 1122 3.2.1.3).
var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

func (c *Config) fillNATSource(i int, s string) error {
	if s == "" {
		return nil
	}
	l := &c.Links[i]
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4In6() {
		return c.LinkError(i, "nat_source", "%s is not an IP address", quote(s))
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.IsLinkLocalUnicast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || thisNetwork.Contains(a) {
		return c.LinkError(i, "nat_source", "%s cannot be a flow's source address", a)
	}
	if !l.NAT {
		return c.LinkError(i, "nat_source", "%s needs nat: true on link %s: it is the address flows are NATed to", a, quote(l.Name))
	}
	if a.Is4() && !l.HasV4() {
		return c.LinkError(i, "nat_source", "%s is an IPv4 address, but link %s carries no IPv4 (no gateway)", a, quote(l.Name))
	}
	if a.Is6() && !l.HasV6() {
		return c.LinkError(i, "nat_source", "%s is an IPv6 address, but link %s carries no IPv6 (no gateway6)", a, quote(l.Name))
	}
	for j, o := range c.Links {
		for _, g := range []struct {
			field string
			addr  netip.Addr
		}{{"gateway", o.Gateway}, {"gateway6", o.Gateway6}} {
			if g.addr == a {
				return c.LinkError(i, "nat_source", "%s is link %s's %s: flows SNATed to it would have their replies sent to that router, not to this one", a, quote(c.Links[j].Name), g.field)
			}
		}
	}
	// The SNAT map is keyed by the interface a flow leaves by: links that
	// share one share its address.
	for j := range i {
		o := c.Links[j]
		if o.NATSource == a && o.Interface != l.Interface {
			return c.LinkError(i, "nat_source", "%s is also links[%d]'s, on interface %s: an address is routed to one link (and keepalived holds a VIP on one interface), so the replies of flows leaving by %s would not come back by it", a, j, o.Interface, l.Interface)
		}
		if o.Interface == l.Interface && o.NATSource.IsValid() && o.NATSource.Is4() == a.Is4() && o.NATSource != a {
			return c.LinkError(i, "nat_source", "%s differs from links[%d]'s %s on the same interface %s: flows are NATed by the interface they leave by, so links on one interface need the same nat_source", a, j, o.NATSource, l.Interface)
		}
	}
	l.NATSource = a
	return nil
}

// NATSources are the links' nat_source addresses, each once, in config
// order: on an HA pair, the VIPs of the WAN side.
func (c *Config) NATSources() []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, l := range c.Links {
		if l.NATSource.IsValid() && !seen[l.NATSource] {
			seen[l.NATSource] = true
			out = append(out, l.NATSource)
		}
	}
	return out
}
