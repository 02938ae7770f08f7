// Package plan turns a config plus what the kernel reports about the
// interfaces into one Desired value: every rule, route, sysctl and nft
// object flowpin wants, as plain values. It is pure.
package plan

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"flowpin/lb/config"
	"flowpin/nft"
	"flowpin/rules"
)

// Rule priority layout, relative to Config.PriorityBase (B). Order matters;
// it serves two setups that pull in opposite directions at once. On a NAT
// box, a reply arriving from a WAN must be routed by main towards the LAN
// (a link table has no LAN route, so the nft table never restores the mark
// onto packets from a link). On a server with two interfaces on ONE
// subnet, a main lookup before the link rules sends the second address's
// replies out of the first interface, and a switch that checks sources
// drops them. And every rule a forwarded packet passes costs it time on
// every packet, so the blocks it has no business in are jumped over:
// a forwarded packet passes a fixed number of rules plus, pinned, a
// path through the mark tree bounded by the mark mask's bits.
//
//	B        not iif lo goto B+100
//	         The source rules below are for this host's own traffic
//	         (its lookups have iif lo: flowi4_iif = LOOPBACK_IFINDEX);
//	         a forwarded packet never has a source of this host (the
//	         kernel drops it as martian), so it skips them.
//	B+1+i    from ADDR_i lookup T_i suppress_prefixlength 0
//	         A link's own subnet, from its own address, leaves by that
//	         link even when main has the same subnet on another interface
//	         (two NICs on one subnet). The default route in T_i
//	         is suppressed so that the next rule can still see main.
//	B+100    fwmark 0/MASK goto B+300
//	         A packet with no link mark (a new flow, an unpinned one)
//	         skips the links' fwmark rules: none could match it.
//	B+101..  the mark tree (see markTree): fwmark BIT/BIT goto ...,
//	         ending in fwmark M_i lookup T_i
//	         A pinned flow stays on its link, even if main has grown a
//	         more specific route since it started. The kernel walks ip
//	         rules as a list and has no "table = mark" action (iproute2's
//	         fwmark/mask selects, it does not index), so one rule per link
//	         would cost a pinned packet a walk as long as its link's
//	         position. Instead the rules branch on one mark bit at a
//	         time: a pinned packet passes at most one goto per mark bit
//	         in MASK and two lookups, whatever the number of links (at
//	         most 9 with the default mask 0xff00; 2 at 2 links, 6 at 32).
//	         The block is 199 wide: a tree over MaxLinks marks needs up to
//	         2*MaxLinks-2 rules.
//	B+300    lookup main suppress_prefixlength 0
//	         Unpinned traffic still reaches connected and more specific
//	         routes (the LAN, a VPN); main's default is skipped.
//	B+301..  fwmark M_k lookup T_k (see OffPolicy)
//	         A new flow a traffic rule sent to a policy: the policy's
//	         active tier, or its last resort.
//	B+399    from PREFIX lookup T_i (see OffPrefix)
//	         A flow from an ISP's own prefix leaves by that ISP.
//	B+400    not iif lo goto B+500
//	         As at B: the source rules are for this host's traffic.
//	B+401+i  from ADDR_i lookup T_i
//	         Anything else sourced from a link's address leaves by that
//	         link: no asymmetric replies.
//	B+500    lookup BALANCE
//	         Other new flows: the default policy, the weighted multipath
//	         route of its active tier; if no link is up, its last resort
//	         (unreachable unless another default_policy says otherwise).
const (
	OffForwarded   = 0
	OffSourceLocal = 1
	OffUnmarked    = 100
	OffMark        = 101
	OffMain        = 300
	OffSkipSource  = 400
	OffSource      = 401
	OffBalance     = 500
)

// skipRules are the gotos of the layout, in family fam: a forwarded packet
// past the source rules, an unmarked one past the links' fwmark rules.
// Each goto lands on a rule that always exists.
func skipRules(c *config.Config, fam int) []rules.Rule {
	base := c.PriorityBase
	return []rules.Rule{
		{Family: fam, Priority: base + OffForwarded, Iif: "lo", Invert: true, Goto: base + OffUnmarked, SuppressPrefixlen: -1},
		{Family: fam, Priority: base + OffUnmarked, Mark: 0, Mask: c.MarkMask, Goto: base + OffMain, SuppressPrefixlen: -1},
		{Family: fam, Priority: base + OffSkipSource, Iif: "lo", Invert: true, Goto: base + OffBalance, SuppressPrefixlen: -1},
	}
}

// markTree is the links' fwmark rules in family fam, laid out as a tree
// from OffMark on. A set of one or two links is its fwmark lookup rules in
// link order; a larger set is split on the lowest mask bit that divides
// it: `fwmark BIT/BIT goto` the rules of the links with the bit set, which
// follow those of the links without it. A pinned packet so passes one rule
// per level, and the levels are bounded by the mask's bits, not by the
// links. A link's rule exists even when the link is down: its table is
// then empty and lookup falls through (onto rules whose marks differ,
// then main), and the rule is ready when the link comes back. A mark
// that is no link's (a policy's) misses its leaf the same way.
func markTree(c *config.Config, links []LinkPlan, fam int) []rules.Rule {
	var set []LinkPlan
	for _, l := range links {
		if (fam == rules.V4 && l.HasV4()) || (fam == rules.V6 && l.HasV6()) {
			set = append(set, l)
		}
	}
	var out []rules.Rule
	var grow func(set []LinkPlan, prio int) int
	grow = func(set []LinkPlan, prio int) int {
		if len(set) <= 2 {
			// Two lookups cost a packet what a branch and one lookup
			// would, and take one rule less.
			for _, l := range set {
				out = append(out, rules.Rule{Family: fam, Priority: prio, Mark: l.Mark, Mask: c.MarkMask, Table: l.Table, SuppressPrefixlen: -1})
				prio++
			}
			return prio
		}
		bit := splitBit(set, c.MarkMask)
		var clear, set1 []LinkPlan
		for _, l := range set {
			if l.Mark&bit == 0 {
				clear = append(clear, l)
			} else {
				set1 = append(set1, l)
			}
		}
		at := len(out)
		out = append(out, rules.Rule{Family: fam, Priority: prio, Mark: bit, Mask: bit, SuppressPrefixlen: -1})
		next := grow(clear, prio+1)
		out[at].Goto = next
		return grow(set1, next)
	}
	grow(set, c.PriorityBase+OffMark)
	return out
}

// splitBit is the lowest bit of mask on which the marks of set (distinct,
// more than one) differ. Links' marks count up from the mask's lowest bit,
// so the lowest bit splits them most evenly.
func splitBit(set []LinkPlan, mask uint32) uint32 {
	for bit := uint32(1); bit != 0; bit <<= 1 {
		if mask&bit == 0 {
			continue
		}
		n := 0
		for _, l := range set {
			if l.Mark&bit != 0 {
				n++
			}
		}
		if n > 0 && n < len(set) {
			return bit
		}
	}
	panic("plan: links with equal marks") // the config refuses them
}

// The config refuses more links than a block holds (the blocks of
// source rules are the smallest: B+1 to B+99).
var _ = [1]struct{}{}[OffUnmarked-OffSourceLocal-config.MaxLinks]
var _ = [1]struct{}{}[OffBalance-OffSource-config.MaxLinks]

// The mark tree of MaxLinks links fits between OffMark and OffMain: n
// leaves and at most n-2 branches (each splits a set of 3 or more).
var _ = uint(OffMain - OffMark - (2*config.MaxLinks - 2))

// The config validates priority_base against the span of this layout.
var _ = [1]struct{}{}[OffBalance-config.RulePrioritySpan]

// Desired is everything flowpin wants in the kernel, as plain values.
type Desired struct {
	Routing rules.State
	// Sysctls written before the routing changes.
	Sysctls []rules.Sysctl
	// LateSysctls exist only once nf_conntrack is loaded, which the nft
	// table does; they are written after it.
	LateSysctls []rules.Sysctl
	NFT         nft.Spec
	Links       []LinkPlan
	Policies    []PolicyPlan
	Rules       []RulePlan
	// Prefixes6 are the links' ISP prefixes (prefixes6.go).
	Prefixes6 []Prefix6Plan
	Warnings  []string
	// HA: the config's ha (no flow is ever deleted at apply).
	HA bool
	// VIPs are the links' nat_source addresses and whether this node
	// holds them (an HA pair's role: RoleOf).
	VIPs []VIP
}

// LinkPlan is one link as planned.
type LinkPlan struct {
	config.Link
	// Usable: the interface is up and has an address, so the link has its
	// table and source rules.
	Usable bool
	// InRoute: usable and not down by the daemon's health checks, so it
	// is in the multipath route and takes new flows.
	InRoute bool
	// Missing: the interface does not exist (only with MissingOK), so
	// neither do its per-interface sysctls.
	Missing bool
	Addr    netip.Prefix
	Why     string // why it is not in the multipath route
	// PointToPoint: the interface is IFF_POINTOPOINT (PPP, WireGuard,
	// tun). Its routes name no next hop (Via); Gateway is its peer or the
	// configured gateway, which the probes use.
	PointToPoint bool
	// V6 is the link's IPv6 side (zero when it has no gateway6): it is up
	// or down on its own, in its own tables and multipath routes.
	V6 FamilyPlan
}

// Via is the next hop the link's routes name: its gateway, or none on a
// point-to-point interface, where `default dev IF` reaches the peer
// without resolving any link-layer address, and a session's peer may
// change while the routes stay.
func (l LinkPlan) Via() netip.Addr {
	if l.PointToPoint {
		return netip.Addr{}
	}
	return l.Gateway
}

// Plan turns a config and the kernel's interfaces into the desired state.
// It is pure: the same inputs give the same Desired.
func Plan(c *config.Config, ifaces map[string]rules.Iface) (*Desired, error) {
	return With(c, ifaces, Options{})
}

// Options carry the daemon's view into the plan.
type Options struct {
	// Down names links the health checks took down, with the reason.
	// They keep their tables and rules, so their probes and pinned flows
	// still route, but leave the multipath route.
	Down map[string]string
	// Down6 is Down for the links' IPv6 sides: an ISP's IPv6 can fail
	// while its IPv4 works.
	Down6 map[string]string
	// MissingOK: an interface that does not exist (a ppp0 between two
	// sessions) leaves its link unusable instead of being an error.
	MissingOK bool
	// DNS are the servers of the links with dns: auto, by link name, as
	// the daemon read them from the leases (dns.go).
	DNS map[string][]netip.Addr
	// Held6 are the prefixes the link with prefixes6: auto had when the
	// daemon last planned it: while the link is down, they are its own
	// whether the kernel still holds their delegation or not
	// (planPrefixes6).
	Held6 []netip.Prefix
}

// With is Plan with the daemon's options.
func With(c *config.Config, ifaces map[string]rules.Iface, o Options) (*Desired, error) {
	d := &Desired{NFT: nft.Spec{Mask: c.MarkMask, Guard: c.HA}, HA: c.HA, VIPs: VIPs(c, ifaces)}
	for i, l := range c.Links {
		lp := LinkPlan{Link: l}
		ifc, ok := ifaces[l.Interface]
		if !ok && !o.MissingOK {
			return nil, c.LinkError(i, "interface", "%q does not exist", l.Interface)
		}
		var v4 []netip.Prefix
		for _, a := range ownAddrs(c, ifc.Addrs) {
			if a.Addr().Is4() {
				v4 = append(v4, a)
			}
		}
		lp.PointToPoint = ifc.PointToPoint
		shared := c.Shared(i)
		if ok && ifc.PointToPoint && l.Check.Method == config.ProbeARP {
			return nil, c.LinkError(i, "check.method", "arp: %s is point-to-point, with no link-layer neighbour to ask for the gateway; probe it with icmp (or exec)", l.Interface)
		}
		if shared && ifc.PointToPoint {
			return nil, c.LinkError(i, "interface", "%s is point-to-point: it has one peer, so it cannot carry two links told apart by their next hops", l.Interface)
		}
		if l.GatewayAuto {
			lp.Gateway = autoGateway(ifc, v4)
		}
		lp.Addr = onLink(ifc, v4, lp.Gateway)
		switch {
		case !ok:
			lp.Missing = true
			lp.Why = fmt.Sprintf("interface %s does not exist", l.Interface)
		case !l.HasV4():
			lp.Why = "no IPv4 on this link (no gateway)"
		case len(v4) == 0 && c.HA && l.NATSource.Is4() && len(ifc.Addrs) > 0:
			lp.Why = fmt.Sprintf("interface %s has no IPv4 address of its own (nat_source %s is the pair's, not this node's): with ha each node needs its own address on the link", l.Interface, l.NATSource)
		case len(v4) == 0:
			lp.Why = fmt.Sprintf("interface %s has no IPv4 address yet", l.Interface)
		case l.GatewayAuto && !lp.Gateway.IsValid() && !ifc.PointToPoint:
			lp.Why = fmt.Sprintf("interface %s has no default route in main to take the gateway from yet", l.Interface)
		case !lp.Addr.IsValid():
			return nil, c.LinkError(i, "gateway", "%s is neither on a subnet of %s (its addresses: %v) nor its peer%s", l.Gateway, l.Interface, v4, peersOf(ifc, v4))
		case lp.Addr.Addr() == l.Gateway:
			return nil, c.LinkError(i, "gateway", "%s is %s's own address, not a next hop", l.Gateway, l.Interface)
		case !l.GatewayAuto && !ifc.PointToPoint && noHost(lp.Addr, l.Gateway) != "":
			return nil, c.LinkError(i, "gateway", "%s is the %s address of %s on %s, not a next hop", l.Gateway, noHost(lp.Addr, l.Gateway), lp.Addr.Masked(), l.Interface)
		case !ifc.Up:
			lp.Why = fmt.Sprintf("interface %s is down", l.Interface)
		default:
			lp.Usable = true
			lp.InRoute = true
			if why, ok := o.Down[l.Name]; ok {
				lp.InRoute, lp.Why = false, why
			}
		}
		if !lp.Usable && l.HasV4() {
			d.Warnings = append(d.Warnings, fmt.Sprintf("link %s left out of the multipath route: %s", l.Name, lp.Why))
		}
		if l.HasV6() {
			v6, err := planV6(c, i, ifc, ok, o)
			if err != nil {
				return nil, err
			}
			lp.V6 = v6
			if !v6.Usable && !lp.Missing {
				d.Warnings = append(d.Warnings, fmt.Sprintf("link %s left out of the IPv6 multipath route: %s", l.Name, v6.Why))
			}
			// IPv6 on a point-to-point link has no peer address to learn
			// (each end's link-local address is random, new every
			// session), so without an IPv6 check target the daemon has
			// nothing to probe and judges that side down.
			if lp.PointToPoint && l.Gateway6Auto && !slices.ContainsFunc(l.Check.Targets, netip.Addr.Is6) {
				d.Warnings = append(d.Warnings, fmt.Sprintf("link %s: IPv6 on point-to-point %s has no next hop to probe: flowpin run judges it down until links[%d].check.targets has an IPv6 address", l.Name, l.Interface, i))
			}
		}
		d.Links = append(d.Links, lp)
		nl := nft.Link{Name: l.Name, Iface: l.Interface, Mark: l.Mark, NAT: l.NAT, NATSource: l.NATSource}
		if shared {
			nl.Shared, nl.Nexthop, nl.Nexthop6 = true, l.Gateway, l.Gateway6
			nl.MACs = gatewayMACs(ifc, l.Gateway, l.Gateway6)
			if len(nl.MACs) == 0 && ok {
				d.Warnings = append(d.Warnings, fmt.Sprintf("link %s: its gateway is not in the neighbour table of %s yet, so flows arriving from it (port forwards) are not pinned to it until it is (flowpin run follows the neighbour table; a one-off apply must be run again)", l.Name, l.Interface))
			}
		}
		d.NFT.Links = append(d.NFT.Links, nl)
	}
	d.NFT.V6 = slices.ContainsFunc(c.Links, config.Link.HasV6)
	for _, v := range d.VIPs {
		// With ha the backup holds no VIP, as it should.
		if !c.HA && v.Iface == "" && v.DADFailed == "" {
			d.Warnings = append(d.Warnings, fmt.Sprintf("nat_source %s is on no interface of this host: replies to it arrive only if the ISP routes it here", v.Addr))
		}
		if w := VIPElsewhere(c, v); w != "" {
			d.Warnings = append(d.Warnings, w)
		}
		if w := VIPDADFailed(v); w != "" {
			d.Warnings = append(d.Warnings, w)
		}
	}
	d.Warnings = append(d.Warnings, masqueraded6(c)...)
	if err := policies(c, d); err != nil {
		return nil, err
	}
	d.Routing = routing(c, d, ifaces)
	routing6(c, d, &d.Routing)
	d.Routing.Routes = append(d.Routing.Routes, dnsRoutes(c, d, o)...)
	if err := planPrefixes6(c, d, ifaces, o.Held6); err != nil {
		return nil, err
	}
	prefixRules(c, d, &d.Routing)
	slices.SortStableFunc(d.Routing.Rules, func(a, b rules.Rule) int { return a.Priority - b.Priority })
	d.Sysctls, d.LateSysctls = sysctls(d.Links)
	return d, nil
}

// gatewayMACs are the link-layer addresses the neighbour table has for the
// gateways, each once, sorted (a modem often answers both families from
// one). A gateway not resolved yet has none: its packets are then no
// link's until the daemon sees the neighbour entry and re-plans.
func gatewayMACs(ifc rules.Iface, gws ...netip.Addr) []string {
	var out []string
	for _, gw := range gws {
		if mac, ok := ifc.Neighbours[gw]; ok && gw.IsValid() && !slices.Contains(out, mac) {
			out = append(out, mac)
		}
	}
	slices.Sort(out)
	return out
}

// autoGateway picks the next hop of the interface's own default route in
// main, on one of its subnets. A point-to-point interface needs none: its
// peer, when its address names one, is what the link probes by default,
// whether or not main has a default route through it (a second PPP
// session runs with nodefaultroute).
func autoGateway(ifc rules.Iface, v4 []netip.Prefix) netip.Addr {
	for _, gw := range ifc.Gateways {
		for _, a := range v4 {
			if a.Contains(gw) {
				return gw
			}
		}
	}
	if ifc.PointToPoint {
		for _, a := range v4 {
			if p, ok := ifc.Peers[a.Addr()]; ok && p.IsSingleIP() {
				return p.Addr()
			}
		}
	}
	return netip.Addr{}
}

// onLink is the interface's address new flows leave with: the one whose
// subnet holds gw, or whose point-to-point peer prefix does. On a
// point-to-point interface without a gateway it is the first address.
func onLink(ifc rules.Iface, v4 []netip.Prefix, gw netip.Addr) netip.Prefix {
	for _, a := range v4 {
		if gw.IsValid() && a.Contains(gw) {
			return a
		}
	}
	if !ifc.PointToPoint {
		return netip.Prefix{}
	}
	for _, a := range v4 {
		if p, ok := ifc.Peers[a.Addr()]; ok && gw.IsValid() && p.Contains(gw) {
			return a
		}
	}
	if !gw.IsValid() && len(v4) > 0 {
		return v4[0]
	}
	return netip.Prefix{}
}

// peersOf lists an interface's point-to-point peers for an error message.
func peersOf(ifc rules.Iface, v4 []netip.Prefix) string {
	var ps []string
	for _, a := range v4 {
		if p, ok := ifc.Peers[a.Addr()]; ok {
			ps = append(ps, p.String())
		}
	}
	if !ifc.PointToPoint {
		return " (it is not point-to-point)"
	}
	if len(ps) == 0 {
		return " (its addresses name none)"
	}
	return fmt.Sprintf(" (%s)", strings.Join(ps, ", "))
}

// noHost says whether a is the network or the broadcast address of p,
// which no neighbour can have: "network", "broadcast" or "". The kernel
// refuses such a next hop only when the route is added, after flowpin has
// changed other things. A /31 has neither (RFC 3021: both addresses are
// hosts).
func noHost(p netip.Prefix, a netip.Addr) string {
	if !a.Is4() || p.Bits() >= 31 {
		return ""
	}
	if a == p.Masked().Addr() {
		return "network"
	}
	b := a.As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	if binary.BigEndian.Uint32(b[:])&host == host {
		return "broadcast"
	}
	return ""
}

func routing(c *config.Config, d *Desired, ifaces map[string]rules.Iface) rules.State {
	var s rules.State
	if !slices.ContainsFunc(c.Links, config.Link.HasV4) {
		return s // an IPv6-only config leaves IPv4 routing alone
	}
	base := c.PriorityBase
	all4 := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	sources := map[netip.Prefix]bool{}
	for i, l := range d.Links {
		if !l.HasV4() {
			continue
		}
		if !l.Usable {
			continue
		}
		src := netip.PrefixFrom(l.Addr.Addr(), 32)
		// Links on one interface share its address; the first link's
		// source rules would hide a second's, so only it has them.
		if !sources[src] {
			sources[src] = true
			s.Rules = append(s.Rules,
				rules.Rule{Family: rules.V4, Priority: base + OffSourceLocal + i, Src: src, Table: l.Table, SuppressPrefixlen: 0},
				rules.Rule{Family: rules.V4, Priority: base + OffSource + i, Src: src, Table: l.Table, SuppressPrefixlen: -1},
			)
		}
		// The link's own subnet (or its point-to-point peer), so the
		// table alone routes neighbours on it (the gateway, other hosts
		// of a shared subnet). A /32 without a peer has none.
		onlink := l.Addr.Masked()
		if p, ok := ifaces[l.Interface].Peers[l.Addr.Addr()]; ok && l.PointToPoint {
			onlink = p.Masked()
		}
		if onlink.Bits() < 32 || onlink.Addr() != l.Addr.Addr() {
			s.Routes = append(s.Routes, rules.Route{Family: rules.V4, Table: l.Table, Dst: onlink, Dev: l.Interface, Src: l.Addr.Addr(), Scope: rules.ScopeLink})
		}
		s.Routes = append(s.Routes, rules.Route{Family: rules.V4, Table: l.Table, Dst: all4, Gw: l.Via(), Dev: l.Interface, Src: l.Addr.Addr()})
	}
	s.Rules = append(s.Rules, markTree(c, d.Links, rules.V4)...)
	s.Rules = append(s.Rules, skipRules(c, rules.V4)...)
	s.Rules = append(s.Rules,
		rules.Rule{Family: rules.V4, Priority: base + OffMain, Table: MainTable, SuppressPrefixlen: 0},
		rules.Rule{Family: rules.V4, Priority: base + OffBalance, Table: c.BalanceTable, SuppressPrefixlen: -1},
	)
	policyRouting(c, d, &s, rules.V4)
	slices.SortStableFunc(s.Rules, func(a, b rules.Rule) int { return a.Priority - b.Priority })
	return s
}

// MainTable is the kernel's main routing table.
const MainTable = 254

func sysctls(links []LinkPlan) (early, late []rules.Sysctl) {
	if slices.ContainsFunc(links, func(l LinkPlan) bool { return l.HasV4() }) {
		early = sysctls4()
	}
	if slices.ContainsFunc(links, func(l LinkPlan) bool { return l.HasV6() }) {
		// The same 5-tuple hash for IPv6 (fields: addresses, next header,
		// ports; not the flow label, which a host may change mid-flow).
		early = append(early,
			rules.Sysctl{Key: "net/ipv6/fib_multipath_hash_fields", Value: "55"},
			rules.Sysctl{Key: "net/ipv6/fib_multipath_hash_policy", Value: "3"},
		)
	}
	early = append(early, linkSysctls(links)...)
	return early, lateSysctls()
}

func sysctls4() []rules.Sysctl {
	return []rules.Sysctl{
		// Hash on the 5-tuple, so flows between the same two hosts spread
		// over the links (the default hashes addresses only). Policy 3
		// with fields src/dst ip, proto, sport, dport (0x37) rather than
		// policy 1: policy 1 reuses an L4 hash already on the packet (a
		// NIC's RSS hash, a local socket's txhash over veth), which `ip
		// route get` cannot reproduce, so `flowpin explain` could not
		// predict a flow's link. The fields are written first so the
		// policy never runs with the default fields. Kernel >= 5.12.
		{Key: "net/ipv4/fib_multipath_hash_fields", Value: "55"}, // 0x37; reads back in decimal
		{Key: "net/ipv4/fib_multipath_hash_policy", Value: "3"},
		// Skip a nexthop whose neighbour is known dead.
		{Key: "net/ipv4/fib_multipath_use_neigh", Value: "1"},
	}
}

// linkSysctls are the per-interface IPv4 settings of the links that carry
// IPv4.
func linkSysctls(links []LinkPlan) []rules.Sysctl {
	var early []rules.Sysctl
	// Interfaces per subnet: two links on one interface (two modems on
	// one switch) are one interface.
	shared := map[netip.Prefix]int{}
	seen := map[string]bool{}
	for _, l := range links {
		if l.Addr.IsValid() && !seen[l.Interface] {
			seen[l.Interface] = true
			shared[l.Addr.Masked()]++
		}
	}
	done := map[string]bool{}
	for _, l := range links {
		if l.Missing || !l.HasV4() || done[l.Interface] {
			continue // set when the interface appears, and once per interface
		}
		done[l.Interface] = true
		// Loose reverse-path filtering: strict drops replies of flows a
		// mark routed by a link table main would not have chosen.
		early = append(early, rules.Sysctl{Key: "net/ipv4/conf/" + l.Interface + "/rp_filter", Value: "2"})
		if l.Addr.IsValid() && shared[l.Addr.Masked()] > 1 {
			// Two interfaces on one subnet: each answers ARP only for its
			// own address and announces only its own, or the subnet's
			// switch learns one MAC for both (ip-sysctl.rst: arp_ignore, arp_announce).
			early = append(early,
				rules.Sysctl{Key: "net/ipv4/conf/" + l.Interface + "/arp_ignore", Value: "1"},
				rules.Sysctl{Key: "net/ipv4/conf/" + l.Interface + "/arp_announce", Value: "2"},
			)
		}
	}
	return early
}

func lateSysctls() []rules.Sysctl {
	// Per-flow byte and packet counters for `flowpin status`; only flows
	// that start after it is set are counted.
	return []rules.Sysctl{
		{Key: "net/netfilter/nf_conntrack_acct", Value: "1"},
		// Flow start times, for the age column of `status --flows`.
		{Key: "net/netfilter/nf_conntrack_timestamp", Value: "1"},
		// Conntrack events for every flow, so the daemon's flow counts
		// see flows that began while it was not running end. With the
		// default (2) a flow gets events only if a listener existed when
		// it began (nf_ct_ecache_ext_add, net/netfilter/nf_conntrack_ecache.c).
		{Key: "net/netfilter/nf_conntrack_events", Value: "1"},
	}
}

// FullScript is the whole desired state as commands for an empty
// namespace: what an operator would type by hand.
func FullScript(d *Desired) []string { return FullScriptWith(d, d.NFT.Render()) }

// FullScriptWith is FullScript with table as its nft script: one that
// also turns the table found into d's, as apply does (apply.TableScript).
func FullScriptWith(d *Desired, table string) []string {
	var out []string
	for _, s := range d.Sysctls {
		out = append(out, s.Command())
	}
	for _, op := range rules.Diff(rules.State{}, d.Routing) {
		out = append(out, op.Command())
	}
	out = append(out, nft.Script(table))
	for _, s := range d.LateSysctls {
		out = append(out, s.Command())
	}
	return out
}

// Table is a routing table flowpin owns, and whose it is.
type Table struct {
	ID int
	// Link is the index of the link whose table it is; -1 for the
	// balance table and a policy's.
	Link int
	// Owner says whose it is: "balance_table", "link isp1", "policy p".
	Owner string
}

// Tables lists every routing table flowpin owns, in both families: the
// balance table (the default policy's), each link's, then each other
// policy's. It is the one list of them: apply refuses to take a table that
// holds someone else's routes, and verify reports such routes, on the
// same tables.
func (d *Desired) Tables() []Table {
	out := []Table{{ID: d.Policies[0].Table, Link: -1, Owner: "balance_table"}}
	for i, l := range d.Links {
		out = append(out, Table{ID: l.Table, Link: i, Owner: "link " + l.Name})
	}
	for _, p := range d.Policies[1:] {
		out = append(out, Table{ID: p.Table, Link: -1, Owner: "policy " + p.Name})
	}
	return out
}

// String names the table and its owner.
func (t Table) String() string { return fmt.Sprintf("table %d (%s)", t.ID, t.Owner) }

// Multipath lists the links in the multipath route that unmatched new
// flows take (the balance table): the links of the default policy's active
// tier that are in route. A link of a lower tier is usable but on
// standby, and not in it. With v6, the IPv6 route.
func (d *Desired) Multipath(v6 bool) []int {
	if v6 {
		return d.Policies[0].ActiveLinks6(d.Links)
	}
	return d.Policies[0].ActiveLinks(d.Links)
}
