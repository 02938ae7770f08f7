package plan

import (
	"net/netip"
	"slices"

	"flowpin/lb/config"
	"flowpin/rules"
)

// Resolver is a DNS server of one or more links.
type Resolver struct {
	Addr  netip.Addr
	Links []int // indexes into Config.Links, in config order
}

// Resolvers lists the links' DNS servers in config order: each link's
// dns, or with dns: auto the servers auto[link name] holds (the daemon
// reads them from the lease). A server two links name (a public resolver
// both reach) is listed once, with both.
func Resolvers(c *config.Config, auto map[string][]netip.Addr) []Resolver {
	var out []Resolver
	for i := range c.Links {
		for _, a := range LinkResolvers(c, i, auto) {
			k := slices.IndexFunc(out, func(r Resolver) bool { return r.Addr == a })
			if k < 0 {
				out = append(out, Resolver{Addr: a})
				k = len(out) - 1
			}
			out[k].Links = append(out[k].Links, i)
		}
	}
	return out
}

// LinkResolvers are link i's DNS servers in their order: its dns, or
// with dns: auto those auto holds for it, without those of a family the
// link does not carry and those the config would refuse (a lease may
// hand them out).
func LinkResolvers(c *config.Config, i int, auto map[string][]netip.Addr) []netip.Addr {
	l := c.Links[i]
	servers := l.DNS
	if l.DNSAuto {
		servers = auto[l.Name]
	}
	var out []netip.Addr
	for _, a := range servers {
		if (a.Is4() && !l.HasV4()) || (a.Is6() && !l.HasV6()) || config.BadResolver(a) != "" || slices.Contains(out, a) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// dnsRoutes puts a host route to each link's DNS server, through that
// link, into the balance table, while the link's family is in route. The
// server's queries then leave by the link that handed it out (ISPs answer
// only their own customers, and a query that left by another link would
// fail exactly when that link does), the router's own too: a local
// resolver's query, unmarked and from no link's address, falls through
// the rules to the balance table (the `not iif lo` gotos only skip the
// source rules, which its unbound socket does not match). Routes, not
// rules: they follow the same place in the rule order as every other new
// flow, so a pinned flow keeps its link, main's connected routes (a
// resolver on the LAN) and the traffic rules' policies come first, and
// the layout needs no new block. A server of several links is left to
// the balancing: any of them reaches it.
func dnsRoutes(c *config.Config, d *Desired, o Options) []rules.Route {
	var out []rules.Route
	for _, r := range Resolvers(c, o.DNS) {
		if len(r.Links) != 1 {
			continue
		}
		l := d.Links[r.Links[0]]
		switch {
		case r.Addr.Is4() && l.InRoute:
			out = append(out, rules.Route{Family: rules.V4, Table: c.BalanceTable, Dst: netip.PrefixFrom(r.Addr, 32), Gw: l.Via(), Dev: l.Interface})
		case r.Addr.Is6() && l.V6.InRoute:
			out = append(out, rules.Route{Family: rules.V6, Table: c.BalanceTable, Dst: netip.PrefixFrom(r.Addr, 128), Gw: l.Via6(), Dev: l.Interface})
		}
	}
	return out
}
