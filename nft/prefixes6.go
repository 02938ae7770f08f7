package nft

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Prefix6 is an IPv6 prefix an ISP routes to the site (a link's
// prefixes6). Its flows are its link's and leave untranslated: no
// traffic rule balances them elsewhere (ip rules send them by the link),
// and masquerade never rewrites them on the link's interface.
type Prefix6 struct {
	Prefix netip.Prefix
	Iface  string // the link's interface
}

// Translate6 maps a down link's prefix 1:1 onto a live link's prefix of
// the same length, for new flows leaving by that link's interface. It is
// conntrack NAT: the mapping is made on a flow's first packet and held in
// its conntrack entry until the flow ends, whatever happens to the rule.
type Translate6 struct {
	From, To netip.Prefix
	Iface    string // the live link's interface
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
func (s Spec) prefixNAT(masq bool) []rule {
	var out []rule
	for _, t := range s.Translate6 {
		first, last := t.To.Masked().Addr(), lastAddr(t.To)
		out = append(out, rule{
			chain: "nat",
			text:  fmt.Sprintf("oifname %q ip6 saddr %s snat ip6 prefix to %s", t.Iface, t.From, t.To),
			why:   "translate " + t.From.String(),
			exprs: join(matchIface(expr.MetaKeyOIFNAME, t.Iface), matchNfproto(ipv6), ip6PrefixIs(8, t.From), []expr.Any{
				&expr.Immediate{Register: 1, Data: first.AsSlice()},
				&expr.Immediate{Register: 2, Data: last.AsSlice()},
				// NF_NAT_RANGE_NETMAP ("prefix"): the source keeps its host
				// bits, mapped into [first, last] (nf_nat_netmap: nft_nat.c).
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV6, RegAddrMin: 1, RegAddrMax: 2, Prefix: true},
			}),
		})
	}
	if !masq {
		return out
	}
	for _, p := range s.Prefixes6 {
		out = append(out, rule{
			chain: "nat",
			text:  fmt.Sprintf("oifname %q ip6 saddr %s accept", p.Iface, p.Prefix),
			why:   "own prefix " + p.Prefix.String(),
			exprs: join(matchIface(expr.MetaKeyOIFNAME, p.Iface), matchNfproto(ipv6), ip6PrefixIs(8, p.Prefix), []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}),
		})
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
