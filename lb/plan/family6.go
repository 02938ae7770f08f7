package plan

import (
	"fmt"
	"net/netip"
	"slices"

	"flowpin/lb/config"
	"flowpin/rules"
)

// FamilyPlan is one address family of a link as planned (IPv6; IPv4 is
// LinkPlan's own fields).
type FamilyPlan struct {
	// Usable: the interface is up, has a global address of the family and
	// a next hop, so the link has its tables and source rules.
	Usable bool
	// InRoute: usable and not down by the family's health checks.
	InRoute bool
	Gateway netip.Addr
	// Addr is the address new flows leave with (the one on the gateway's
	// subnet, or the first global one for a link-local gateway); Addrs
	// are every global address, each with its source rules.
	Addr  netip.Prefix
	Addrs []netip.Prefix
	Why   string
}

// planV6 plans link i's IPv6 side.
func planV6(c *config.Config, i int, ifc rules.Iface, exists bool, o Options) (FamilyPlan, error) {
	l := c.Links[i]
	fp := FamilyPlan{Gateway: l.Gateway6}
	for _, a := range ownAddrs(c, ifc.Addrs) {
		if a.Addr().Is6() && !a.Addr().Is4In6() && !a.Addr().IsLinkLocalUnicast() {
			fp.Addrs = append(fp.Addrs, a)
		}
	}
	if l.Gateway6Auto && !ifc.PointToPoint {
		for _, gw := range ifc.Gateways {
			if gw.Is6() && !gw.Is4In6() {
				fp.Gateway = gw
				break
			}
		}
	}
	for _, a := range fp.Addrs {
		if fp.Gateway.IsValid() && a.Contains(fp.Gateway) {
			fp.Addr = a
			break
		}
	}
	if !fp.Addr.IsValid() && (fp.Gateway.IsLinkLocalUnicast() || ifc.PointToPoint && l.Gateway6Auto) && len(fp.Addrs) > 0 {
		// On a point-to-point interface gateway6: auto needs no next hop
		// (IPv6 over a session has only link-local addresses, random
		// each session, so no peer can be learned).
		// A link-local next hop (what router advertisements give) is on
		// every link: leave with the first global address.
		fp.Addr = fp.Addrs[0]
	}
	switch {
	case !exists:
		fp.Why = fmt.Sprintf("interface %s does not exist", l.Interface)
	case len(fp.Addrs) == 0:
		fp.Why = fmt.Sprintf("interface %s has no global IPv6 address yet", l.Interface)
	case l.Gateway6Auto && !fp.Gateway.IsValid() && !ifc.PointToPoint:
		fp.Why = fmt.Sprintf("interface %s has no IPv6 default route in main to take the gateway from yet (router advertisements)", l.Interface)
	case !fp.Addr.IsValid():
		return fp, c.LinkError(i, "gateway6", "%s is not on a subnet of %s (its IPv6 addresses: %v); a link-local next hop (fe80::) is always on-link", l.Gateway6, l.Interface, fp.Addrs)
	case slices.ContainsFunc(fp.Addrs, func(a netip.Prefix) bool { return a.Addr() == fp.Gateway }):
		return fp, c.LinkError(i, "gateway6", "%s is %s's own address, not a next hop", fp.Gateway, l.Interface)
	case !ifc.Up:
		fp.Why = fmt.Sprintf("interface %s is down", l.Interface)
	default:
		fp.Usable, fp.InRoute = true, true
		if why, ok := o.Down6[l.Name]; ok {
			fp.InRoute, fp.Why = false, why
		}
	}
	return fp, nil
}

// routing6 adds the IPv6 rules and routes: the same layout as IPv4 (see
// the priority table in plan.go), in the IPv6 tables of the same ids.
func routing6(c *config.Config, d *Desired, s *rules.State) {
	if !slices.ContainsFunc(d.Links, func(l LinkPlan) bool { return l.HasV6() }) {
		return
	}
	base := c.PriorityBase
	all6 := netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	sources := map[netip.Prefix]bool{}
	for i, l := range d.Links {
		if !l.HasV6() {
			continue
		}
		v := l.V6
		if !v.Usable {
			continue
		}
		for _, a := range v.Addrs {
			src := netip.PrefixFrom(a.Addr(), 128)
			if sources[src] {
				continue // a link before it on the same interface has them
			}
			sources[src] = true
			s.Rules = append(s.Rules,
				rules.Rule{Family: rules.V6, Priority: base + OffSourceLocal + i, Src: src, Table: l.Table, SuppressPrefixlen: 0},
				rules.Rule{Family: rules.V6, Priority: base + OffSource + i, Src: src, Table: l.Table, SuppressPrefixlen: -1},
			)
		}
		var nets []netip.Prefix
		for _, a := range v.Addrs {
			if p := a.Masked(); !slices.Contains(nets, p) {
				nets = append(nets, p)
				s.Routes = append(s.Routes, rules.Route{Family: rules.V6, Table: l.Table, Dst: p, Dev: l.Interface})
			}
		}
		s.Routes = append(s.Routes, rules.Route{Family: rules.V6, Table: l.Table, Dst: all6, Gw: l.Via6(), Dev: l.Interface, Src: v.Addr.Addr()})
	}
	s.Rules = append(s.Rules, markTree(c, d.Links, rules.V6)...)
	s.Rules = append(s.Rules, skipRules(c, rules.V6)...)
	s.Rules = append(s.Rules,
		rules.Rule{Family: rules.V6, Priority: base + OffMain, Table: MainTable, SuppressPrefixlen: 0},
		rules.Rule{Family: rules.V6, Priority: base + OffBalance, Table: c.BalanceTable, SuppressPrefixlen: -1},
	)
	policyRouting(c, d, s, rules.V6)
}

// Via6 is the next hop the link's own IPv6 table names: its gateway6, or
// none on a point-to-point interface (`default dev IF`), as Via.
func (l LinkPlan) Via6() netip.Addr {
	if l.PointToPoint {
		return netip.Addr{}
	}
	return l.V6.Gateway
}

// P2PLeg6 is the next hop a point-to-point link's leg of an IPv6
// multipath route names. The kernel refuses a device-only leg there
// ("Device only routes can not be added for IPv6 using the multipath
// API", fib6_nh_init via ip6_route_multipath_add); nexthop objects would
// avoid it, but this link-local placeholder does the same with the
// classic API: on a NOARP device (tun, ppp, wireguard have no
// header_ops) ndisc marks every neighbour NUD_NOARP and never resolves
// it, so the packet goes out of the device whatever the address, as with
// `dev IF`. It never reaches status, verify or explain as a gateway, and
// the probes never use it.
var P2PLeg6 = netip.MustParseAddr("fe80::1")

// Leg6 is the next hop of the link's leg in an IPv6 multipath route.
func (l LinkPlan) Leg6() netip.Addr {
	if l.PointToPoint {
		return P2PLeg6
	}
	return l.V6.Gateway
}
