package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// A small interpreter of the expressions the table is made of, to count
// what a packet passes in the table as laid out: how many rules the kernel
// starts (nft_do_chain evaluates a rule's expressions until one breaks)
// and how many set lookups it does. The counts come from the table
// itself, not from a hand count, so a change to the table changes them.

// pathPacket is what the table can see of a forwarded IPv4 UDP packet.
type pathPacket struct {
	iif, oif     string
	mark, ctmark uint32
	new          bool
	reply        bool   // the flow's reply direction
	ctstatus     uint32 // IPS_* bits
	saddr, daddr [4]byte
	sport, dport uint16
	// stuck: the sticky maps that hold the source, and its link's mark
	// there (updated as packets change them).
	stuck         map[string]uint32
	labels        []byte
	routedNexthop [4]byte
}

// pathCount is what one packet passed, per base chain.
type pathCount struct {
	rules, lookups map[string]int
	trace          []string
}

func (c pathCount) total() (rules, lookups int) {
	for _, n := range c.rules {
		rules += n
	}
	for _, n := range c.lookups {
		lookups += n
	}
	return rules, lookups
}

type interp struct {
	l    layout
	sets map[string]setDef
	p    *pathPacket
	reg  [80]byte
}

// regOff is a register's byte offset: NFT_REG_1..4 are 16 bytes, from
// NFT_REG32_00 (8) on, 4 bytes each, sharing the same space
// (nft_parse_register, net/netfilter/nf_tables_api.c).
func regOff(r uint32) int {
	if r <= 4 {
		return int(r) * 16
	}
	return 16 + int(r-reg32)*4
}

func (in *interp) load(r uint32, b []byte) { copy(in.reg[regOff(r):], b) }

func (in *interp) get(r uint32, n int) []byte {
	o := regOff(r)
	return in.reg[o : o+n]
}

func (in *interp) network() []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	h[9] = unix.IPPROTO_UDP
	copy(h[12:], in.p.saddr[:])
	copy(h[16:], in.p.daddr[:])
	return h
}

func (in *interp) transport() []byte {
	h := make([]byte, 8)
	binary.BigEndian.PutUint16(h, in.p.sport)
	binary.BigEndian.PutUint16(h[2:], in.p.dport)
	return h
}

// keyFields are the byte lengths of a set key's fields, each padded to a
// register.
func keyFields(t nftables.SetDatatype) []int {
	var out []int
	for _, e := range nftables.ConcatSetTypeElements(t) {
		out = append(out, int(e.Bytes+3)/4*4)
	}
	if len(out) == 0 {
		out = []int{int(t.Bytes)}
	}
	return out
}

// lookup finds key in set d: the verdict or data of a map's element, or
// whether the set holds it.
func (in *interp) lookup(d setDef, r uint32) (*expr.Verdict, []byte, bool) {
	fields := keyFields(d.set.KeyType)
	n := 0
	for _, f := range fields {
		n += f
	}
	key := in.get(r, n)
	if d.set.Dynamic {
		// A sticky map, filled by packets.
		m, ok := in.p.stuck[d.set.Name]
		return nil, binary.BigEndian.AppendUint32(nil, m), ok
	}
	for _, e := range d.elems {
		ok := true
		if d.set.Interval {
			o := 0
			for _, f := range fields {
				k := key[o : o+f]
				if bytes.Compare(k, e.Key[o:o+f]) < 0 || bytes.Compare(k, e.KeyEnd[o:o+f]) > 0 {
					ok = false
				}
				o += f
			}
		} else {
			ok = bytes.Equal(key[:len(e.Key)], e.Key)
		}
		if ok {
			return e.VerdictData, e.Val, true
		}
	}
	return nil, nil, false
}

// run evaluates base chain base and the chains it jumps to, until the
// base chain ends or a verdict (accept, drop) ends the hook.
func (in *interp) run(base string, c *pathCount) {
	type frame struct {
		chain string
		pos   int
	}
	var stack []frame
	chain := base
	pos := 0
	for {
		var rs []rule
		for _, r := range in.l.rules {
			if r.chain == chain {
				rs = append(rs, r)
			}
		}
		var next *expr.Verdict
		for ; pos < len(rs) && next == nil; pos++ {
			c.rules[base]++
			v, ok := in.eval(rs[pos], base, c)
			if ok && v != nil {
				next = v
				c.trace = append(c.trace, fmt.Sprintf("%s: %s -> %v %s", chain, rs[pos].text, v.Kind, v.Chain))
			}
		}
		if next == nil {
			next = &expr.Verdict{Kind: expr.VerdictReturn}
		}
		switch next.Kind {
		case expr.VerdictJump:
			stack = append(stack, frame{chain, pos})
			chain, pos = next.Chain, 0
		case expr.VerdictGoto:
			chain, pos = next.Chain, 0
		case expr.VerdictReturn:
			if len(stack) == 0 {
				return
			}
			top := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			chain, pos = top.chain, top.pos
		default: // accept, drop
			return
		}
	}
}

// eval runs one rule's expressions; ok is false where one broke off.
func (in *interp) eval(r rule, base string, c *pathCount) (*expr.Verdict, bool) {
	p := in.p
	for _, e := range r.exprs {
		switch e := e.(type) {
		case *expr.Meta:
			if e.SourceRegister {
				if e.Key != expr.MetaKeyMARK {
					panic(fmt.Sprintf("meta set %v", e.Key))
				}
				p.mark = binaryutil.NativeEndian.Uint32(in.get(e.Register, 4))
				continue
			}
			switch e.Key {
			case expr.MetaKeyIIFNAME:
				in.load(e.Register, ifname(p.iif))
			case expr.MetaKeyOIFNAME:
				in.load(e.Register, ifname(p.oif))
			case expr.MetaKeyMARK:
				in.load(e.Register, le(p.mark))
			case expr.MetaKeyNFPROTO:
				in.load(e.Register, []byte{unix.NFPROTO_IPV4, 0, 0, 0})
			case expr.MetaKeyL4PROTO:
				in.load(e.Register, []byte{unix.IPPROTO_UDP, 0, 0, 0})
			case expr.MetaKeyIIFTYPE:
				in.load(e.Register, binaryutil.NativeEndian.PutUint16(unix.ARPHRD_ETHER))
			default:
				panic(fmt.Sprintf("meta %v", e.Key))
			}
		case *expr.Ct:
			if e.SourceRegister {
				switch e.Key {
				case expr.CtKeyMARK:
					p.ctmark = binaryutil.NativeEndian.Uint32(in.get(e.Register, 4))
				case expr.CtKeyLABELS:
					p.labels = bytes.Clone(in.get(e.Register, 16))
				default:
					panic(fmt.Sprintf("ct set %v", e.Key))
				}
				continue
			}
			switch e.Key {
			case expr.CtKeyMARK:
				in.load(e.Register, le(p.ctmark))
			case expr.CtKeySTATE:
				st := uint32(expr.CtStateBitESTABLISHED)
				if p.new {
					st = expr.CtStateBitNEW
				}
				in.load(e.Register, le(st))
			case expr.CtKeyDIRECTION:
				d := byte(0)
				if p.reply {
					d = 1
				}
				in.load(e.Register, []byte{d, 0, 0, 0})
			case expr.CtKeySTATUS:
				in.load(e.Register, le(p.ctstatus))
			default:
				panic(fmt.Sprintf("ct %v", e.Key))
			}
		case *expr.Bitwise:
			src := bytes.Clone(in.get(e.SourceRegister, int(e.Len)))
			for i := range src {
				src[i] = src[i]&e.Mask[i] ^ e.Xor[i]
			}
			in.load(e.DestRegister, src)
		case *expr.Cmp:
			eq := bytes.Equal(in.get(e.Register, len(e.Data)), e.Data)
			if (e.Op == expr.CmpOpEq) != eq {
				return nil, false
			}
		case *expr.Range:
			v := in.get(e.Register, len(e.FromData))
			if bytes.Compare(v, e.FromData) < 0 || bytes.Compare(v, e.ToData) > 0 {
				return nil, false
			}
		case *expr.Payload:
			var h []byte
			switch e.Base {
			case expr.PayloadBaseNetworkHeader:
				h = in.network()
			case expr.PayloadBaseTransportHeader:
				h = in.transport()
			default:
				panic(fmt.Sprintf("payload base %v", e.Base))
			}
			if int(e.Offset+e.Len) > len(h) {
				return nil, false
			}
			in.load(e.DestRegister, h[e.Offset:e.Offset+e.Len])
		case *expr.Rt:
			in.load(e.Register, p.routedNexthop[:])
		case *expr.Lookup:
			c.lookups[base]++
			d, ok := in.sets[e.SetName]
			if !ok {
				panic("no set " + e.SetName)
			}
			v, data, found := in.lookup(d, e.SourceRegister)
			if found == e.Invert {
				return nil, false
			}
			if e.IsDestRegSet && e.DestRegister == 0 {
				return v, true
			}
			if e.IsDestRegSet {
				in.load(e.DestRegister, data)
			}
		case *expr.Dynset:
			c.lookups[base]++
			switch _, ok := p.stuck[e.SetName]; {
			case e.Operation == dynsetOpDelete:
				delete(p.stuck, e.SetName)
			case ok:
				// An update that finds the element refreshes its timeout
				// and keeps its data.
			default:
				p.stuck[e.SetName] = binary.BigEndian.Uint32(in.get(e.SrcRegData, 4))
			}
		case *expr.Byteorder:
			v := bytes.Clone(in.get(e.SourceRegister, 4))
			slices.Reverse(v) // little-endian host
			in.load(e.DestRegister, v)
		case *expr.Immediate:
			in.load(e.Register, e.Data)
		case *expr.Counter:
		case *expr.Masq:
			return &expr.Verdict{Kind: expr.VerdictAccept}, true
		case *expr.Verdict:
			return e, true
		default:
			panic(fmt.Sprintf("expression %T", e))
		}
	}
	return nil, true
}

// forward counts what packet p passes on its way through the router: the
// prerouting hook, then (after routing chose p.oif) postrouting's save and
// the NAT chain, nat-type chains, which conntrack runs for a flow's first
// packet only.
func (s Spec) forward(p pathPacket) (pathCount, pathPacket) {
	p.stuck = maps.Clone(p.stuck)
	if p.stuck == nil {
		p.stuck = map[string]uint32{}
	}
	in := &interp{l: s.layout(), sets: map[string]setDef{}, p: &p}
	for _, d := range in.l.sets {
		in.sets[d.set.Name] = d
	}
	c := pathCount{rules: map[string]int{}, lookups: map[string]int{}}
	in.run("prerouting", &c)
	if p.new {
		// Both are nat-type chains: a flow's first packet only.
		in.run("postrouting", &c)
		in.run("nat", &c)
	}
	return c, p
}

func pathSpec(n int, sticky bool) Spec {
	s := Spec{Mask: 0xff00}
	for i := range n {
		s.Links = append(s.Links, Link{Name: fmt.Sprintf("isp%d", i), Iface: fmt.Sprintf("wan%d", i), Mark: uint32(i+1) << 8, NAT: true})
	}
	if sticky {
		c := Class{Name: "bank", Proto: "udp", DstPorts: []PortRange{{9, 9}}, Action: Action{Mark: 0xfe00}, Sticky: 10 * time.Minute}
		for _, l := range s.Links {
			c.StickyLinks = append(c.StickyLinks, l.Name)
		}
		s.Classes = []Class{c}
	}
	return s
}

// What a forwarded packet passes in the table does not grow with the
// number of links, for a flow's first packet or a later one: each link's
// part is an element of a map, found in one lookup. The counts are
// printed for the closing note of issue 25 (go test -run TestForwardPath -v).
func TestForwardPathIsFlat(t *testing.T) {
	type counts struct{ rules, lookups int }
	got := map[string]counts{}
	for _, n := range []int{2, 32} {
		s := pathSpec(n, false)
		last := s.Links[n-1]
		base := pathPacket{iif: "lan", oif: last.Iface, saddr: [4]byte{10, 0, 0, 2}, daddr: [4]byte{198, 18, 0, 1}, sport: 4000, dport: 9}
		first := base
		first.new = true
		later := base
		later.ctmark, later.ctstatus = last.Mark, ipsSrcNAT
		// A reply from the link: not restored, main routes it.
		reply := later
		reply.iif, reply.oif, reply.reply = last.Iface, "lan", true
		// A flow without NAT (a routed prefix): the interface tells.
		routed := later
		routed.ctstatus = 0
		for _, tc := range []struct {
			name string
			p    pathPacket
			// the marks the packet leaves with
			mark, ctmark uint32
			lookups      int
		}{
			{"new", first, 0, last.Mark, 4},
			{"established", later, last.Mark, last.Mark, 1},
			{"reply", reply, 0, last.Mark, 1},
			{"routed established", routed, last.Mark, last.Mark, 2},
		} {
			c, out := s.forward(tc.p)
			r, l := c.total()
			t.Logf("%d links, %s flow's packet: %d nft rules (prerouting %d, postrouting %d, nat %d), %d lookups",
				n, tc.name, r, c.rules["prerouting"], c.rules["postrouting"], c.rules["nat"], l)
			got[fmt.Sprint(tc.name, n)] = counts{r, l}
			if l != tc.lookups {
				t.Errorf("%d links, %s flow's packet: %d lookups, want %d\n%s", n, tc.name, l, tc.lookups, strings.Join(c.trace, "\n"))
			}
			if out.mark != tc.mark || out.ctmark != tc.ctmark {
				t.Errorf("%d links, %s flow by %s: leaves with mark %#x, ct mark %#x; want %#x, %#x\n%s",
					n, tc.name, last.Iface, out.mark, out.ctmark, tc.mark, tc.ctmark, strings.Join(c.trace, "\n"))
			}
		}
	}
	for _, kind := range []string{"new", "established", "reply", "routed established"} {
		if a, b := got[kind+"2"], got[kind+"32"]; a != b {
			t.Errorf("a %s flow's packet passes %+v at 2 links but %+v at 32", kind, a, b)
		}
	}
}

// A sticky rule's new flow: a source not stuck yet is classified, leaves
// by the link routing chose and is recorded against it; a source stuck to
// a link gets that link's mark; a source stuck to a link the rule may not
// use now is classified and recorded against the link it leaves by. All
// in a number of rules and lookups that does not grow with the links.
func TestStickyPathIsFlat(t *testing.T) {
	type counts struct{ rules, lookups int }
	got := map[string]counts{}
	for _, n := range []int{2, 32} {
		s := pathSpec(n, true)
		last, first := s.Links[n-1], s.Links[0]
		m := stuckMap(ipv4, "bank")
		p := pathPacket{iif: "lan", oif: last.Iface, new: true, saddr: [4]byte{10, 0, 0, 2}, daddr: [4]byte{198, 18, 0, 1}, sport: 4000, dport: 9}
		// The rule may stick to every link but the first.
		s.Classes[0].StickyLinks = s.Classes[0].StickyLinks[1:]
		for _, tc := range []struct {
			name         string
			stuck        map[string]uint32
			mark, ctmark uint32
			stuckAfter   map[string]uint32
		}{
			{"not stuck", nil, 0xfe00, last.Mark, map[string]uint32{m: last.Mark}},
			{"stuck to the last link", map[string]uint32{m: last.Mark}, last.Mark, last.Mark, map[string]uint32{m: last.Mark}},
			{"stuck to a link it may not use", map[string]uint32{m: first.Mark}, 0xfe00, last.Mark, map[string]uint32{m: last.Mark}},
		} {
			p.stuck = tc.stuck
			c, out := s.forward(p)
			r, l := c.total()
			t.Logf("%d links, sticky rule, new flow of a source %s: %d nft rules (prerouting %d, postrouting %d, nat %d), %d lookups",
				n, tc.name, r, c.rules["prerouting"], c.rules["postrouting"], c.rules["nat"], l)
			got[fmt.Sprint(tc.name, n)] = counts{r, l}
			if out.mark != tc.mark || out.ctmark != tc.ctmark || !maps.Equal(out.stuck, tc.stuckAfter) {
				t.Errorf("%d links, source %s: leaves with mark %#x, ct mark %#x, stuck %v; want %#x, %#x, %v\n%s",
					n, tc.name, out.mark, out.ctmark, out.stuck, tc.mark, tc.ctmark, tc.stuckAfter, strings.Join(c.trace, "\n"))
			}
		}
	}
	for _, kind := range []string{"not stuck", "stuck to the last link", "stuck to a link it may not use"} {
		if a, b := got[kind+"2"], got[kind+"32"]; a != b {
			t.Errorf("a new flow of a source %s passes %+v at 2 links but %+v at 32", kind, a, b)
		}
	}
}
