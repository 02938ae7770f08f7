package nft

import (
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The maps of the links' nat_source: the address a new flow leaving by an
// interface is SNATed to, one lookup whatever the number of links.
const (
	mapNATSource4 = "nat_source4" // oifname : ipv4_addr
	mapNATSource6 = "nat_source6" // oifname : ipv6_addr
)

// natSourceMaps are the maps of the links with a nat_source, per family.
// Links on one interface share it (the config makes sure they agree).
func (s Spec) natSourceMaps() []setDef {
	var out []setDef
	for _, f := range families {
		name, typ := mapNATSource4, nftables.TypeIPAddr
		if f.nfproto == unix.NFPROTO_IPV6 {
			name, typ = mapNATSource6, nftables.TypeIP6Addr
		}
		d := setDef{
			set:    &nftables.Set{Name: name, KeyType: nftables.TypeIFName, KeyByteOrder: keyOrder(nftables.TypeIFName), DataType: typ, IsMap: true},
			decl:   fmt.Sprintf("type ifname : %s;", typ.Name),
			refill: true,
		}
		var texts []string
		seen := map[string]bool{}
		for _, l := range s.Links {
			a := l.NATSource
			if !l.NAT || !a.IsValid() || a.Is4() != (f.nfproto == unix.NFPROTO_IPV4) || seen[l.Iface] {
				continue
			}
			seen[l.Iface] = true
			d.elems = append(d.elems, nftables.SetElement{Key: ifname(l.Iface), Val: a.AsSlice()})
			texts = append(texts, fmt.Sprintf("%q : %s", l.Iface, a))
		}
		if len(texts) == 0 {
			continue
		}
		d.text = fmt.Sprintf("map %s {\n\t\ttype ifname : %s\n\t\telements = { %s }\n\t}", name, typ.Name, strings.Join(texts, ", "))
		out = append(out, d)
	}
	return out
}

// natSourceRules SNAT a new flow leaving by a link with a nat_source to
// that address. They come before the masquerade, which takes the flows of
// the other links and families; a NAT statement ends the chain. Traffic
// of the router's own addresses (the probes of each node of an HA pair,
// which must leave from the node's own address: the peer may hold the
// VIP, and its replies would go there) keeps its source.
func natSourceRules(byName map[string]setDef) []rule {
	var out []rule
	for _, f := range families {
		name := mapNATSource4
		if f.nfproto == unix.NFPROTO_IPV6 {
			name = mapNATSource6
		}
		m, ok := byName[name]
		if !ok {
			continue
		}
		out = append(out, rule{
			chain: "nat",
			text:  fmt.Sprintf("meta nfproto %s fib saddr type != local snat %s to oifname map @%s", nfprotoName(f), f.name, name),
			why:   "nat source " + digest(m.text),
			exprs: join(matchNfproto(f), []expr.Any{
				&expr.Fib{Register: 1, FlagSADDR: true, ResultADDRTYPE: true},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Lookup{SourceRegister: 1, SetName: name, DestRegister: 1, IsDestRegSet: true},
				&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(f.nfproto), RegAddrMin: 1},
			}),
		})
	}
	return out
}

// guardRule drops a TCP packet that conntrack sees as the start of a new
// flow but that is not a SYN. On an HA pair, the node that just took over
// sees mid-stream packets of flows whose synced entries are not yet in
// its table (conntrackd commits them on promotion): with the default
// nf_conntrack_tcp_loose a non-SYN packet would create a new entry (and
// a new NAT binding), and one for the VIP itself would reach the local
// stack, which answers with a reset; either way the flow dies. Dropped,
// the packet is sent again by its TCP and finds the committed entry.
// The packet never gets a confirmed entry of its own, so the commit does
// not clash with one. It is first in prerouting, so it covers forwarded
// packets and packets to the router's addresses (the VIPs) alike.
func guardRule() rule {
	return rule{
		chain: "prerouting",
		text:  "tcp flags & (fin|syn|rst|ack) != syn ct state new counter drop",
		why:   GuardWhy,
		exprs: join([]expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpFIN | tcpSYN | tcpRST | tcpACK}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{tcpSYN}},
		}, ctStateNew(), counter(), []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}),
	}
}

// TCP header flag bits (RFC 9293).
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// GuardWhy is the comment prefix of the guard rule, by which verify finds it.
const GuardWhy = "ha guard"

// ctStateNew: ct state new.
func ctStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: le(expr.CtStateBitNEW), Xor: le(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: le(0)},
	}
}
