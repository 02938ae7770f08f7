package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"

	"go.yaml.in/yaml/v3"
)

// A link's prefixes6 are the IPv6 prefixes its ISP routes or delegates to
// the site (DHCPv6-PD), from which the LAN hosts take their addresses. A
// flow sourced from one leaves by that link untranslated; while the link
// is down, by a live link, its prefix translated 1:1 onto that link's
// prefix of the same length (the planner's prefixes6.go).
//
//	prefixes6: [2001:db8:1:100::/56]   # given by hand
//	prefixes6: auto                    # the kernel's delegated-prefix routes

// rawPrefixes6 is the key's value: the word auto, or a list of prefixes.
type rawPrefixes6 struct {
	Auto bool
	List []string
	// Set: the key was given (an empty list is refused).
	Set bool
}

// decodeNode takes the word auto or a list (decode.go's nodeDecoder).
func (p *rawPrefixes6) decodeNode(d *decoder, path string, n *yaml.Node) error {
	return d.prefixes6(path, n, p)
}

// MaxPrefixes6 bounds a link's list: each prefix is an ip rule and, while
// a link is down, a NAT rule per live link.
const MaxPrefixes6 = 32

func (d *decoder) prefixes6(path string, n *yaml.Node, out *rawPrefixes6) error {
	out.Set = true
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value != "auto" || quoted(n) {
			return d.errAt(n, path, "%s: want auto or a list of IPv6 prefixes ([2001:db8:1:100::/56])", quote(n.Value))
		}
		out.Auto = true
		return nil
	case yaml.SequenceNode:
		return d.sequence(path, n, reflect.ValueOf(&out.List).Elem(), MaxPrefixes6)
	}
	return d.errAt(n, path, "want auto or a list of IPv6 prefixes, not %s", kindName(n))
}

// fillPrefixes6 takes every link's prefixes6 and checks them against each
// other: a prefix belongs to one link only, or a flow from it could not
// tell which ISP accepts it.
func (c *Config) fillPrefixes6(raws []rawLink) error {
	autoAt := -1
	type owner struct {
		link int
		p    netip.Prefix
	}
	var all []owner
	for i := range raws {
		rp := raws[i].Prefixes6
		if !rp.Set {
			continue
		}
		l := &c.Links[i]
		field := fmt.Sprintf("links[%d].prefixes6", i)
		if !l.HasV6() {
			return c.FieldError(field, "link %s has no gateway6: a flow from its prefixes could leave by no link of its ISP (give gateway6, an address or auto)", quote(l.Name))
		}
		if rp.Auto {
			if autoAt >= 0 {
				// A delegated prefix's route (dhcpcd: `unreachable P dev lo
				// proto dhcp`) names no upstream interface, so with two
				// such links nothing says whose a prefix is.
				return c.FieldError(field, "auto on link %s too (links[%d] has it): the delegated-prefix routes the kernel holds do not say which uplink each came from, so only one link can take them; list the other links' prefixes by hand", quote(l.Name), autoAt)
			}
			autoAt = i
			l.Prefixes6Auto = true
			continue
		}
		if len(rp.List) == 0 {
			return c.FieldError(field, "an empty list: give the link's prefixes, or auto, or leave the key out")
		}
		for j, s := range rp.List {
			f := fmt.Sprintf("%s[%d]", field, j)
			p, err := netip.ParsePrefix(s)
			if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				return c.FieldError(f, "%s is not an IPv6 prefix (like 2001:db8:1:100::/56)", quote(s))
			}
			if why := CheckPrefix6(p); why != "" {
				return c.FieldError(f, "%s %s", p, why)
			}
			if p.Masked() != p {
				return c.FieldError(f, "%s has bits set past its length: the prefix is %s", p, p.Masked())
			}
			for _, o := range all {
				if o.p.Overlaps(p) {
					if o.link == i {
						return c.FieldError(f, "%s overlaps %s, also in this list", p, o.p)
					}
					return c.FieldError(f, "%s overlaps %s of links[%d] (%s): a prefix belongs to the one ISP that routes it to this site", p, o.p, o.link, c.Links[o.link].Name)
				}
			}
			all = append(all, owner{i, p})
			l.Prefixes6 = append(l.Prefixes6, p)
		}
		var lists [][]netip.Prefix
		for _, o := range c.Links[:i+1] {
			lists = append(lists, o.Prefixes6)
		}
		if n := Translate6Bound(lists); n > MaxTranslate6 {
			return c.FieldError(field, "with the links up to here, some of them down would need %d translation rules (each prefix of a down link onto each live link's prefix of its length), more than %d: give fewer links prefixes6, or fewer prefixes (one shorter prefix covers several)", n, MaxTranslate6)
		}
	}
	return nil
}

// MaxTranslate6 bounds the nat chain's translation rules: each rule is
// tried in turn by every new IPv6 flow, and the table is written and read
// back whole on every change of a link. 2450 rules take some 0.7 s to
// apply and 0.14 s to read; 78400 (MaxLinks links with MaxPrefixes6 each,
// half of them down) took 10 s and 2 minutes, and failover stalled.
const MaxTranslate6 = 4096

// Translate6Bound is the most translation rules the links' prefixes
// (lists, one per link) can need at once, whichever links are down: a
// down link's prefix is translated onto one prefix of its length of each
// live link that has one. For each length, with n_i of its prefixes on
// link i, the worst is the links with the most of them down and the rest
// up; the lengths' worsts are added (an upper bound when several lengths
// are in use).
func Translate6Bound(lists [][]netip.Prefix) int {
	byLen := map[int][]int{}
	for _, ps := range lists {
		n := map[int]int{}
		for _, p := range ps {
			n[p.Bits()]++
		}
		for bits, k := range n {
			byLen[bits] = append(byLen[bits], k)
		}
	}
	total := 0
	for _, ns := range byLen {
		slices.SortFunc(ns, func(a, b int) int { return b - a })
		best, down := 0, 0
		for k := 1; k < len(ns); k++ {
			down += ns[k-1]
			best = max(best, down*(len(ns)-k))
		}
		total += best
	}
	return total
}

// CheckPrefix6 says why p cannot be an ISP's prefix for the site, or
// returns "". The planner applies it to prefixes6: auto's finds too.
func CheckPrefix6(p netip.Prefix) string {
	a := p.Addr()
	switch {
	case p.Bits() < 16 || p.Bits() > 64:
		// Sites get a /48 to /64; a longer one cannot hold a LAN's /64,
		// and a shorter one is no site's.
		return "is not a site's prefix: give one of length /16 to /64"
	case a.IsLinkLocalUnicast(), a.IsMulticast(), a.IsLoopback(), a.IsUnspecified():
		return "is not a global unicast prefix"
	case netip.MustParsePrefix("fc00::/7").Overlaps(p):
		// A ULA is no ISP's: its flows leave through NAT66 (nat: true).
		return "is unique-local (fc00::/7), which no ISP routes: a ULA LAN leaves by NAT66 (the link's nat: true)"
	}
	return ""
}

// MarshalYAML writes the key back as it is written: auto, a list, or
// nothing.
func (r rawPrefixes6) MarshalYAML() (any, error) {
	switch {
	case !r.Set:
		return nil, nil
	case r.Auto:
		return "auto", nil
	}
	return r.List, nil
}
