package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"flowpin/lb/config"
	"flowpin/rules"
)

// Role is what a node of an HA pair is now, seen from its own addresses.
type Role string

// Roles. A node holds the VIPs (the links' nat_source addresses) when
// keepalived made it the master; the backup holds none. Split is a pair
// in trouble (or keepalived mid-takeover): some VIPs here, some not.
const (
	RolePrimary Role = "primary"
	RoleBackup  Role = "backup"
	RoleSplit   Role = "split"
)

// VIP is a link's nat_source and where this node holds it.
type VIP struct {
	Addr netip.Addr `json:"addr"`
	// Iface holds it here; empty: this node does not hold it.
	Iface string `json:"interface,omitempty"`
	// DADFailed: an IPv6 VIP that is on this interface but failed
	// duplicate address detection (another host on the link has it), so
	// it is not held.
	DADFailed string `json:"dad_failed_on,omitempty"`
}

// VIPs are the config's nat_source addresses (each once, in config order)
// and the interface of this node that has each, if any. An IPv6 VIP that
// is tentative (keepalived just added it and DAD is under way) or failed
// DAD (the peer, or someone else, has it too) is not held: this node
// cannot send from it, and believing itself primary on it would make two
// primaries.
func VIPs(c *config.Config, ifaces map[string]rules.Iface) []VIP {
	names := make([]string, 0, len(ifaces))
	for n := range ifaces {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []VIP
	for _, a := range c.NATSources() {
		v := VIP{Addr: a}
		for _, n := range names {
			ifc := ifaces[n]
			if !slices.ContainsFunc(ifc.Addrs, func(p netip.Prefix) bool { return p.Addr() == a }) {
				continue
			}
			if slices.Contains(ifc.DADFailed, a) {
				v.DADFailed = n
				continue
			}
			if !slices.Contains(ifc.Tentative, a) {
				v.Iface, v.DADFailed = n, ""
				break
			}
		}
		out = append(out, v)
	}
	return out
}

// RoleOf is the role of a node holding vips as VIPs says; "" without any.
func RoleOf(vips []VIP) Role {
	held := 0
	for _, v := range vips {
		if v.Iface != "" {
			held++
		}
	}
	switch {
	case len(vips) == 0:
		return ""
	case held == len(vips):
		return RolePrimary
	case held == 0:
		return RoleBackup
	}
	return RoleSplit
}

// ownAddrs are addrs less the config's nat_source addresses, with ha: on a
// pair the VIPs come and go with the role, and nothing in a link's
// routes may depend on them (the backup has none, and the kernel refuses
// a route whose src is not a local address).
func ownAddrs(c *config.Config, addrs []netip.Prefix) []netip.Prefix {
	if !c.HA {
		return addrs
	}
	vips := c.NATSources()
	return slices.DeleteFunc(slices.Clone(addrs), func(p netip.Prefix) bool { return slices.Contains(vips, p.Addr()) })
}

// VIPDADFailed warns of an IPv6 VIP that failed duplicate address
// detection here: another host on the link answers for it (the peer
// holding it too, or a misconfigured host), so this node does not count
// it as held, and cannot send from it until it is removed and added again.
func VIPDADFailed(v VIP) string {
	if v.DADFailed == "" || v.Iface != "" {
		return ""
	}
	return fmt.Sprintf("nat_source %s on %s failed duplicate address detection: another host on the link has it (both nodes of the pair holding it?), so it is not held here; the kernel does not use it until it is removed and added again", v.Addr, v.DADFailed)
}

// VIPElsewhere warns of a nat_source held on an interface that is no
// interface of its links (keepalived's virtual_ipaddress without the
// link's dev): it counts as held, but the ISP's router asks for it on the
// link, and it is answered there only while the kernel answers ARP for any
// local address on any interface (arp_ignore 0).
func VIPElsewhere(c *config.Config, v VIP) string {
	if v.Iface == "" {
		return ""
	}
	var on []string
	for _, l := range c.Links {
		if l.NATSource != v.Addr {
			continue
		}
		if l.Interface == v.Iface {
			return ""
		}
		if !slices.Contains(on, l.Interface) {
			on = append(on, l.Interface)
		}
	}
	return fmt.Sprintf("nat_source %s is on %s, not on %s (its link's interface): replies to flows SNATed to it find it only while the kernel answers ARP for it on %s; put it on dev %s (keepalived's virtual_ipaddress)", v.Addr, v.Iface, strings.Join(on, ", "), strings.Join(on, ", "), on[0])
}

// masqueraded6 warns, with ha, of each dual-stack link with nat: true: its
// nat_source is IPv4 (the config demands one, and a link has one), so its
// IPv6 flows are masqueraded to this node's own
// address, which the peer does not have: they cannot go on after a
// takeover.
func masqueraded6(c *config.Config) []string {
	if !c.HA {
		return nil
	}
	var out []string
	for _, l := range c.Links {
		if l.NAT && l.HasV6() && !l.NATSource.Is6() && len(l.Prefixes6) == 0 && !l.Prefixes6Auto {
			out = append(out, fmt.Sprintf("link %s: with ha its IPv6 flows are NATed by masquerade to this node's own address (its nat_source %s is IPv4), so they cannot go on on the peer after a takeover; route IPv6 without NAT66 (prefixes6) to keep them", l.Name, l.NATSource))
		}
	}
	return out
}
