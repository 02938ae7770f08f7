// Package nft manages the one nftables table flowpin owns, `inet flowpin`:
// the chains that save a flow's link mark into its conntrack entry and
// restore it onto later packets, and the per-link masquerade. The table is
// built from a Spec and replaced in one transaction.
package nft

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TableName is the table flowpin owns. Family inet, so the same chains
// carry IPv4 and IPv6.
const TableName = "flowpin"

// Link is what the table needs to know about one uplink.
type Link struct {
	Name  string
	Iface string
	Mark  uint32
	NAT   bool
	// NATSource, if valid, is the address the link's new flows of its
	// family are SNATed to instead of masqueraded (nat_source).
	NATSource netip.Addr
	// Shared: another link uses Iface too (two modems on one switch
	// behind wan0), so the interface alone does not say which link a
	// packet takes. A new flow leaving by Iface is the link's if routing
	// chose its next hop (Nexthop, Nexthop6: the link's gateways, zero
	// for a family it does not carry); a packet arriving on Iface is the
	// link's if it comes from one of MACs, its gateways' link-layer
	// addresses.
	Shared   bool
	Nexthop  netip.Addr
	Nexthop6 netip.Addr
	MACs     []string
}

// Spec is the whole table.
type Spec struct {
	Mask  uint32
	Links []Link
	// Records are kept in the table as rule comments in the "state"
	// chain (see Records).
	Records Records
	// Classes are the traffic rules, in order: the first that matches a
	// new flow decides its policy.
	Classes []Class
	// Unmatched is what a new flow no rule matches gets. Zero: nothing,
	// and the catch-all ip rule routes it.
	Unmatched Action
	// Bypass, if set, is the ct mark of flows routed by main: restored
	// onto their packets like a link's.
	Bypass uint32
	// Main, if set, is the mark that routes a packet by main. A forwarded
	// packet of an established flow without a link's mark gets it: a
	// flow from before apply goes on where main sent it before flowpin
	// (see unpinnedRule).
	Main uint32
	// V6: some link carries IPv6; IPv6's own machinery is exempted.
	V6 bool
	// Prefixes6 are the ISPs' own prefixes, Translate6 the mappings of
	// down links' prefixes (prefixes6.go).
	Prefixes6  []Prefix6
	Translate6 []Translate6
	// Sets are the named address sets the classes match, and those no
	// class uses (a resolver may fill them all the same).
	Sets []NamedSet
	// Recheck names file sets (by SetName) whose elements Apply lists
	// and compares with the spec's, and writes again if they differ
	// (FileSetDrift). The rest are taken as written: listing a 100k-range
	// set costs a tenth of a second or more.
	Recheck []string
	// Guard: drop TCP packets that would start a flow without a SYN (an
	// HA pair's takeover; guardRule).
	Guard bool
}

type chainDef struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	prio     *nftables.ChainPriority
	hookText string // as nft writes it
}

// The chains, in the order they are written.
var chains = []chainDef{
	// Mangle (-150) runs after conntrack (-200), so ct mark is there, and
	// before the routing decision, so a restored mark picks the table.
	{"prerouting", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityMangle, "type filter hook prerouting priority mangle; policy accept;"},
	// Locally generated packets: a route chain re-routes when the mark
	// changes.
	{"output", nftables.ChainTypeRoute, nftables.ChainHookOutput, nftables.ChainPriorityMangle, "type route hook output priority mangle; policy accept;"},
	// The save: a nat-type chain, which the kernel runs for a flow's first
	// packet only (nf_nat_inet_fn, net/netfilter/nf_nat_core.c, calls the
	// nat chains while a new flow has no NAT binding), so an established
	// packet does not pass it at all. That is the only packet a save
	// needs: it pins a flow whose ct mark holds no link. At mangle
	// priority it runs before any chain at srcnat that binds a NAT and
	// ends the walk (flowpin's own "nat" chain included), and after the
	// routing decision, so oifname and rt nexthop are the link's.
	{"postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityMangle, "type nat hook postrouting priority mangle; policy accept;"},
	{"nat", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, "type nat hook postrouting priority srcnat; policy accept;"},
	{"state", "", nil, nil, ""},
}

// layout is a Spec worked out once: its sets, its rules in order, and
// its chains. Laying out the traffic rules compares every rule with the
// others, so it is done once per operation, not once per question.
type layout struct {
	sets   []setDef
	rules  []rule
	chains []chainDef
}

func (s Spec) layout() layout {
	gs := [2][]group{s.groups(ipv4), s.groups(ipv6)}
	var l layout
	l.sets = append(s.linkMaps(), s.setsOf(gs)...)
	l.sets = append(l.sets, s.namedSetDefs()...)
	l.rules = s.rulesOf(gs, l.sets)
	l.chains = chainDefsOf(l.rules, l.sets)
	return l
}

// chainDefsOf are the chains of a table: the base chains, then the
// regular chains that hold rules or that a rule or a map element jumps
// to. A chain is declared because something refers to it, not only
// because it has rules: the kernel refuses a whole batch with a jump to a
// chain that does not exist (ENOENT), and an empty regular chain simply
// returns.
func chainDefsOf(rules []rule, sets []setDef) []chainDef {
	out := slices.Clone(chains)
	seen := map[string]bool{}
	for _, c := range chains {
		seen[c.name] = true
	}
	add := func(name string) {
		if name != "" && !seen[name] {
			seen[name] = true
			out = append(out, chainDef{name: name})
		}
	}
	for _, r := range rules {
		add(r.chain)
		for _, e := range r.exprs {
			if v, ok := e.(*expr.Verdict); ok {
				add(v.Chain)
			}
		}
	}
	for _, d := range sets {
		for _, e := range d.elems {
			if e.VerdictData != nil {
				add(e.VerdictData.Chain)
			}
		}
	}
	return out
}

// rule is one rule both as nft text and as expressions, built from the
// same values so the two cannot disagree.
type rule struct {
	chain string
	text  string
	why   string
	exprs []expr.Any
	// record rules carry their text as the whole comment.
	record bool
}

func (r rule) comment() string {
	if r.record {
		return r.why
	}
	sum := sha256.Sum256([]byte(r.chain + "\x00" + r.text))
	return r.why + " #" + hex.EncodeToString(sum[:4])
}

func le(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

// matchIface: meta iifname/oifname == name.
func matchIface(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
	}
}

// ctMarkIs: ct mark & mask == v.
func ctMarkIs(mask, v uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le(mask), Xor: le(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: le(v)},
	}
}

// setMarkBits: X = (X & ^mask) ^ v, for X the ct mark or the packet mark.
// nft cannot OR two registers, so each link gets its own constant; bits
// outside the mask pass through untouched.
func setMarkBits(ct bool, mask, v uint32) []expr.Any {
	var load, store expr.Any
	if ct {
		load = &expr.Ct{Register: 1, Key: expr.CtKeyMARK}
		store = &expr.Ct{Register: 1, Key: expr.CtKeyMARK, SourceRegister: true}
	} else {
		load = &expr.Meta{Register: 1, Key: expr.MetaKeyMARK}
		store = &expr.Meta{Register: 1, Key: expr.MetaKeyMARK, SourceRegister: true}
	}
	return []expr.Any{load, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le(^mask), Xor: le(v)}, store}
}

func hexm(v uint32) string { return fmt.Sprintf("0x%08x", v) }

func join(parts ...[]expr.Any) []expr.Any { return slices.Concat(parts...) }

// counter counts the packets and bytes a rule matches: on a link's
// save, restore and from rules these are its traffic (Counters).
func counter() []expr.Any { return []expr.Any{&expr.Counter{}} }

// saveRule pins a flow to link l: in the link's own chain, which the
// verdict maps send only the link's packets to.
func saveRule(chain string, mask uint32, l Link) rule {
	return rule{
		chain: chain,
		text: fmt.Sprintf("ct mark & %s == 0x00000000 counter ct mark set ct mark & %s | %s",
			hexm(mask), hexm(^mask), hexm(l.Mark)),
		why:   "save " + l.Name,
		exprs: join(ctMarkIs(mask, 0), counter(), setMarkBits(true, mask, l.Mark)),
	}
}

// restoreRule puts link l's mark on a packet of a flow pinned to it: in
// the link's own chain, which a ct mark lookup sends only those packets
// to.
func restoreRule(chain string, mask uint32, l Link) rule {
	return rule{
		chain: chain,
		text:  fmt.Sprintf("counter meta mark set meta mark & %s | %s", hexm(^mask), hexm(l.Mark)),
		why:   "restore " + l.Name,
		exprs: join(counter(), setMarkBits(false, mask, l.Mark)),
	}
}

// The chains a link's packets are sent to by the verdict maps, one per
// link and purpose. Each holds the link's counters, so that what status
// reads is counted where the packet is, whatever the number of links
// (Counters names them after the base chain they serve). The prefixes are
// none a prefix of another, nor of the classification chains' (rule_,
// sticky_), nor of stuck_ (sticky.go), so no two links' or rules' names
// can make the same chain.
const (
	fromPrefix    = "from_"    // prerouting: arrived on the link
	restorePrefix = "restore_" // prerouting: forwarded, restored to the link
	outputPrefix  = "output_"  // output: the box's own, restored to the link
	pinPrefix     = "pin_"     // prerouting: a pinned flow's packet, arrived or to restore
	savePrefix    = "save_"    // postrouting: left by the link
	// A shared interface's chains: an interface's vmap element can name
	// only one chain, so where links share one, its chain picks the link.
	iifPrefix = "iif_"
	oifPrefix = "oif_"
)

// counterBase is the base chain whose packets a chain's counters count,
// "" for a chain whose counters are not the links' traffic.
func counterBase(chain string) string {
	switch {
	case chain == "prerouting" || chain == "output" || chain == "postrouting":
		return chain
	case strings.HasPrefix(chain, fromPrefix), strings.HasPrefix(chain, restorePrefix):
		return "prerouting"
	case strings.HasPrefix(chain, outputPrefix):
		return "output"
	case strings.HasPrefix(chain, savePrefix):
		return "postrouting"
	}
	return ""
}

// The maps that send a packet to its link's chain in one lookup.
const (
	mapIIF       = "by_iif"        // iifname : goto from_LINK
	mapOIF       = "by_oif"        // oifname : jump save_LINK
	mapPinned    = "by_ctmark"     // ct mark & mask : goto pin_LINK
	mapPinnedOut = "by_ctmark_out" // ct mark & mask : goto output_LINK
	mapSticky    = "by_mark"       // meta mark & mask : goto sticky_RULE
	setNAT       = "nat_oif"       // the interfaces whose links all have NAT
	setNATMark   = "nat_mark"      // the marks of links with NAT on an interface with others without
	// A shared interface's maps, one each per interface: which of its
	// links a packet is, in one lookup whatever the number of links.
	mapMAC      = "by_mac_"      // ether saddr : goto from_LINK
	mapNexthop  = "by_nexthop_"  // rt ip nexthop : goto save_LINK
	mapNexthop6 = "by_nexthop6_" // rt ip6 nexthop : goto save_LINK
)

// ifaceLinks groups the links by interface, in the order the interfaces
// first appear: the links of one interface in config order.
func (s Spec) ifaceLinks() (ifaces []string, by map[string][]Link) {
	by = map[string][]Link{}
	for _, l := range s.Links {
		if _, ok := by[l.Iface]; !ok {
			ifaces = append(ifaces, l.Iface)
		}
		by[l.Iface] = append(by[l.Iface], l)
	}
	return ifaces, by
}

// linkMaps are the verdict maps and the NAT set of the links (the maps
// of the traffic rules are setsOf's).
func (s Spec) linkMaps() []setDef {
	if len(s.Links) == 0 {
		return nil
	}
	ifaces, by := s.ifaceLinks()
	var iif, oif []vmapElem
	var nat []string
	for _, name := range ifaces {
		ls := by[name]
		in, out := fromPrefix+ls[0].Name, savePrefix+ls[0].Name
		if len(ls) > 1 {
			in, out = iifPrefix+name, oifPrefix+name
		}
		iif = append(iif, vmapElem{ifname(name), fmt.Sprintf("%q", name), expr.VerdictGoto, in})
		oif = append(oif, vmapElem{ifname(name), fmt.Sprintf("%q", name), expr.VerdictJump, out})
		if !slices.ContainsFunc(ls, func(l Link) bool { return !l.NAT }) {
			nat = append(nat, name)
		}
	}
	var pinned, pinnedOut []vmapElem
	for _, l := range s.pinLinks() {
		pinned = append(pinned, vmapElem{le(l.Mark), hexm(l.Mark), expr.VerdictGoto, pinPrefix + l.Name})
		pinnedOut = append(pinnedOut, vmapElem{le(l.Mark), hexm(l.Mark), expr.VerdictGoto, outputPrefix + l.Name})
	}
	out := []setDef{
		vmap(mapIIF, nftables.TypeIFName, iif),
		vmap(mapOIF, nftables.TypeIFName, oif),
		vmap(mapPinned, nftables.TypeMark, pinned),
		vmap(mapPinnedOut, nftables.TypeMark, pinnedOut),
	}
	if st := s.stickyElems(); len(st) > 0 {
		out = append(out, vmap(mapSticky, nftables.TypeMark, st))
	}
	if st := s.stuckElems(); len(st) > 0 {
		out = append(out, vmap(mapStuck, nftables.TypeMark, st))
	}
	for _, name := range ifaces {
		if ls := by[name]; len(ls) > 1 {
			out = append(out, sharedMaps(name, ls)...)
		}
	}
	if m := s.natMarks(); len(m) > 0 {
		out = append(out, m...)
	}
	out = append(out, s.natSourceMaps()...)
	if len(nat) > 0 {
		d := setDef{
			set:    &nftables.Set{Name: setNAT, KeyType: nftables.TypeIFName, KeyByteOrder: keyOrder(nftables.TypeIFName)},
			decl:   "type ifname;",
			refill: true,
		}
		var texts []string
		for _, n := range nat {
			d.elems = append(d.elems, nftables.SetElement{Key: ifname(n)})
			texts = append(texts, fmt.Sprintf("%q", n))
		}
		d.text = fmt.Sprintf("set %s {\n\t\ttype ifname\n\t\telements = { %s }\n\t}", setNAT, strings.Join(texts, ", "))
		out = append(out, d)
	}
	return out
}

// natMarks is the set of the marks of the links with NAT on an interface
// where some other link has none (a modem that NATs beside one that
// routes the LAN's addresses): the interface does not say whether to
// masquerade, the flow's link does. The nat chain sees only a flow's
// first packet, after postrouting's save (at mangle priority) pinned it by its next
// hop, so its ct mark already names the link it leaves by.
func (s Spec) natMarks() []setDef {
	ifaces, by := s.ifaceLinks()
	var marks []uint32
	for _, name := range ifaces {
		ls := by[name]
		if !slices.ContainsFunc(ls, func(l Link) bool { return !l.NAT }) {
			continue
		}
		for _, l := range ls {
			if l.NAT {
				marks = append(marks, l.Mark)
			}
		}
	}
	if len(marks) == 0 {
		return nil
	}
	d := setDef{
		set:    &nftables.Set{Name: setNATMark, KeyType: nftables.TypeMark, KeyByteOrder: keyOrder(nftables.TypeMark)},
		decl:   "type mark;",
		refill: true,
	}
	var texts []string
	for _, m := range marks {
		d.elems = append(d.elems, nftables.SetElement{Key: le(m)})
		texts = append(texts, hexm(m))
	}
	d.text = fmt.Sprintf("set %s {\n\t\ttype mark\n\t\telements = { %s }\n\t}", setNATMark, strings.Join(texts, ", "))
	return []setDef{d}
}

// sharedMaps are the maps that tell apart the links of interface name,
// which they share: by the link-layer address a packet arrived from (its
// gateways', from the neighbour table) and by the next hop routing chose
// for a packet leaving. A map with no elements is left out, and so is the
// rule that would look it up (a gateway not resolved yet).
func sharedMaps(name string, ls []Link) []setDef {
	var macs, nh4, nh6 []vmapElem
	for _, l := range ls {
		for _, m := range l.MACs {
			mac, err := net.ParseMAC(m)
			if err != nil || len(mac) != 6 {
				continue
			}
			macs = append(macs, vmapElem{mac, mac.String(), expr.VerdictGoto, fromPrefix + l.Name})
		}
		if l.Nexthop.Is4() {
			nh4 = append(nh4, vmapElem{l.Nexthop.AsSlice(), l.Nexthop.String(), expr.VerdictGoto, savePrefix + l.Name})
		}
		if l.Nexthop6.Is6() {
			nh6 = append(nh6, vmapElem{l.Nexthop6.AsSlice(), l.Nexthop6.String(), expr.VerdictGoto, savePrefix + l.Name})
		}
	}
	var out []setDef
	if len(macs) > 0 {
		out = append(out, vmap(mapMAC+name, nftables.TypeEtherAddr, macs))
	}
	if len(nh4) > 0 {
		out = append(out, vmap(mapNexthop+name, nftables.TypeIPAddr, nh4))
	}
	if len(nh6) > 0 {
		out = append(out, vmap(mapNexthop6+name, nftables.TypeIP6Addr, nh6))
	}
	return out
}

// pinLinks are the links a ct mark pins a flow to, and main's bypass
// mark as a link of its own ("main").
func (s Spec) pinLinks() []Link {
	ls := slices.Clone(s.Links)
	if s.Bypass != 0 {
		ls = append(ls, Link{Name: "main", Mark: s.Bypass})
	}
	// Two links with one mark are a config error caught earlier; a map
	// refuses a duplicate key, so the first keeps it, as the first of
	// two restore rules did.
	var out []Link
	for _, l := range ls {
		if !slices.ContainsFunc(out, func(o Link) bool { return o.Mark == l.Mark }) {
			out = append(out, l)
		}
	}
	return out
}

type vmapElem struct {
	key   []byte
	text  string
	kind  expr.VerdictKind
	chain string
}

// keyOrder is the byte order a set's key is declared with, for `nft list`
// only: the kernel compares raw bytes, but nft reads the order from the
// set's user data and, for a host-order type declared without it, prints
// an interface name as "" and mark 0x100 as 0x00010000 (nft's datatype.c:
// ifname and mark are BYTEORDER_HOST_ENDIAN types).
func keyOrder(key nftables.SetDatatype) binaryutil.ByteOrder {
	switch key.Name {
	case nftables.TypeIFName.Name, nftables.TypeMark.Name:
		return binaryutil.NativeEndian
	}
	return nil
}

func vmap(name string, key nftables.SetDatatype, es []vmapElem) setDef {
	d := setDef{
		set:    &nftables.Set{Name: name, KeyType: key, KeyByteOrder: keyOrder(key), DataType: nftables.TypeVerdict, IsMap: true},
		decl:   fmt.Sprintf("type %s : verdict;", key.Name),
		refill: true,
	}
	var texts []string
	for _, e := range es {
		d.elems = append(d.elems, nftables.SetElement{Key: e.key, VerdictData: &expr.Verdict{Kind: e.kind, Chain: e.chain}})
		verb := "goto"
		if e.kind == expr.VerdictJump {
			verb = "jump"
		}
		texts = append(texts, fmt.Sprintf("%s : %s %s", e.text, verb, e.chain))
	}
	elems := ""
	if len(texts) > 0 {
		elems = fmt.Sprintf("\n\t\telements = { %s }", strings.Join(texts, ",\n\t\t\t     "))
	}
	d.text = fmt.Sprintf("map %s {\n\t\ttype %s : verdict%s\n\t}", name, key.Name, elems)
	return d
}

// vmapRule looks up the key the exprs load into register 1 in map m and
// takes its verdict; no element, no verdict: the next rule. The comment
// carries a digest of the map, so a changed element rewrites the table.
func vmapRule(chain, why, keyText string, key []expr.Any, m setDef) rule {
	return rule{
		chain: chain,
		text:  fmt.Sprintf("%s vmap @%s", keyText, m.set.Name),
		why:   why + " " + digest(m.text),
		exprs: join(key, []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: m.set.Name, DestRegister: 0, IsDestRegSet: true}}),
	}
}

func maskedMark(ct bool, mask uint32) []expr.Any {
	var load expr.Any = &expr.Meta{Key: expr.MetaKeyMARK, Register: 1}
	if ct {
		load = &expr.Ct{Register: 1, Key: expr.CtKeyMARK}
	}
	return []expr.Any{load, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le(mask), Xor: le(0)}}
}

// foreignRule: a packet that already carries a mark inside the mask is
// left alone: another program set it (a VPN's socket sets SO_MARK so that
// its own ip rule matches its encrypted packets), and rewriting its bits
// would route them into the tunnel they carry.
func foreignRule(chain string, mask uint32) rule {
	return rule{
		chain: chain,
		text:  fmt.Sprintf("meta mark & %s != 0x00000000 return", hexm(mask)),
		why:   "foreign mark",
		exprs: join(maskedMark(false, mask), []expr.Any{
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: le(0)},
			&expr.Verdict{Kind: expr.VerdictReturn},
		}),
	}
}

// restoreAndClassify: the restore of a pinned flow's link, one lookup of
// its ct mark whatever the number of links (the link's chain ends the
// base chain: goto), a packet with a foreign mark left alone
// (foreignRule), and the classification of a new flow's first packet.
// In output the foreign check comes first. In prerouting the lookup does:
// a pinned flow's packet that arrived from a link is counted by the link
// whatever its mark (its pin chain sends it to the link's from chain, as
// the interface lookup after it does for a flow not pinned yet), and one
// to restore meets the check in its restore chain.
func (s Spec) restoreAndClassify(chain string, pinned setDef, unpinned ...rule) []rule {
	var out []rule
	if chain != "prerouting" {
		out = append(out, foreignRule(chain, s.Mask))
	}
	if len(pinned.elems) > 0 {
		out = append(out, vmapRule(chain, "links by ct mark", fmt.Sprintf("ct mark & %s", hexm(s.Mask)), maskedMark(true, s.Mask), pinned))
	}
	out = append(out, unpinned...)
	if chain == "prerouting" {
		out = append(out, foreignRule(chain, s.Mask))
	}
	if chain == "prerouting" && s.Main != 0 {
		out = append(out, s.unpinnedRule(chain))
	}
	if len(s.Classes) > 0 || s.Unmatched != (Action{}) {
		out = append(out, rule{
			chain: chain,
			text:  fmt.Sprintf("ct mark & %s == 0x00000000 ct state new jump classify", hexm(s.Mask)),
			why:   "classify",
			exprs: join(ctMarkIs(s.Mask, 0), []expr.Any{
				&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le(expr.CtStateBitNEW), Xor: le(0)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: le(0)},
				&expr.Verdict{Kind: expr.VerdictJump, Chain: "classify"},
			}),
		})
	}
	return out
}

// unpinnedRule routes a forwarded packet of an established flow that has
// no link by main, where such a flow went before flowpin: a flow from
// before apply. By the balance route it could move to another link, where
// its NAT binding (or a modem's) does not exist and it dies. Its first
// reply from a link pins it to that link (the interface lookup before
// this rule; on a shared interface, by the modem's link-layer address),
// which is the link main sent it by, the one its NAT binding is on. The
// save as it leaves cannot do it: postrouting is a nat-type chain, which
// an established packet does not pass. Until then, or for a flow that
// never gets a reply from a link, main routes it, every packet, as
// before flowpin. Pinned packets never get here (their ct mark took them
// to their link's chain), and an established flow without a link is rare
// (traffic between the LAN and a VPN): they pay one rule. The router's
// own flows are left to the source rules, which route them by the link of
// their address as before.
func (s Spec) unpinnedRule(chain string) rule {
	return rule{
		chain: chain,
		text: fmt.Sprintf("ct mark & %s == 0x00000000 ct state established meta mark set meta mark & %s | %s return",
			hexm(s.Mask), hexm(^s.Mask), hexm(s.Main)),
		why: "unpinned to main",
		exprs: join(ctMarkIs(s.Mask, 0), []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le(expr.CtStateBitESTABLISHED), Xor: le(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: le(0)},
		}, setMarkBits(false, s.Mask, s.Main), []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}),
	}
}

// pinRules are the rules of link l's pin chain, where prerouting's one
// ct mark lookup sends every packet of a flow pinned to l, from either
// side. A packet that arrived from a link is not restored (its link's
// chain counts it; main routes it to the LAN); any other is. Telling the
// two apart by a lookup of the interface costs every packet a second
// hash lookup, so the common cases are told by comparisons first:
//   - arrived on l's own interface: from l (a reply, or an inbound flow);
//   - the flow's original direction and a source NAT binding: a flow from
//     the LAN (or the box) that left by a NATed link, on its way out. An
//     inbound flow has its link's address as destination, not a source
//     NAT, so it does not match here even when a packet of it arrives by
//     another link;
//   - anything else (a flow without NAT: routed prefixes, IPv6 without
//     NAT66; the replies of a port forward's server; a reply that arrived
//     by another link): the interface lookup, as before.
//
// A forwarded packet of a NATed flow so passes one hash lookup in all, as
// does a reply on its own link, whatever the number of links.
func (s Spec) pinRules(l Link, byName map[string]setDef) []rule {
	chain, restore := pinPrefix+l.Name, restorePrefix+l.Name
	var out []rule
	if l.Iface != "" {
		_, by := s.ifaceLinks()
		from := fromPrefix + l.Name
		if len(by[l.Iface]) > 1 {
			from = iifPrefix + l.Iface
		}
		out = append(out, rule{
			chain: chain,
			text:  fmt.Sprintf("iifname %q goto %s", l.Iface, from),
			why:   "arrived on " + l.Iface,
			exprs: join(matchIface(expr.MetaKeyIIFNAME, l.Iface), []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: from}}),
		})
	}
	out = append(out, rule{
		chain: chain,
		text:  "ct direction original ct status snat goto " + restore,
		why:   "leaving, nat",
		exprs: join(ctOriginal(), []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le(ipsSrcNAT), Xor: le(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: le(0)},
			&expr.Verdict{Kind: expr.VerdictGoto, Chain: restore},
		}),
	})
	if m, ok := byName[mapIIF]; ok {
		out = append(out, vmapRule(chain, "links by iif", "iifname", []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}}, m))
	}
	out = append(out, rule{
		chain: chain,
		text:  "goto " + restore,
		why:   "restore",
		exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: restore}},
	})
	return out
}

// ipsSrcNAT is IPS_SRC_NAT of enum ip_conntrack_status
// (include/uapi/linux/netfilter/nf_conntrack_common.h): the flow has a
// source NAT binding, set when its first packet was masqueraded.
const ipsSrcNAT = 1 << 4

// linkChains are the rules of the links' own chains.
func (s Spec) linkChains(byName map[string]setDef) []rule {
	var out []rule
	for _, l := range s.Links {
		// Arrived on the link. A flow seen for the first time there is
		// pinned to it (inbound connections, port forwards). Its mark is
		// NOT restored onto the packet: replies from a WAN must be routed
		// by main towards the LAN, and a link table has no LAN route, so
		// every such connection would hang in SYN_RECV.
		from := fromPrefix + l.Name
		out = append(out,
			saveRule(from, s.Mask, l),
			rule{chain: from, text: "counter", why: "from " + l.Name, exprs: counter()},
		)
		// Left by the link: a flow leaving by a link for the first time
		// is pinned to it.
		out = append(out, saveRule(savePrefix+l.Name, s.Mask, l))
	}
	for _, l := range s.pinLinks() {
		out = append(out, s.pinRules(l, byName)...)
		out = append(out, foreignRule(restorePrefix+l.Name, s.Mask), restoreRule(restorePrefix+l.Name, s.Mask, l), restoreRule(outputPrefix+l.Name, s.Mask, l))
	}
	out = append(out, s.stuckChains()...)
	ifaces, by := s.ifaceLinks()
	for _, name := range ifaces {
		if len(by[name]) > 1 {
			out = append(out, sharedChains(name, s.Mask, byName)...)
		}
	}
	return out
}

// sharedChains are the rules of the chains of interface name, which
// several links share (two modems on one switch behind wan0), so the
// interface alone does not say which link a packet is.
//
// Arriving: the link is the one whose gateway sent the packet, by its
// link-layer address (a port forward, or the first reply of a flow from
// before apply, which is so pinned to the modem that has it, never to the
// one the hash would pick now). Any other sender (a gateway not in the
// neighbour table yet, another host on the segment) is no link's: the
// packet ends prerouting unmarked, as on any link, so that nothing from a
// WAN is routed by a link mark.
//
// Leaving: a flow without a link, in its original direction, is pinned
// to the link whose gateway routing chose as next hop: a new flow, or one
// from before apply (which prerouting sends by main, the way it went
// before). A reply (of a flow that arrived by a link, or from another
// sender) is never pinned by its route, nor is a flow pinned already. A
// pinned packet passes one lookup or two rules that fail at their first
// test, whatever the number of links.
func sharedChains(name string, mask uint32, byName map[string]setDef) []rule {
	var out []rule
	iif, oif := iifPrefix+name, oifPrefix+name
	if m, ok := byName[mapMAC+name]; ok {
		out = append(out, vmapRule(iif, "links by mac", "ether saddr", etherSaddr(), m))
	}
	out = append(out, rule{chain: iif, text: "return", why: "from " + name + " (another sender)",
		exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}})
	for _, f := range []struct{ set, fam string }{{mapNexthop, "ip"}, {mapNexthop6, "ip6"}} {
		m, ok := byName[f.set+name]
		if !ok {
			continue
		}
		out = append(out, vmapRule(oif, "links by nexthop", fmt.Sprintf("ct mark & %s == 0x00000000 ct direction original rt %s nexthop", hexm(mask), f.fam),
			join(ctMarkIs(mask, 0), ctOriginal(), nexthop(f.fam == "ip6")), m))
	}
	return out
}

// etherSaddr loads the source link-layer address into register 1. Only an
// Ethernet header has one there; nft adds the same `meta iiftype ether`
// test in an inet table.
func etherSaddr() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_ETHER)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
	}
}

// nexthop loads the next hop routing chose (`rt ip nexthop`, `rt ip6
// nexthop`) into register 1, after the family test nft adds in an inet
// table.
func nexthop(v6 bool) []expr.Any {
	proto, key := byte(unix.NFPROTO_IPV4), expr.RtNexthop4
	if v6 {
		proto, key = unix.NFPROTO_IPV6, expr.RtNexthop6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Rt{Register: 1, Key: key},
	}
}

// ctOriginal: ct direction original, the way the flow's first packet
// went.
func ctOriginal() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeyDIRECTION},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}}, // IP_CT_DIR_ORIGINAL
	}
}

// rulesOf lists every rule of the table in order, for the groups gs of
// the traffic rules and the table's sets. A packet of an established
// flow passes a fixed number of rules in every chain, whatever the number
// of links, policies and traffic rules: what depends on a link or a rule
// is an element of a map, found in one lookup.
func (s Spec) rulesOf(gs [2][]group, sets []setDef) []rule {
	var out []rule
	byName := map[string]setDef{}
	for _, d := range sets {
		byName[d.set.Name] = d
	}
	if s.Guard {
		out = append(out, guardRule())
	}
	if s.V6 {
		out = append(out, v6Exempt()...)
		for _, ch := range []string{"prerouting", "output", "postrouting", "nat"} {
			out = append(out, rule{
				chain: ch,
				text:  "meta nfproto ipv6 jump " + v6ExemptChain,
				why:   "ipv6 machinery",
				exprs: join(matchNfproto(ipv6), []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: v6ExemptChain}}),
			})
		}
	}
	// Prerouting. A packet arriving on a link goes to its link's chain
	// and no further (goto). Everything else (the LAN side, forwarded
	// replies of inbound flows) takes its flow's link mark, so the fwmark
	// rule routes it by the link; the first packet of a new flow is
	// classified by the traffic rules.
	var iif []rule
	if m, ok := byName[mapIIF]; ok {
		iif = append(iif, vmapRule("prerouting", "links by iif", "iifname", []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}}, m))
	}
	out = append(out, s.restoreAndClassify("prerouting", byName[mapPinned], iif...)...)
	// Local output: the same, re-routed by the route chain. Except the
	// router's own ICMP errors travelling back to a flow's originator
	// (conntrack relates them to the flow, in its reply direction): for a
	// flow from the LAN that is the LAN, which a link table cannot reach,
	// so with the flow's mark a "packet too big" or "fragmentation needed"
	// would leave by the WAN and path MTU discovery would break. Unmarked,
	// main routes them to the LAN, and an error about a connection to a
	// link's own address has that address as source and leaves by its
	// source rule. (nf_conntrack_inet_error, net/netfilter/nf_conntrack_proto_icmp.c:
	// IP_CT_RELATED_REPLY is given to ICMP errors only.)
	out = append(out, rule{
		chain: "output",
		text:  "ct state related ct direction reply return",
		why:   "own icmp errors",
		exprs: []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le(expr.CtStateBitRELATED), Xor: le(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: le(0)},
			&expr.Ct{Register: 1, Key: expr.CtKeyDIRECTION},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}}, // IP_CT_DIR_REPLY
			&expr.Verdict{Kind: expr.VerdictReturn},
		},
	})
	out = append(out, s.restoreAndClassify("output", byName[mapPinnedOut])...)
	// Postrouting: runs before srcnat, after the routing decision. The
	// link's chain saves a new flow's link and returns (jump), so that a
	// sticky rule's new flow is then recorded against it.
	if m, ok := byName[mapOIF]; ok {
		out = append(out, vmapRule("postrouting", "links by oif", "oifname", []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}}, m))
	}
	if m, ok := byName[mapSticky]; ok {
		out = append(out, vmapRule("postrouting", "sticky rules", fmt.Sprintf("meta mark & %s", hexm(s.Mask)), maskedMark(false, s.Mask), m))
	}
	_, masq := byName[setNAT]
	out = append(out, s.prefixNAT()...)
	out = append(out, natSourceRules(byName)...)
	// NAT: one set of the interfaces, looked up once per new flow.
	if masq {
		out = append(out, rule{
			chain: "nat",
			text:  fmt.Sprintf("oifname @%s masquerade", setNAT),
			why:   "nat " + digest(byName[setNAT].text),
			exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Lookup{SourceRegister: 1, SetName: setNAT},
				&expr.Masq{},
			},
		})
	}
	// NAT by link, where the interface does not decide it: one lookup,
	// also per new flow.
	if m, ok := byName[setNATMark]; ok {
		out = append(out, rule{
			chain: "nat",
			text:  fmt.Sprintf("ct mark & %s @%s masquerade", hexm(s.Mask), setNATMark),
			why:   "nat by link " + digest(m.text),
			exprs: join(maskedMark(true, s.Mask), []expr.Any{
				&expr.Lookup{SourceRegister: 1, SetName: setNATMark},
				&expr.Masq{},
			}),
		})
	}
	out = append(out, s.linkChains(byName)...)
	out = append(out, s.prefixSkips()...)
	out = append(out, s.classifyRulesOf(gs, sets)...)
	out = append(out, s.namedSetRules(byName)...)
	for _, rec := range s.Records.Encode() {
		out = append(out, rule{
			chain:  "state",
			text:   fmt.Sprintf("counter comment %q", rec),
			why:    rec,
			record: true,
			exprs:  []expr.Any{&expr.Counter{}},
		})
	}
	return out
}

// Render returns the table as an nft script that creates or replaces it
// atomically (`nft -f`).
func (s Spec) Render() string { return s.layout().render(nil) }

// render is the script that turns the table cur (nil: none, or any)
// into l, as queue's batch does.
func (l layout) render(cur *Current) string {
	var b strings.Builder
	fmt.Fprintf(&b, "add table inet %s\nflush table inet %s\n", TableName, TableName)
	remade := l.renderRemoved(&b, cur)
	// `flush table` empties the chains, not the sets: a map of the plan
	// is emptied here (created first if missing) and filled below, or an
	// element that changed its verdict would be refused as existing.
	for _, d := range l.sets {
		if d.refill && !remade[d.set.Name] {
			kind := "set"
			if d.set.IsMap {
				kind = "map"
			}
			fmt.Fprintf(&b, "add %s inet %s %s { %s }\nflush %s inet %s %s\n", kind, TableName, d.set.Name, d.decl, kind, TableName, d.set.Name)
		}
	}
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, d := range l.sets {
		text := d.text
		if d.lazyText != nil {
			text = d.lazyText()
		}
		if remade[d.set.Name] && len(d.carried) > 0 {
			text = withElements(text, d.carried)
		}
		fmt.Fprintf(&b, "\t%s\n", text)
	}
	rs := l.rules
	for _, c := range l.chains {
		fmt.Fprintf(&b, "\tchain %s {\n", c.name)
		if c.hookText != "" {
			fmt.Fprintf(&b, "\t\t%s\n", c.hookText)
		}
		for _, r := range rs {
			if r.chain != c.name {
				continue
			}
			if r.record {
				fmt.Fprintf(&b, "\t\t%s\n", r.text)
			} else {
				fmt.Fprintf(&b, "\t\t%s comment %q\n", r.text, r.comment())
			}
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// recordRules are the rules of the state chain that hold records.
func recordRules(records Records) []rule {
	var out []rule
	for _, r := range (Spec{Records: records}).layout().rules {
		if r.record {
			out = append(out, r)
		}
	}
	return out
}

// RenderRecords is the nft script that replaces only the records, as
// Conn.Record does; no other chain is touched. (A missing table is
// created with all its chains, empty.)
func RenderRecords(records Records) string {
	var b strings.Builder
	fmt.Fprintf(&b, "add table inet %s\nadd chain inet %s state\nflush chain inet %s state\n", TableName, TableName, TableName)
	for _, r := range recordRules(records) {
		fmt.Fprintf(&b, "add rule inet %s state %s\n", TableName, r.text)
	}
	return b.String()
}

// Current is the table as Read would find it once spec is applied, for
// fakes and tests.
func (s Spec) Current() *Current {
	cur := &Current{Exists: true, Chains: map[string][]string{}, hooks: map[string]string{}, kinds: map[string]string{}}
	l := s.layout()
	for _, d := range l.sets {
		cur.Sets = append(cur.Sets, d.set.Name)
		cur.kinds[d.set.Name] = setKind(d.set)
	}
	for _, c := range l.chains {
		cur.Chains[c.name] = []string{}
		cur.hooks[c.name] = hookKey(c.typ, c.hook, c.prio)
	}
	for _, r := range l.rules {
		cur.Chains[r.chain] = append(cur.Chains[r.chain], r.comment())
	}
	cur.Records = DecodeRecords(cur.Chains["state"])
	return cur
}

// Conn talks nftables in the caller's network namespace.
type Conn struct {
	// Writes counts committed transactions.
	Writes int
	// LastBatch is the size in bytes of the last table Apply sent.
	LastBatch int
}

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// Current is the table as found in the kernel.
type Current struct {
	Exists bool
	// Chains maps a chain name to its rules' comments, in order.
	Chains map[string][]string
	hooks  map[string]string
	// Records are the state chain's comments, decoded.
	Records Records
	// Sets are the names of the table's sets and maps.
	Sets []string
	// kinds: each set's type, flags and timeout (setKind).
	kinds map[string]string
	// drifted: file sets whose elements differ from the spec's (Recheck).
	drifted map[string]bool
}

// Read lists the owned table. A missing table is not an error.
func (c *Conn) Read() (*Current, error) {
	// The read is several requests: a table deleted or rewritten by
	// another program between two of them makes a later one fail with
	// ENOENT (a chain or the table gone). That is no fault of the kernel
	// but a read that saw two states: read again, and the next read sees
	// one (the table as it is now, or none). The library formats the
	// errors of its listings with %v, so the errno cannot be told
	// (errors.Is): any failed read is tried again, a few times.
	for try := 1; ; try++ {
		cur, err := c.readOnce()
		if err != nil && try < readTries {
			continue
		}
		return cur, err
	}
}

// readTries bounds Read's retries of a read that raced a change.
const readTries = 5

func (c *Conn) readOnce() (*Current, error) {
	// A fresh Conn per operation: a failed batch leaves an error stuck on
	// the Conn, and the library keeps it for every later Flush.
	// One socket for the whole read: a table of 1000 traffic rules has
	// over 1000 chains, each listed by a request of its own, and a socket
	// per request made the read some 30% slower.
	nc, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	defer nc.CloseLasting()
	cur := &Current{Chains: map[string][]string{}, hooks: map[string]string{}, kinds: map[string]string{}}
	t, err := nc.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return cur, nil
		}
		return nil, fmt.Errorf("list table inet %s: %w", TableName, err)
	}
	cur.Exists = true
	chs, err := nc.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chs {
		if ch.Table.Name != TableName {
			continue
		}
		cur.hooks[ch.Name] = hookKey(ch.Type, ch.Hooknum, ch.Priority)
		rs, err := nc.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		comments := []string{}
		for _, r := range rs {
			cm, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			comments = append(comments, cm)
		}
		cur.Chains[ch.Name] = comments
	}
	cur.Records = DecodeRecords(cur.Chains["state"])
	sets, err := nc.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	for _, st := range sets {
		cur.Sets = append(cur.Sets, st.Name)
		cur.kinds[st.Name] = setKind(st)
	}
	return cur, nil
}

func hookKey(t nftables.ChainType, h *nftables.ChainHook, p *nftables.ChainPriority) string {
	k := string(t)
	if h != nil {
		k += fmt.Sprintf("/%d", *h)
	}
	if p != nil {
		k += fmt.Sprintf("/%d", *p)
	}
	return k
}

// UpToDate reports whether cur already is spec.
func (s Spec) UpToDate(cur *Current) bool { return s.layout().upToDate(cur) }

func (l layout) upToDate(cur *Current) bool {
	defs := l.chains
	if !cur.Exists || len(cur.Chains) != len(defs) {
		return false
	}
	var sets []string
	for _, d := range l.sets {
		sets = append(sets, d.set.Name)
	}
	if !slices.Equal(slices.Sorted(slices.Values(sets)), slices.Sorted(slices.Values(cur.Sets))) {
		return false
	}
	for _, d := range l.sets {
		if cur.kinds != nil && cur.kinds[d.set.Name] != setKind(d.set) || cur.drifted[d.set.Name] {
			return false
		}
	}
	want := map[string][]string{}
	for _, c := range defs {
		want[c.name] = []string{}
		if cur.hooks[c.name] != hookKey(c.typ, c.hook, c.prio) {
			return false
		}
	}
	for _, r := range l.rules {
		want[r.chain] = append(want[r.chain], r.comment())
	}
	for name, cm := range want {
		if !slices.Equal(cur.Chains[name], cm) {
			return false
		}
	}
	return true
}

// Apply makes the table match spec in one transaction, and only if it
// differs. It returns whether it wrote.
func (c *Conn) Apply(s Spec) (bool, error) {
	cur, err := c.Read()
	if err != nil {
		return false, err
	}
	l := s.layout()
	if err := c.recheck(l, s, cur); err != nil {
		return false, err
	}
	if l.upToDate(cur) {
		return false, nil
	}
	if err := l.carryElements(cur); err != nil {
		return false, err
	}
	c.Writes++
	size, err := commit(func(nc *nftables.Conn) error { return l.queue(nc, cur) })
	c.LastBatch = size
	if err != nil {
		// The kernel commits or rejects a batch whole, but an error on the
		// acks (ENOBUFS) comes after the commit: ask the kernel which.
		if after, rerr := c.Read(); rerr == nil && l.upToDate(after) {
			return true, nil
		}
		return false, fmt.Errorf("replace table inet %s: %w", TableName, err)
	}
	return true, nil
}

// queue adds to nc the one transaction that turns the table cur into l.
func (l layout) queue(nc *nftables.Conn, cur *Current) error {
	t := nc.AddTable(table())
	defs := l.chains
	sets := l.sets
	have := map[string]bool{}
	for _, name := range cur.Sets {
		have[name] = true
	}
	if cur.Exists {
		// Flush and refill in the same batch: no packet sees a half state.
		// The sticky sets are kept with what packets put in them; the
		// rule maps are emptied and refilled; sets and chains no longer
		// wanted go once nothing refers to them.
		nc.FlushTable(t)
		wanted := map[string]setDef{}
		for _, d := range sets {
			wanted[d.set.Name] = d
		}
		for _, name := range cur.Sets {
			st := &nftables.Set{Table: t, Name: name}
			d, ok := wanted[name]
			switch {
			case !ok:
				nc.DelSet(st)
			case cur.kinds != nil && cur.kinds[name] != setKind(d.set):
				// Another type, flags or timeout: the kernel keeps an
				// existing set as it is, so it is made anew (a domain
				// set with the elements it had: carryElements).
				nc.DelSet(st)
				have[name] = false
			case d.unchanged(cur):
				// A file set as it is: 100k elements are not rewritten
				// because a link went down.
				have[name] = true
			case d.refill:
				nc.FlushSet(st)
			}
		}
		for name, hk := range cur.hooks {
			keep := false
			for _, cd := range defs {
				if cd.name == name && hookKey(cd.typ, cd.hook, cd.prio) == hk {
					keep = true
				}
			}
			if !keep {
				nc.DelChain(&nftables.Chain{Name: name, Table: t})
			}
		}
	}
	byName := map[string]*nftables.Chain{}
	for _, cd := range defs {
		ch := &nftables.Chain{Name: cd.name, Table: t, Type: cd.typ, Hooknum: cd.hook, Priority: cd.prio}
		if cd.hook != nil {
			pol := nftables.ChainPolicyAccept
			ch.Policy = &pol
		}
		byName[cd.name] = nc.AddChain(ch)
	}
	for _, d := range sets {
		// A copy: the library writes its batch-local id into the set, and
		// the layout is queued more than once.
		set := *d.set
		set.Table = t
		elems := d.elems
		if have[set.Name] && d.unchanged(cur) {
			elems = nil
		}
		if !have[set.Name] && d.carried != nil {
			elems = d.carried
		}
		chunks := elemChunks(elems)
		if !have[set.Name] {
			var first []nftables.SetElement
			if len(chunks) > 0 {
				first, chunks = chunks[0], chunks[1:]
			}
			if err := nc.AddSet(&set, first); err != nil {
				return fmt.Errorf("set %s: %w", d.set.Name, err)
			}
		}
		for _, c := range chunks {
			if err := nc.SetAddElements(&set, c); err != nil {
				return fmt.Errorf("set %s: %w", d.set.Name, err)
			}
		}
	}
	for _, r := range l.rules {
		nc.AddRule(&nftables.Rule{
			Table:    t,
			Chain:    byName[r.chain],
			Exprs:    r.exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment()),
		})
	}
	return nil
}

// A netlink attribute's length is 16 bits, and a set's elements travel
// in one attribute of their message: more than 64 KiB of them (some 600
// classification elements) and the library wraps the length silently, so
// the kernel takes only the first few hundred elements, or refuses the
// batch. The nft command splits them over several messages too (libnftnl,
// nftnl_set_elems_nlmsg_build_payload_iter); elemChunks does, with room
// to spare: elemBytes is more than an element's encoding (nested key, key
// end and verdict, each with its attribute headers).
const maxElemBytes = 32 << 10

func elemBytes(e nftables.SetElement) int {
	n := 64 + len(e.Key) + len(e.KeyEnd) + len(e.Val)
	if e.VerdictData != nil {
		n += len(e.VerdictData.Chain)
	}
	return n
}

func elemChunks(es []nftables.SetElement) [][]nftables.SetElement {
	var out [][]nftables.SetElement
	start, size := 0, 0
	for i, e := range es {
		if n := elemBytes(e); size+n > maxElemBytes && i > start {
			out = append(out, es[start:i])
			start, size = i, 0
		}
		size += elemBytes(e)
	}
	if start < len(es) {
		out = append(out, es[start:])
	}
	return out
}

// commit sends what queue adds as one batch, on a socket sized for it.
// It returns the batch's size in bytes.
func commit(queue func(*nftables.Conn) error) (int, error) {
	size, msgs, err := measure(queue)
	if err != nil {
		return size, err
	}
	nc, err := nftables.New(nftables.WithSockOptions(batchBuffers(size, msgs)))
	if err != nil {
		return size, fmt.Errorf("nftables: %w", err)
	}
	if err := queue(nc); err != nil {
		return size, err
	}
	return size, nc.Flush()
}

// measure is the size in bytes and the number of messages of the batch
// queue makes, marshalled by the library as it would be sent (a dry run
// against a recording socket). The library keeps its queue to itself.
func measure(queue func(*nftables.Conn) error) (size, msgs int, err error) {
	tooLong := 0
	nc, err := nftables.New(nftables.WithTestDial(func(req []mdnetlink.Message) ([]mdnetlink.Message, error) {
		for _, m := range req {
			if len(m.Data) > math.MaxUint16 {
				// Only a single attribute this long makes a message this
				// long here, and its length has wrapped.
				tooLong = max(tooLong, len(m.Data))
			}
			size += nlmsgAlign(unix.NLMSG_HDRLEN + len(m.Data))
			msgs++
		}
		return nil, nil
	}))
	if err != nil {
		return 0, 0, fmt.Errorf("nftables: %w", err)
	}
	if err := queue(nc); err != nil {
		return 0, 0, err
	}
	if err := nc.Flush(); err != nil {
		return 0, 0, fmt.Errorf("marshal batch: %w", err)
	}
	if tooLong > 0 {
		return 0, 0, fmt.Errorf("marshal batch: a message of %d bytes holds an attribute longer than netlink's 64 KiB", tooLong)
	}
	return size, msgs, nil
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// Socket buffers for one batch. A batch is one sendmsg, which the kernel
// refuses with EMSGSIZE when it is longer than the socket's send buffer
// less 32 bytes (netlink_sendmsg, net/netlink/af_netlink.c; the default,
// wmem_default, is about 200 KiB: some 400 traffic rules). Every message
// is acked, and acks that do not fit the receive buffer are dropped with
// ENOBUFS. So, as the nft command does (mnl_set_sndbuffer,
// mnl_set_rcvbuffer in nftables' src/mnl.c), the send buffer grows to the
// batch and the receive buffer to 1 KiB per message, never below 16 MiB.
// SO_*BUFFORCE ignore wmem_max and rmem_max but need CAP_NET_ADMIN in the
// initial user namespace; without it (a container) the buffers grow as
// far as those caps allow. The kernel doubles the value given (for its
// own overhead), so the batch fits with room to spare. Lost acks are
// survivable (Apply asks the kernel whether the batch was committed); a
// batch that does not fit is not.
const minReceiveBuffer = 16 << 20

func batchBuffers(size, msgs int) nftables.SockOption {
	return func(c *mdnetlink.Conn) error {
		have, err := growBuffer(c, unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, size)
		if err != nil {
			return fmt.Errorf("send buffer: %w", err)
		}
		if size > have-32 {
			return fmt.Errorf("a batch of %d bytes does not fit the socket's send buffer of %d: without CAP_NET_ADMIN in the initial user namespace, net.core.wmem_max caps it; raise that to %d or more", size, have, size)
		}
		if _, err := growBuffer(c, unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, max(minReceiveBuffer, msgs*1024)); err != nil {
			return fmt.Errorf("receive buffer: %w", err)
		}
		return nil
	}
}

// growBuffer asks for a socket buffer (opt) of at least want bytes, with
// force or else as far as the sysctl cap allows, and returns the size it
// has then.
func growBuffer(c *mdnetlink.Conn, opt, force, want int) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var have int
	var serr error
	err = raw.Control(func(fd uintptr) {
		if have, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt); serr != nil || have >= want {
			return
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, force, want) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, want)
		}
		have, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt)
	})
	if err != nil {
		return 0, err
	}
	return have, serr
}

// Record replaces the records in the state chain in one transaction, and
// only if they differ; no other chain is touched, and a missing table is
// created with its chains empty. It lets apply save the values it is about
// to change before it changes them. It returns whether it wrote.
func (c *Conn) Record(records Records) (bool, error) {
	cur, err := c.Read()
	if err != nil {
		return false, err
	}
	if cur.Exists && slices.Equal(cur.Chains["state"], records.Encode()) {
		return false, nil
	}
	c.Writes++
	if _, err := commit(func(nc *nftables.Conn) error { return queueRecords(nc, cur, records) }); err != nil {
		return false, fmt.Errorf("record state in table inet %s: %w", TableName, err)
	}
	return true, nil
}

// queueRecords adds to nc the transaction that replaces the records.
func queueRecords(nc *nftables.Conn, cur *Current, records Records) error {
	t := nc.AddTable(table())
	var ch *nftables.Chain
	for _, cd := range chains {
		// A new table gets every chain, empty (an empty base chain with
		// policy accept passes every packet), so the chains are listed in
		// the same order as after a full Apply.
		if cur.Exists && cd.name != "state" {
			continue
		}
		c := &nftables.Chain{Name: cd.name, Table: t, Type: cd.typ, Hooknum: cd.hook, Priority: cd.prio}
		if cd.hook != nil {
			pol := nftables.ChainPolicyAccept
			c.Policy = &pol
		}
		c = nc.AddChain(c)
		if cd.name == "state" {
			ch = c
		}
	}
	nc.FlushChain(ch)
	for _, r := range recordRules(records) {
		nc.AddRule(&nftables.Rule{
			Table:    t,
			Chain:    ch,
			Exprs:    r.exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment()),
		})
	}
	return nil
}

// FlushSets empties the named sets of the table (a link's sticky sources
// when the link goes down). Missing sets are skipped.
func (c *Conn) FlushSets(names []string) error {
	cur, err := c.Read()
	if err != nil {
		return err
	}
	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	n := 0
	for _, name := range names {
		if slices.Contains(cur.Sets, name) {
			nc.FlushSet(&nftables.Set{Table: table(), Name: name})
			n++
		}
	}
	if n == 0 {
		return nil
	}
	c.Writes++
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("flush sets of table inet %s: %w", TableName, err)
	}
	return nil
}

// Remove deletes the table, and the tables of `flowpin use` commands.
// A missing table is not an error.
func (c *Conn) Remove() (bool, error) {
	uses, err := c.RemoveUses()
	if err != nil {
		return uses, err
	}
	cur, err := c.Read()
	if err != nil {
		return uses, err
	}
	if !cur.Exists {
		return uses, nil
	}
	nc, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("nftables: %w", err)
	}
	nc.DelTable(table())
	c.Writes++
	if err := nc.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return false, fmt.Errorf("delete table inet %s: %w", TableName, err)
	}
	return true, nil
}
