package nft

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Class is one traffic rule of the config: which new flows it matches and
// what it does with them. Empty selectors match everything.
type Class struct {
	Name string
	// Proto: "", "tcp", "udp" or "icmp" (ICMPv6 for IPv6 flows).
	Proto              string
	Src, Dst           []netip.Prefix
	SrcPorts, DstPorts []PortRange
	IIF                string
	// SrcSet, DstSet name a NamedSet the source or destination is in.
	SrcSet, DstSet string
	Action
	// Sticky, if set, keeps a source on the link it last used through
	// this rule, for this long, if that link is among StickyLinks.
	Sticky      time.Duration
	StickyLinks []string
	// StickyLinks6: the same for IPv6 sources (a link's IPv6 can be down
	// while its IPv4 is up).
	StickyLinks6 []string
}

// stickyLinks are the links a source of family f may be stuck to.
func (c Class) stickyLinks(f family) []string {
	if f.nfproto == unix.NFPROTO_IPV4 {
		return c.StickyLinks
	}
	return c.StickyLinks6
}

// Action is what classification does to a new flow's first packet.
type Action struct {
	// Mark goes on the packet (within the mask): an ip rule routes it
	// by the policy's table.
	Mark uint32
	// CtMark, if set, is also saved as the flow's ct mark, so later
	// packets are restored to it (a flow routed by main, never pinned).
	CtMark uint32
	// Label, if set, is 1 + the ct label bit set on the flow: the daemon
	// finds a policy's flows by it.
	Label int
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// MaxClassElements bounds the set elements the rules expand to (every
// combination of a rule's sources, destinations and ports is one).
const MaxClassElements = 20000

// Registers: the concatenated key of a lookup starts at the first 32-bit
// register (NFT_REG32_00 = 8); each field takes whole registers.
const reg32 = 8

type family struct {
	name      string // nft's word for the family
	nfproto   byte
	addr      nftables.SetDatatype
	addrLen   int
	saddrOff  uint32
	icmpProto byte
}

var (
	ipv4 = family{"ip", unix.NFPROTO_IPV4, nftables.TypeIPAddr, 4, 12, unix.IPPROTO_ICMP}
	ipv6 = family{"ip6", unix.NFPROTO_IPV6, nftables.TypeIP6Addr, 16, 8, unix.IPPROTO_ICMPV6}
)

func (f family) suffix() string {
	if f.nfproto == unix.NFPROTO_IPV4 {
		return "4"
	}
	return "6"
}

// keyType is the classification key: l4proto . saddr . daddr . sport .
// dport, every field a range. A fixed key for every rule keeps all rules
// of a family in as few maps as overlaps allow, and two or more fields
// make the kernel pick its concatenated-range backend (pipapo). The input
// interface is not in the key (a key type holds at most five fields):
// rules with an iif get maps of their own behind an iifname match.
func (f family) keyType() nftables.SetDatatype {
	return nftables.MustConcatSetType(nftables.TypeInetProto, f.addr, f.addr, nftables.TypeInetService, nftables.TypeInetService)
}

func (f family) keyText() string {
	return fmt.Sprintf("inet_proto . %s . %s . inet_service . inet_service", f.addr.Name, f.addr.Name)
}

// field is one dimension of an element: inclusive byte ranges, padded to
// whole registers.
type field struct{ lo, hi []byte }

type element struct {
	fields [6]field
	class  int // index in Spec.Classes
}

func pad4(b []byte) []byte {
	out := make([]byte, (len(b)+3)/4*4)
	copy(out, b)
	return out
}

func (e element) key() (lo, hi []byte) {
	for _, f := range e.fields[:5] {
		lo = append(lo, pad4(f.lo)...)
		hi = append(hi, pad4(f.hi)...)
	}
	return lo, hi
}

func overlaps(a, b element) bool {
	for i := range a.fields {
		if bytes.Compare(a.fields[i].lo, b.fields[i].hi) > 0 || bytes.Compare(b.fields[i].lo, a.fields[i].hi) > 0 {
			return false
		}
	}
	return true
}

func prefixRange(p netip.Prefix) field {
	lo := p.Masked().Addr().AsSlice()
	hi := slices.Clone(lo)
	for i := p.Bits(); i < len(hi)*8; i++ {
		hi[i/8] |= 0x80 >> (i % 8)
	}
	return field{lo, hi}
}

func portRange(r PortRange) field {
	return field{[]byte{byte(r.Lo >> 8), byte(r.Lo)}, []byte{byte(r.Hi >> 8), byte(r.Hi)}}
}

// normPrefixes drops prefixes inside others: a rule's own elements must not
// overlap (the kernel refuses that).
func normPrefixes(ps []netip.Prefix, is4 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() != is4 {
			continue
		}
		p = p.Masked()
		inside := false
		for _, q := range ps {
			if q.Addr().Is4() == is4 && q != p && q.Bits() < p.Bits() && q.Contains(p.Addr()) {
				inside = true
			}
		}
		if !inside && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// normPorts merges overlapping and adjacent ranges.
func normPorts(rs []PortRange) []PortRange {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b PortRange) int { return cmp.Compare(a.Lo, b.Lo) })
	var out []PortRange
	for _, r := range s {
		if n := len(out); n > 0 && uint32(r.Lo) <= uint32(out[n-1].Hi)+1 {
			out[n-1].Hi = max(out[n-1].Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// elements expands class ci into the elements of family f: nil if the
// rule cannot match that family.
func (c Class) elements(ci int, f family) []element {
	is4 := f.nfproto == unix.NFPROTO_IPV4
	src, dst := normPrefixes(c.Src, is4), normPrefixes(c.Dst, is4)
	if (len(c.Src) > 0 && len(src) == 0) || (len(c.Dst) > 0 && len(dst) == 0) {
		return nil // an address selector with none of this family
	}
	all := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if !is4 {
		all = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	if len(src) == 0 {
		src = []netip.Prefix{all}
	}
	if len(dst) == 0 {
		dst = []netip.Prefix{all}
	}
	anyPort := []PortRange{{0, 65535}}
	sp, dp := normPorts(c.SrcPorts), normPorts(c.DstPorts)
	if len(sp) == 0 {
		sp = anyPort
	}
	if len(dp) == 0 {
		dp = anyPort
	}
	proto := field{[]byte{0}, []byte{255}}
	if p := c.protoNum(f); p != 0 {
		proto = field{[]byte{p}, []byte{p}}
	}
	iif := field{make([]byte, 16), bytes.Repeat([]byte{0xff}, 16)}
	if c.IIF != "" {
		iif = field{ifname(c.IIF), ifname(c.IIF)}
	}
	var out []element
	for _, s := range src {
		for _, d := range dst {
			for _, a := range sp {
				for _, b := range dp {
					out = append(out, element{class: ci, fields: [6]field{proto, prefixRange(s), prefixRange(d), portRange(a), portRange(b), iif}})
				}
			}
		}
	}
	return out
}

func (c Class) protoNum(f family) byte {
	switch c.Proto {
	case "tcp":
		return unix.IPPROTO_TCP
	case "udp":
		return unix.IPPROTO_UDP
	case "icmp":
		return f.icmpProto
	}
	return 0
}

// group is one verdict map: elements that do not overlap each other, all
// with the same input interface ("": any).
type group struct {
	name  string
	iif   string
	elems []element
	// srcSet, dstSet: the named sets the rules of the map match, looked
	// up before the map: one lookup per set, not an element per address.
	srcSet, dstSet string
}

// guard is what a group's rule tests before its map: the input interface
// and the named sets.
type guard struct{ iif, srcSet, dstSet string }

// groups lays the rules of family f out in maps. A rule goes into the
// layer after the last one holding a rule it overlaps, so the layers,
// looked up in order, give the first matching rule; rules that do not
// overlap share a layer, so 200 disjoint rules are one lookup. A layer is
// one map per input interface and named sets its rules name. A rule with
// a set overlaps what its other selectors overlap, as if the set held
// every address, so a later rule it may shadow comes in a later layer.
func (s Spec) groups(f family) []group {
	var layers [][]element
	for ci, c := range s.Classes {
		es := c.elements(ci, f)
		if len(es) == 0 {
			continue
		}
		at := 0
		for li := len(layers) - 1; li >= 0 && at == 0; li-- {
			for _, g := range layers[li] {
				if slices.ContainsFunc(es, func(e element) bool { return overlaps(e, g) }) {
					at = li + 1
					break
				}
			}
		}
		if at == len(layers) {
			layers = append(layers, nil)
		}
		layers[at] = append(layers[at], es...)
	}
	var gs []group
	for _, layer := range layers {
		var keys []guard
		byGuard := map[guard][]element{}
		for _, e := range layer {
			c := s.Classes[e.class]
			k := guard{srcSet: c.SrcSet, dstSet: c.DstSet}
			if bytes.Equal(e.fields[5].lo, e.fields[5].hi) {
				k.iif = strings.TrimRight(string(e.fields[5].lo), "\x00")
			}
			if _, ok := byGuard[k]; !ok {
				keys = append(keys, k)
			}
			byGuard[k] = append(byGuard[k], e)
		}
		for _, k := range keys {
			gs = append(gs, group{name: fmt.Sprintf("rules%s_%d", f.suffix(), len(gs)), iif: k.iif, srcSet: k.srcSet, dstSet: k.dstSet, elems: byGuard[k]})
		}
	}
	return gs
}

// ClassElements counts the set elements the rules expand to.
func (s Spec) ClassElements() int {
	n := 0
	for ci, c := range s.Classes {
		n += len(c.elements(ci, ipv4)) + len(c.elements(ci, ipv6))
	}
	return n
}

func ruleChain(name string) string { return "rule_" + name }

// setDef is a set of the table: a classification map (rebuilt on every
// apply) or a sticky set (filled by packets, kept across applies).
type setDef struct {
	set   *nftables.Set
	elems []nftables.SetElement
	text  string
	// decl declares the set without its elements (nft syntax, between
	// the braces), for Render's flush of a refilled set.
	decl string
	// refill: emptied and filled anew by every apply (a map of the
	// plan); otherwise kept with what packets or resolvers put in it (a
	// sticky set, a domain set).
	refill bool
	// digest, of a file set: its elements' (see setsChain).
	digest string
	// carried: the elements a set that is made anew had (carryElements).
	carried []nftables.SetElement
	// lazyText, if set, makes text when Render needs it (a file set's).
	lazyText func() string
}

// families are the address families, in the order of a layout's groups.
var families = [2]family{ipv4, ipv6}

// setsOf are the sets of the table: the maps of the groups gs (one slice
// per family), then the sticky sets.
func (s Spec) setsOf(gs [2][]group) []setDef {
	var out []setDef
	for fi, f := range families {
		for _, g := range gs[fi] {
			set := &nftables.Set{Name: g.name, KeyType: f.keyType(), DataType: nftables.TypeVerdict, IsMap: true, Interval: true, Concatenation: true}
			var elems []nftables.SetElement
			var texts []string
			for _, e := range g.elems {
				lo, hi := e.key()
				chain := ruleChain(s.Classes[e.class].Name)
				elems = append(elems, nftables.SetElement{Key: lo, KeyEnd: hi, VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}})
				texts = append(texts, e.text(f)+" : goto "+chain)
			}
			text := fmt.Sprintf("map %s {\n\t\ttype %s : verdict\n\t\tflags interval\n\t\telements = { %s }\n\t}", g.name, f.keyText(), strings.Join(texts, ",\n\t\t\t     "))
			decl := fmt.Sprintf("type %s : verdict; flags interval;", f.keyText())
			out = append(out, setDef{set: set, elems: elems, text: text, decl: decl, refill: true})
		}
	}
	out = append(out, s.stickySets()...)
	return out
}

func (e element) text(f family) string {
	rng := func(lo, hi string) string {
		if lo == hi {
			return lo
		}
		return lo + "-" + hi
	}
	p := rng(fmt.Sprint(e.fields[0].lo[0]), fmt.Sprint(e.fields[0].hi[0]))
	addr := func(fl field) string {
		a, _ := netip.AddrFromSlice(fl.lo)
		b, _ := netip.AddrFromSlice(fl.hi)
		if pfx, ok := rangePrefix(a, b); ok {
			return pfx.String()
		}
		return rng(a.String(), b.String())
	}
	port := func(fl field) string {
		return rng(fmt.Sprint(int(fl.lo[0])<<8|int(fl.lo[1])), fmt.Sprint(int(fl.hi[0])<<8|int(fl.hi[1])))
	}
	return strings.Join([]string{p, addr(e.fields[1]), addr(e.fields[2]), port(e.fields[3]), port(e.fields[4])}, " . ")
}

// rangePrefix says whether [a, b] is exactly one prefix.
func rangePrefix(a, b netip.Addr) (netip.Prefix, bool) {
	for bits := 0; bits <= a.BitLen(); bits++ {
		p := netip.PrefixFrom(a, bits).Masked()
		if p.Addr() == a && prefixRangeEnd(p) == b {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func prefixRangeEnd(p netip.Prefix) netip.Addr {
	a, _ := netip.AddrFromSlice(prefixRange(p).hi)
	return a
}

// loadKey loads a packet's classification key into the registers from
// reg32 on, in keyType's order.
func loadKey(f family) []expr.Any {
	r := uint32(reg32)
	al := uint32(f.addrLen)
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r},
		&expr.Payload{DestRegister: r + 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: al},
		&expr.Payload{DestRegister: r + 1 + al/4, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff + al, Len: al},
		&expr.Payload{DestRegister: r + 1 + 2*al/4, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Payload{DestRegister: r + 2 + 2*al/4, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
	return out
}

func nfprotoName(f family) string {
	if f.nfproto == unix.NFPROTO_IPV4 {
		return "ipv4"
	}
	return "ipv6"
}

func matchNfproto(f family) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.nfproto}},
	}
}

// digest names the content of the maps in the rule that looks them up, so
// a changed element changes the rule's comment and the table is rewritten.
func digest(text string) string {
	sum := sha256.Sum256([]byte(text))
	return hex.EncodeToString(sum[:6])
}

// classifyRulesOf are the rules of the classify chain, the per-rule
// chains and the sticky recording in postrouting, for the groups gs and
// their sets.
func (s Spec) classifyRulesOf(gs [2][]group, setDefs []setDef) []rule {
	if len(s.Classes) == 0 && s.Unmatched == (Action{}) {
		return nil
	}
	var out []rule
	sets := map[string]string{}
	for _, d := range setDefs {
		sets[d.set.Name] = d.text
	}
	for fi, f := range families {
		for _, g := range gs[fi] {
			text := fmt.Sprintf("meta nfproto %s ", nfprotoName(f))
			ex := matchNfproto(f)
			if g.iif != "" {
				text += fmt.Sprintf("iifname %q ", g.iif)
				ex = join(ex, matchIface(expr.MetaKeyIIFNAME, g.iif))
			}
			if g.srcSet != "" {
				text += fmt.Sprintf("%s saddr @%s ", f.name, SetName(g.srcSet, f == ipv6))
				ex = join(ex, addrInSet(f, true, SetName(g.srcSet, f == ipv6)))
			}
			if g.dstSet != "" {
				text += fmt.Sprintf("%s daddr @%s ", f.name, SetName(g.dstSet, f == ipv6))
				ex = join(ex, addrInSet(f, false, SetName(g.dstSet, f == ipv6)))
			}
			out = append(out, rule{
				chain: "classify",
				text:  text + fmt.Sprintf("meta l4proto . %s saddr . %s daddr . th sport . th dport vmap @%s", f.name, f.name, g.name),
				why:   "rules " + g.name + " " + digest(sets[g.name]),
				exprs: join(ex, loadKey(f), []expr.Any{&expr.Lookup{SourceRegister: reg32, SetName: g.name, DestRegister: 0, IsDestRegSet: true}}),
			})
		}
	}
	if s.Unmatched != (Action{}) {
		// The unmatched policy's flows need its failback label too
		// (only unmatched packets get here: the vmap verdicts are gotos).
		if s.Unmatched.Label != 0 {
			out = append(out, labelRule("classify", s.Unmatched.Label))
		}
		t, ex := s.actionRule(s.Unmatched)
		out = append(out, rule{chain: "classify", text: t, why: "unmatched", exprs: ex})
	}
	for _, c := range s.Classes {
		ch := ruleChain(c.Name)
		out = append(out, rule{chain: ch, text: "counter", why: "rule " + c.Name, exprs: []expr.Any{&expr.Counter{}}})
		if c.Label != 0 {
			out = append(out, labelRule(ch, c.Label))
		}
		out = append(out, s.stuckRules(ch, c)...)
		t, ex := s.actionRule(c.Action)
		out = append(out, rule{chain: ch, text: t, why: "policy of " + c.Name, exprs: ex})
	}
	// Postrouting: a new flow of a sticky rule that went out by a link
	// records its source against that link (the rule's mark sends it
	// here: stickyElems). With no link to stick to (every link of its
	// policy's active tier down) there is nothing to record.
	for _, c := range s.stickyClasses() {
		out = append(out, s.recordStuck("sticky_"+c.Name, c)...)
	}
	return out
}

// stickyClasses are the rules whose new flows are recorded in
// postrouting: sticky, with a link to stick to, and the first of any
// that share a mark (a map holds a key once).
func (s Spec) stickyClasses() []Class {
	var out []Class
	for _, c := range s.Classes {
		if c.Sticky == 0 || len(c.StickyLinks)+len(c.StickyLinks6) == 0 {
			continue
		}
		if slices.ContainsFunc(out, func(o Class) bool { return o.Mark == c.Mark }) {
			continue
		}
		out = append(out, c)
	}
	return out
}

// stickyElems send a sticky rule's new flow, by the mark classification
// gave it, to its recording chain: one lookup whatever the number of
// rules.
func (s Spec) stickyElems() []vmapElem {
	var out []vmapElem
	for _, c := range s.stickyClasses() {
		out = append(out, vmapElem{le(c.Mark), hexm(c.Mark), expr.VerdictGoto, "sticky_" + c.Name})
	}
	return out
}

func nftDuration(d time.Duration) string {
	if d%time.Hour == 0 {
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	if d%time.Minute == 0 {
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d/time.Millisecond)
}

func (s Spec) linkMark(name string) uint32 {
	for _, l := range s.Links {
		if l.Name == name {
			return l.Mark
		}
	}
	return 0
}

// actionRule marks a new flow's packet for its policy's table.
func (s Spec) actionRule(a Action) (string, []expr.Any) {
	text := fmt.Sprintf("meta mark set meta mark & %s | %s", hexm(^s.Mask), hexm(a.Mark))
	ex := setMarkBits(false, s.Mask, a.Mark)
	if a.CtMark != 0 {
		text += fmt.Sprintf(" ct mark set ct mark & %s | %s", hexm(^s.Mask), hexm(a.CtMark))
		ex = join(ex, setMarkBits(true, s.Mask, a.CtMark))
	}
	return text, ex
}

// labelRule sets ct label bit a.Label-1 (nf_connlabels_replace ORs the
// given bits in: other labels stay).
func labelRule(chain string, label int) rule {
	bit := label - 1
	v := make([]byte, 16)
	v[bit/8] = 1 << (bit % 8)
	return rule{
		chain: chain,
		text:  fmt.Sprintf("ct label set %d", bit),
		why:   fmt.Sprintf("label %d", bit),
		exprs: []expr.Any{
			&expr.Immediate{Register: 1, Data: v},
			&expr.Ct{Register: 1, Key: expr.CtKeyLABELS, SourceRegister: true},
		},
	}
}

// v6ExemptChain holds v6Exempt's rules, jumped to from the head of every
// base chain for IPv6 packets only: an IPv4 packet passes one rule.
const v6ExemptChain = "v6_exempt"

// v6Exempt are the rules, run first in every base chain, that let IPv6's own
// machinery through untouched: link-local and multicast traffic, neighbour
// discovery and router advertisements (which also reach global
// addresses), and DHCPv6. Marking them would route them by a link's table
// or pin them to a link; NAT would rewrite addresses that only mean
// something on one wire. None of it is ever balanced.
func v6Exempt() []rule {
	const chain = v6ExemptChain
	ll := netip.MustParsePrefix("fe80::/10")
	mc := netip.MustParsePrefix("ff00::/8")
	// Accept ends the base chain that jumped here, as a return from it
	// would.
	ret := &expr.Verdict{Kind: expr.VerdictAccept}
	return []rule{
		{chain: chain, text: "ip6 saddr fe80::/10 accept", why: "link-local source", exprs: join(matchNfproto(ipv6), ip6PrefixIs(8, ll), []expr.Any{ret})},
		{chain: chain, text: "ip6 daddr fe80::/10 accept", why: "link-local destination", exprs: join(matchNfproto(ipv6), ip6PrefixIs(24, ll), []expr.Any{ret})},
		{chain: chain, text: "ip6 daddr ff00::/8 accept", why: "multicast", exprs: join(matchNfproto(ipv6), ip6PrefixIs(24, mc), []expr.Any{ret})},
		{chain: chain, text: "icmpv6 type 133-137 accept", why: "neighbour discovery", exprs: join(matchNfproto(ipv6), l4Range(unix.IPPROTO_ICMPV6, 0, []byte{133}, []byte{137}), []expr.Any{ret})},
		{chain: chain, text: "meta nfproto ipv6 udp dport 546-547 accept", why: "dhcpv6", exprs: join(matchNfproto(ipv6), l4Range(unix.IPPROTO_UDP, 2, []byte{0x02, 0x22}, []byte{0x02, 0x23}), []expr.Any{ret})},
	}
}

// ip6PrefixIs: the IPv6 address at network header offset off is in p.
func ip6PrefixIs(off uint32, p netip.Prefix) []expr.Any {
	mask := make([]byte, 16)
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 16},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: mask, Xor: make([]byte, 16)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
	}
}

// l4Range: the protocol is proto and the transport header bytes at off
// are within [lo, hi].
func l4Range(proto byte, off uint32, lo, hi []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: uint32(len(lo))},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: lo, ToData: hi},
	}
}
