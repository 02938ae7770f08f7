package nft

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Prefix6 is an IPv6 prefix an ISP routes to the site (a link's
// prefixes6). Its flows are its link's and leave untranslated: no
// traffic rule balances them elsewhere (ip rules send them by the link),
// and masquerade never rewrites them on the link's interface.
type Prefix6 struct {
	Prefix      netip.Prefix
	Link, Iface string // the link's name and interface
	// Nexthop6 is the link's IPv6 gateway when it shares Iface with
	// another link (Link.Shared): the interface alone does not say which
	// link a packet leaves by, the next hop routing chose does.
	Nexthop6 netip.Addr
}

// Translate6 maps a down link's prefix 1:1 onto a live link's prefix of
// the same length, for new flows leaving by that link's interface. It is
// conntrack NAT: the mapping is made on a flow's first packet and held in
// its conntrack entry until the flow ends, whatever happens to the rule.
type Translate6 struct {
	From, To    netip.Prefix
	Link, Iface string     // the live link's name and interface
	Nexthop6    netip.Addr // as in Prefix6
}

// prefixSkips head the classify chain: a new flow from an ISP's prefix is
// no traffic rule's. A rule sending it to another link's policy would put
// a source only its own ISP accepts on another ISP's wire.
func (s Spec) prefixSkips() []rule {
	if len(s.Classes) == 0 && s.Unmatched == (Action{}) {
		return nil // no classify chain
	}
	var out []rule
	for _, p := range s.Prefixes6 {
		out = append(out, rule{
			chain: "classify",
			text:  fmt.Sprintf("ip6 saddr %s return", p.Prefix),
			why:   "own prefix " + p.Prefix.String(),
			exprs: join(matchNfproto(ipv6), ip6PrefixIs(8, p.Prefix), []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}),
		})
	}
	return out
}

// prefixNAT are the nat chain's rules for the prefixes, before the
// masquerade: the translations of down links' prefixes, then each prefix
// left alone on its own link (accept ends the nat chain for the flow, so
// the masquerade of a link with both a ULA LAN's NAT66 and its own prefix
// never rewrites it). A prefix leaving by a link that has nat: true and
// no prefix of its length is masqueraded, as the ULA is.
func (s Spec) prefixNAT() []rule {
	var out []rule
	for _, t := range s.Translate6 {
		first, last := t.To.Masked().Addr(), lastAddr(t.To)
		via, viaText := leavesBy(t.Iface, t.Nexthop6)
		out = append(out, rule{
			chain: "nat",
			text:  fmt.Sprintf("%s ip6 saddr %s snat ip6 prefix to %s", viaText, t.From, t.To),
			why:   fmt.Sprintf("%s %s to %s on %s", whyTranslate, t.From, t.To, t.Link),
			exprs: join(via, matchNfproto(ipv6), ip6PrefixIs(8, t.From), []expr.Any{
				&expr.Immediate{Register: 1, Data: first.AsSlice()},
				&expr.Immediate{Register: 2, Data: last.AsSlice()},
				// NF_NAT_RANGE_NETMAP ("prefix"): the source keeps its host
				// bits, mapped into [first, last] (nf_nat_netmap: nft_nat.c).
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV6, RegAddrMin: 1, RegAddrMax: 2, Prefix: true},
			}),
		})
	}
	// Without any NAT these change nothing, but they name each prefix's
	// link in the table, where status reads them.
	for _, p := range s.Prefixes6 {
		via, viaText := leavesBy(p.Iface, p.Nexthop6)
		out = append(out, rule{
			chain: "nat",
			text:  fmt.Sprintf("%s ip6 saddr %s accept", viaText, p.Prefix),
			why:   fmt.Sprintf("%s %s of %s", whyOwn, p.Prefix, p.Link),
			exprs: join(via, matchNfproto(ipv6), ip6PrefixIs(8, p.Prefix), []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}),
		})
	}
	return out
}

// leavesBy matches a packet leaving by a link: its interface, and on a
// shared interface the next hop routing chose (`rt ip6 nexthop`, which the
// kernel accepts in a postrouting chain, the nat one included).
func leavesBy(iface string, nexthop6 netip.Addr) ([]expr.Any, string) {
	ex, text := matchIface(expr.MetaKeyOIFNAME, iface), fmt.Sprintf("oifname %q", iface)
	if nexthop6.IsValid() {
		ex = join(ex, nexthop(true), []expr.Any{&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: nexthop6.AsSlice()}})
		text += fmt.Sprintf(" meta nfproto ipv6 rt ip6 nexthop %s", nexthop6)
	}
	return ex, text
}

// The comments of the nat chain's prefix rules, which status reads back.
const (
	whyOwn       = "own prefix"
	whyTranslate = "translate"
)

// AppliedPrefix6 is one ISP prefix as the table holds it: its link, and
// the prefixes it is translated to now (none while its link is up).
type AppliedPrefix6 struct {
	Prefix netip.Prefix
	Link   string
	To     []Translate6 // Iface left empty
}

// Prefixes6 reads the prefixes and their translations back from the nat
// chain's comments, in the table's order.
func (c *Current) Prefixes6() []AppliedPrefix6 {
	var out []AppliedPrefix6
	var trans []Translate6
	for _, cm := range c.Chains["nat"] {
		f := strings.Fields(cm)
		switch {
		case len(f) >= 5 && f[0]+" "+f[1] == whyOwn && f[3] == "of":
			if p, err := netip.ParsePrefix(f[2]); err == nil {
				out = append(out, AppliedPrefix6{Prefix: p, Link: f[4]})
			}
		case len(f) >= 6 && f[0] == whyTranslate && f[2] == "to" && f[4] == "on":
			from, err1 := netip.ParsePrefix(f[1])
			to, err2 := netip.ParsePrefix(f[3])
			if err1 == nil && err2 == nil {
				trans = append(trans, Translate6{From: from, To: to, Link: f[5]})
			}
		}
	}
	for i := range out {
		for _, t := range trans {
			if t.From == out[i].Prefix {
				out[i].To = append(out[i].To, t)
			}
		}
	}
	return out
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As16()
	for i := p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom16(b)
}

// MapAddr is a's address after the 1:1 translation onto to: to's prefix
// bits, a's host bits, as NF_NAT_RANGE_NETMAP maps it.
func MapAddr(a netip.Addr, to netip.Prefix) netip.Addr {
	b, p := a.As16(), to.Masked().Addr().As16()
	for i := range to.Bits() {
		m := byte(0x80 >> (i % 8))
		b[i/8] = b[i/8]&^m | p[i/8]&m
	}
	return netip.AddrFrom16(b)
}
