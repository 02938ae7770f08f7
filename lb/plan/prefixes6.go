package plan

import (
	"fmt"
	"net/netip"
	"slices"

	"flowpin/lb/config"
	"flowpin/nft"
	"flowpin/rules"
)

// OffPrefix is the priority of the prefixes6 source rules:
//
//	B+399    from PREFIX lookup T_i
//	         A flow from an ISP's own prefix leaves by that ISP's link:
//	         any other ISP drops it (BCP38 source filtering). After
//	         main's connected and more specific routes (B+300), so the
//	         LAN, other LANs and a VPN in main are still reached from
//	         the prefix; after the mark tree, so a flow pinned elsewhere
//	         (translated while the link was down) stays where it is
//	         until it ends; before B+400, which sends forwarded packets
//	         past the host's own source rules: these are for the LAN's
//	         hosts, whose packets are forwarded. The policies' fwmark
//	         rules before it (B+301..) never see such a flow: the nft
//	         table leaves flows from the prefixes unclassified, so they
//	         carry no policy mark. The 98th policy (the most there can
//	         be) shares this priority; its rule matches a mark these
//	         flows never carry, so their order within it does not
//	         matter. While the link is down (or unusable) the rule is
//	         left out: the flows fall to the balance route (B+500) over
//	         the live links and are translated there (Prefix6Plan).
const OffPrefix = OffSkipSource - 1

// Prefix6Plan is one ISP prefix as planned.
type Prefix6Plan struct {
	Prefix netip.Prefix
	// Link is the index of the link whose prefix it is; Auto: taken from
	// the kernel's delegated-prefix routes (prefixes6: auto).
	Link int
	Auto bool
	// Translated: the link is not taking IPv6 flows (down, or unusable),
	// so new flows from the prefix leave by the live links, translated
	// onto the prefixes in To.
	Translated bool
	To         []Prefix6Map
}

// Prefix6Map is where a down link's prefix is translated to on one live
// link.
type Prefix6Map struct {
	Link   int
	Prefix netip.Prefix
}

// planPrefixes6 works out every link's prefixes (given, or delegated
// ones for auto, with those it held before while it is down) and, for the
// links not taking IPv6 flows, their translations. It runs after the policies, whose IPv6 multipath links
// are those the translated flows can leave by.
func planPrefixes6(c *config.Config, d *Desired, ifaces map[string]rules.Iface, held []netip.Prefix) error {
	var given []netip.Prefix
	for _, l := range c.Links {
		given = append(given, l.Prefixes6...)
	}
	// A prefix must not hold another link's own address: the prefix rule
	// would send that link's own traffic out of the prefix's link.
	holder := func(i int, p netip.Prefix) (string, netip.Addr) {
		for j, o := range d.Links {
			if j == i {
				continue
			}
			for _, a := range o.V6.Addrs {
				if p.Contains(a.Addr()) {
					return o.Name, a.Addr()
				}
			}
		}
		return "", netip.Addr{}
	}
	for i, l := range c.Links {
		for _, p := range l.Prefixes6 {
			if name, a := holder(i, p); name != "" {
				return c.LinkError(i, "prefixes6", "%s holds %s, link %s's own address: flows from that address would leave by link %s", p, a, name, l.Name)
			}
		}
	}
	var delegated []netip.Prefix
	for _, name := range sortedKeys(ifaces) {
		for _, p := range ifaces[name].Delegated {
			if !slices.Contains(delegated, p) {
				delegated = append(delegated, p)
			}
		}
	}
	slices.SortFunc(delegated, netip.Prefix.Compare)
	own := make([][]netip.Prefix, len(d.Links))
	for i, l := range c.Links {
		if l.Prefixes6Auto {
			found := delegated
			if !d.Links[i].V6.InRoute {
				// A DHCPv6-PD client may withdraw its delegation when the
				// uplink fails (dhcpcd on carrier loss), while the LAN's
				// hosts keep the addresses they took from it: those are
				// the flows the translation is for. While the link is
				// down, what it had stays its own.
				found = slices.Clone(delegated)
				for _, p := range held {
					if !slices.Contains(found, p) {
						found = append(found, p)
					}
				}
				slices.SortFunc(found, netip.Prefix.Compare)
			}
			for _, p := range found {
				if why := config.CheckPrefix6(p); why != "" {
					d.Warnings = append(d.Warnings, fmt.Sprintf("link %s: prefixes6: auto leaves out delegated %s, which %s", l.Name, p, why))
					continue
				}
				if name, a := holder(i, p); name != "" {
					d.Warnings = append(d.Warnings, fmt.Sprintf("link %s: prefixes6: auto leaves out delegated %s: it holds %s, link %s's own address", l.Name, p, a, name))
					continue
				}
				if slices.ContainsFunc(given, p.Overlaps) {
					d.Warnings = append(d.Warnings, fmt.Sprintf("link %s: prefixes6: auto leaves out delegated %s: it overlaps another link's prefixes6", l.Name, p))
					continue
				}
				// The kernel's routes are not bounded by the config's
				// checks: the same bounds as for a list given by hand.
				if len(own[i]) >= config.MaxPrefixes6 {
					d.Warnings = append(d.Warnings, fmt.Sprintf("link %s: prefixes6: auto leaves out delegated %s: it takes at most %d prefixes", l.Name, p, config.MaxPrefixes6))
					continue
				}
				lists := [][]netip.Prefix{append(slices.Clone(own[i]), p)}
				for j, o := range c.Links {
					if j != i {
						lists = append(lists, o.Prefixes6)
					}
				}
				if n := config.Translate6Bound(lists); n > config.MaxTranslate6 {
					d.Warnings = append(d.Warnings, fmt.Sprintf("link %s: prefixes6: auto leaves out delegated %s: with it, links down would need %d translation rules, more than %d", l.Name, p, n, config.MaxTranslate6))
					continue
				}
				own[i] = append(own[i], p)
				d.Prefixes6 = append(d.Prefixes6, Prefix6Plan{Prefix: p, Link: i, Auto: true})
			}
			continue
		}
		own[i] = l.Prefixes6
		for _, p := range l.Prefixes6 {
			d.Prefixes6 = append(d.Prefixes6, Prefix6Plan{Prefix: p, Link: i})
		}
	}
	multipath := d.Multipath(true)
	for k := range d.Prefixes6 {
		pp := &d.Prefixes6[k]
		l := d.Links[pp.Link]
		d.NFT.Prefixes6 = append(d.NFT.Prefixes6, nft.Prefix6{Prefix: pp.Prefix, Link: l.Name, Iface: l.Interface, Nexthop6: sharedNexthop6(c, pp.Link, l)})
		if l.V6.InRoute {
			continue
		}
		pp.Translated = true
		for _, j := range multipath {
			o := d.Links[j]
			at := slices.IndexFunc(own[j], func(q netip.Prefix) bool { return q.Bits() == pp.Prefix.Bits() })
			if at < 0 {
				// Prefixes of different lengths cannot map 1:1: the link
				// stays in the route (the route is per destination, not
				// per source), and its flows from the prefix are
				// masqueraded when it has NAT66, else dropped by its ISP.
				fate := "leave untranslated, and its ISP will likely drop them"
				if o.NAT {
					fate = "are masqueraded to its address (nat: true)"
				}
				d.Warnings = append(d.Warnings, fmt.Sprintf("link %s is down: new flows from its %s that leave by link %s %s: %s has no /%d in prefixes6 to translate it to", l.Name, pp.Prefix, o.Name, fate, o.Name, pp.Prefix.Bits()))
				continue
			}
			to := own[j][at]
			pp.To = append(pp.To, Prefix6Map{Link: j, Prefix: to})
			d.NFT.Translate6 = append(d.NFT.Translate6, nft.Translate6{From: pp.Prefix, To: to, Link: o.Name, Iface: o.Interface, Nexthop6: sharedNexthop6(c, j, o)})
		}
		if len(multipath) == 0 {
			d.Warnings = append(d.Warnings, fmt.Sprintf("link %s is down and no other link takes IPv6 flows: its %s has nowhere to go", l.Name, pp.Prefix))
		}
	}
	return nil
}

// sharedNexthop6 is link i's IPv6 next hop when another link shares its
// interface (two modems behind wan0), so the nat chain tells them apart;
// zero otherwise.
func sharedNexthop6(c *config.Config, i int, l LinkPlan) netip.Addr {
	if !c.Shared(i) {
		return netip.Addr{}
	}
	return l.V6.Gateway
}

// prefixRules are the source rules of the prefixes whose links take IPv6
// flows (see OffPrefix).
func prefixRules(c *config.Config, d *Desired, s *rules.State) {
	for _, pp := range d.Prefixes6 {
		if pp.Translated {
			continue
		}
		s.Rules = append(s.Rules, rules.Rule{Family: rules.V6, Priority: c.PriorityBase + OffPrefix, Src: pp.Prefix, Table: d.Links[pp.Link].Table, SuppressPrefixlen: -1})
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
