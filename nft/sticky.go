package nft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Sticky rules, in a number of steps that does not grow with the links.
//
// A sticky rule keeps, per family, one map from a source address to the
// mark of the link it is stuck to (stuckMap), filled by packets and kept
// across applies, and a set of the marks of the links it may stick to now
// (sticktoSet, refilled by every apply). A new flow of the rule:
//
//   - in prerouting (or output), the source's link comes out of the map in
//     one lookup. nft cannot OR two registers into the packet mark, so the
//     looked-up mark is parked in the flow's ct mark, only where the ct
//     mark is all zero (no bit of anyone else's to lose); a link it may
//     stick to sends the packet to that link's stuck_ chain (one verdict
//     map lookup), which sets the link's bits in the packet mark and zeroes
//     the ct mark again; any other link's mark is zeroed at once and the
//     flow is classified by its rule's policy;
//   - in postrouting, a flow that was not stuck has just been pinned to the
//     link it leaves by (its save_ chain ran first), so its ct mark says
//     the link: that mark, if the rule may stick to it, replaces the
//     source's entry in one delete and one update.
//
// The kernel requires a data register for a dynset on a map even to delete
// (nft_dynset_init, net/netfilter/nft_dynset.c), and does not change the
// data of an element an update finds, hence the delete before it.

// stuckPrefix names the per-link chains a stuck source's packet is sent
// to (not a prefix of the other chains' prefixes, nor they of it).
const stuckPrefix = "stuck_"

// dynsetOpDelete is NFT_DYNSET_OP_DELETE (include/uapi/linux/netfilter/nf_tables.h),
// which x/sys/unix does not have.
const dynsetOpDelete = 2

// mapStuck: ct mark & mask : goto stuck_LINK.
const mapStuck = "by_stuck"

func stuckMap(f family, class string) string {
	return fmt.Sprintf("stuck%s_%s", f.suffix(), class)
}

func sticktoSet(f family, class string) string {
	return fmt.Sprintf("stickto%s_%s", f.suffix(), class)
}

// stickySets are the maps and sets of the sticky rules.
func (s Spec) stickySets() []setDef {
	var out []setDef
	for _, c := range s.Classes {
		if c.Sticky == 0 {
			continue
		}
		for _, f := range families {
			links := c.stickyLinks(f)
			if len(links) == 0 {
				continue
			}
			name := stuckMap(f, c.Name)
			out = append(out, setDef{
				set:  &nftables.Set{Name: name, KeyType: f.addr, DataType: nftables.TypeMark, IsMap: true, Dynamic: true, HasTimeout: true},
				text: fmt.Sprintf("map %s {\n\t\ttype %s : mark\n\t\tflags dynamic,timeout\n\t}", name, f.addr.Name),
			})
			to := sticktoSet(f, c.Name)
			d := setDef{
				set:    &nftables.Set{Name: to, KeyType: nftables.TypeMark, KeyByteOrder: keyOrder(nftables.TypeMark)},
				decl:   "type mark;",
				refill: true,
			}
			var texts []string
			for _, l := range links {
				m := s.linkMark(l)
				d.elems = append(d.elems, nftables.SetElement{Key: le(m)})
				texts = append(texts, hexm(m))
			}
			d.text = fmt.Sprintf("set %s {\n\t\ttype mark\n\t\telements = { %s }\n\t}", to, strings.Join(texts, ", "))
			out = append(out, d)
		}
	}
	return out
}

// stuckElems send a stuck source's packet to its link's chain.
func (s Spec) stuckElems() []vmapElem {
	if !s.hasStuckMaps() {
		return nil
	}
	var out []vmapElem
	for _, l := range s.Links {
		if slices.ContainsFunc(out, func(e vmapElem) bool { return bytes.Equal(e.key, le(l.Mark)) }) {
			continue
		}
		out = append(out, vmapElem{le(l.Mark), hexm(l.Mark), expr.VerdictGoto, stuckPrefix + l.Name})
	}
	return out
}

func (s Spec) hasStuckMaps() bool {
	for _, c := range s.Classes {
		if c.Sticky != 0 && len(c.StickyLinks)+len(c.StickyLinks6) > 0 {
			return true
		}
	}
	return false
}

// toBigEndian copies the mark in register src to dst in network byte
// order. The map's marks are kept so: the library cannot declare a map's
// data byte order (nft's NFTNL_UDATA_SET_DATABYTEORDER), and without it
// nft reads, prints and adds the data as big-endian, so a host-order mark
// 0x100 would list as 0x00010000.
func toBigEndian(src, dst uint32) expr.Any {
	return &expr.Byteorder{SourceRegister: src, DestRegister: dst, Op: expr.ByteorderHton, Len: 4, Size: 4}
}

func ctSetReg1() expr.Any { return &expr.Ct{Register: 1, Key: expr.CtKeyMARK, SourceRegister: true} }

func saddrTo(reg uint32, f family) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: uint32(f.addrLen)}
}

// stuckRules are the rules of a sticky rule's chain that send a stuck
// source's new flow to its link: two per family, and one that undoes
// the parked mark of a link the rule may not stick to now.
func (s Spec) stuckRules(ch string, c Class) []rule {
	if c.Sticky == 0 {
		return nil
	}
	var out []rule
	for _, f := range families {
		if len(c.stickyLinks(f)) == 0 {
			continue
		}
		m, to := stuckMap(f, c.Name), sticktoSet(f, c.Name)
		out = append(out, rule{
			chain: ch,
			text:  fmt.Sprintf("meta nfproto %s ct mark 0x00000000 ct mark set %s saddr map @%s", nfprotoName(f), f.name, m),
			why:   "stuck source " + f.name,
			exprs: join(matchNfproto(f), []expr.Any{
				&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: le(0)},
				saddrTo(1, f),
				&expr.Lookup{SourceRegister: 1, SetName: m, DestRegister: 1, IsDestRegSet: true},
				&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderNtoh, Len: 4, Size: 4},
				ctSetReg1(),
			}),
		}, rule{
			chain: ch,
			text: fmt.Sprintf("meta nfproto %s ct mark & %s @%s update @%s { %s saddr timeout %s : ct mark & %s } ct mark & %s vmap @%s",
				nfprotoName(f), hexm(s.Mask), to, m, f.name, nftDuration(c.Sticky), hexm(s.Mask), hexm(s.Mask), mapStuck),
			why: "stuck to a link " + f.name,
			exprs: join(matchNfproto(f), maskedMark(true, s.Mask), []expr.Any{
				&expr.Lookup{SourceRegister: 1, SetName: to},
				saddrTo(2, f),
				toBigEndian(1, 3),
				&expr.Dynset{SrcRegKey: 2, SrcRegData: 3, SetName: m, Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: c.Sticky},
				&expr.Lookup{SourceRegister: 1, SetName: mapStuck, DestRegister: 0, IsDestRegSet: true},
			}),
		})
	}
	if len(out) > 0 {
		out = append(out, rule{
			chain: ch,
			text:  fmt.Sprintf("ct mark & %s != 0x00000000 ct mark set 0x00000000", hexm(s.Mask)),
			why:   "stuck to a link it may not use",
			exprs: join(maskedMark(true, s.Mask), []expr.Any{
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: le(0)},
				&expr.Immediate{Register: 1, Data: le(0)},
				ctSetReg1(),
			}),
		})
	}
	return out
}

// stuckChains are the links' chains a stuck source's packet is sent to.
func (s Spec) stuckChains() []rule {
	var out []rule
	for _, e := range s.stuckElems() {
		mark := binaryutil.NativeEndian.Uint32(e.key)
		out = append(out, rule{
			chain: e.chain,
			text:  fmt.Sprintf("meta mark set meta mark & %s | %s ct mark set 0x00000000", hexm(^s.Mask), hexm(mark)),
			why:   "stuck " + e.chain[len(stuckPrefix):],
			exprs: join(setMarkBits(false, s.Mask, mark), []expr.Any{
				&expr.Immediate{Register: 1, Data: le(0)},
				ctSetReg1(),
			}),
		})
	}
	return out
}

// recordStuck records a sticky rule's new flow against the link it was
// just pinned to, one rule per family.
func (s Spec) recordStuck(ch string, c Class) []rule {
	var out []rule
	for _, f := range families {
		if len(c.stickyLinks(f)) == 0 {
			continue
		}
		m, to := stuckMap(f, c.Name), sticktoSet(f, c.Name)
		out = append(out, rule{
			chain: ch,
			text: fmt.Sprintf("meta nfproto %s ct mark & %s @%s delete @%s { %s saddr : ct mark & %s } update @%s { %s saddr timeout %s : ct mark & %s }",
				nfprotoName(f), hexm(s.Mask), to, m, f.name, hexm(s.Mask), m, f.name, nftDuration(c.Sticky), hexm(s.Mask)),
			why: "stick " + f.name,
			exprs: join(matchNfproto(f), maskedMark(true, s.Mask), []expr.Any{
				&expr.Lookup{SourceRegister: 1, SetName: to},
				saddrTo(2, f),
				toBigEndian(1, 3),
				&expr.Dynset{SrcRegKey: 2, SrcRegData: 3, SetName: m, Operation: dynsetOpDelete},
				&expr.Dynset{SrcRegKey: 2, SrcRegData: 3, SetName: m, Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: c.Sticky},
			}),
		})
	}
	return out
}

// StickyMap names the map that holds the sources a sticky rule keeps on
// their links, for addresses of a's family.
func StickyMap(rule string, a netip.Addr) string {
	if a.Unmap().Is4() {
		return stuckMap(ipv4, rule)
	}
	return stuckMap(ipv6, rule)
}

// StuckTo says which link's mark map m holds for a, and for how much
// longer; 0 if none. A missing map holds nothing.
func (c *Conn) StuckTo(m string, a netip.Addr) (uint32, time.Duration, error) {
	nc, err := nftables.New()
	if err != nil {
		return 0, 0, fmt.Errorf("nftables: %w", err)
	}
	set, err := nc.GetSetByName(table(), m)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, 0, nil
		}
		return 0, 0, fmt.Errorf("map %s: %w", m, err)
	}
	es, err := nc.GetSetElements(set)
	if err != nil {
		return 0, 0, fmt.Errorf("elements of map %s: %w", m, err)
	}
	key := a.Unmap().AsSlice()
	for _, e := range es {
		if bytes.Equal(e.Key, key) && len(e.Val) == 4 {
			return binary.BigEndian.Uint32(e.Val), e.Expires, nil
		}
	}
	return 0, 0, nil
}
