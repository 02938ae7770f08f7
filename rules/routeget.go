package rules

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Query is one `ip route get`: a packet as the kernel's routing sees it.
// Zero values are left out of the request.
type Query struct {
	Dst netip.Addr
	Src netip.Addr
	// Iif makes it a forwarding lookup (the packet arrived there); empty
	// is a locally generated packet. The kernel then needs forwarding on
	// in this namespace, or it answers "no route to host".
	Iif  string
	Oif  string
	Mark uint32
	// Proto, Sport and Dport feed the L4 multipath hash
	// (fib_multipath_hash_policy=1) and the ipproto/sport/dport rule
	// selectors. netlink v1.3.1's RouteGetOptions has no field for them,
	// so the request is built here (RTA_IP_PROTO/RTA_SPORT/RTA_DPORT,
	// kernel >= 4.17).
	Proto        uint8
	Sport, Dport uint16
	UID          *uint32
	// FIBMatch asks for the route entry that matched (its prefix and every
	// nexthop of a multipath route) instead of the one nexthop chosen.
	FIBMatch bool
}

// Args renders q as `ip route get` arguments, so a user can repeat it.
func (q Query) Args() string {
	var b strings.Builder
	if q.FIBMatch {
		b.WriteString("fibmatch ")
	}
	b.WriteString(q.Dst.String())
	if q.Src.IsValid() {
		fmt.Fprintf(&b, " from %s", q.Src)
	}
	if q.Iif != "" {
		fmt.Fprintf(&b, " iif %s", q.Iif)
	}
	if q.Oif != "" {
		fmt.Fprintf(&b, " oif %s", q.Oif)
	}
	if q.Mark != 0 {
		fmt.Fprintf(&b, " mark %#x", q.Mark)
	}
	if q.Proto != 0 {
		fmt.Fprintf(&b, " ipproto %s", ProtoName(q.Proto))
	}
	if q.Sport != 0 {
		fmt.Fprintf(&b, " sport %d", q.Sport)
	}
	if q.Dport != 0 {
		fmt.Fprintf(&b, " dport %d", q.Dport)
	}
	if q.UID != nil {
		fmt.Fprintf(&b, " uid %d", *q.UID)
	}
	return b.String()
}

// ProtoName is the name ip(8) and nft use for an L4 protocol.
func ProtoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	}
	return fmt.Sprint(p)
}

// Answer is the kernel's reply to a Query.
type Answer struct {
	Type  uint8 // unix.RTN_UNICAST, RTN_LOCAL, ...
	Table int
	// Dst is the matched route's prefix for a FIBMatch query, the
	// destination address (/32) otherwise.
	Dst      netip.Prefix
	Dev      string
	Gw       netip.Addr
	PrefSrc  netip.Addr
	Protocol int
	// Nexthops: every leg of a matched multipath route (FIBMatch only).
	Nexthops []Nexthop
}

// TypeName is the route type as ip(8) prints it.
func (a Answer) TypeName() string {
	switch a.Type {
	case unix.RTN_UNICAST:
		return "unicast"
	case unix.RTN_LOCAL:
		return "local"
	case unix.RTN_BROADCAST:
		return "broadcast"
	case unix.RTN_MULTICAST:
		return "multicast"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	}
	return fmt.Sprintf("type %d", a.Type)
}

// String is the answer the way `ip route get` prints it (roughly).
func (a Answer) String() string {
	var b strings.Builder
	if a.Type != unix.RTN_UNICAST {
		b.WriteString(a.TypeName() + " ")
	}
	if a.Dst.Bits() == 0 {
		b.WriteString("default")
	} else if a.Dst.IsSingleIP() {
		b.WriteString(a.Dst.Addr().String())
	} else {
		b.WriteString(a.Dst.String())
	}
	if a.Gw.IsValid() {
		fmt.Fprintf(&b, " via %s", a.Gw)
	}
	if a.Dev != "" {
		fmt.Fprintf(&b, " dev %s", a.Dev)
	}
	fmt.Fprintf(&b, " table %s", TableName(a.Table))
	if a.PrefSrc.IsValid() {
		fmt.Fprintf(&b, " src %s", a.PrefSrc)
	}
	for _, nh := range a.Nexthops {
		b.WriteString(" nexthop " + nh.Spec())
	}
	return b.String()
}

// RouteGet asks the kernel how it routes q (RTM_GETROUTE) in k's network
// namespace.
// Errors are the kernel's, wrapped with the equivalent `ip route get`.
func (k *Kernel) RouteGet(q Query) (Answer, error) {
	a, err := k.routeGet(q)
	if err != nil {
		return a, fmt.Errorf("ip route get %s: %w", q.Args(), err)
	}
	return a, nil
}

func (k *Kernel) routeGet(q Query) (Answer, error) {
	if !q.Dst.IsValid() {
		return Answer{}, errors.New("no destination")
	}
	dst := q.Dst.Unmap()
	fam, bits := unix.AF_INET, uint8(32)
	if dst.Is6() {
		fam, bits = unix.AF_INET6, 128
	}
	req := k.request(unix.RTM_GETROUTE, unix.NLM_F_REQUEST)
	msg := nl.NewRtMsg()
	msg.Family = uint8(fam)
	msg.Dst_len = bits
	// Table, protocol, scope and type start out zero in a get request:
	// NewRtMsg fills them in for adds.
	msg.Table, msg.Protocol, msg.Scope, msg.Type = 0, 0, 0, 0
	msg.Flags = unix.RTM_F_LOOKUP_TABLE
	if q.FIBMatch {
		msg.Flags |= unix.RTM_F_FIB_MATCH
	}
	if q.Src.IsValid() {
		msg.Src_len = bits
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.RTA_DST, dst.AsSlice()))
	if q.Src.IsValid() {
		req.AddData(nl.NewRtAttr(unix.RTA_SRC, q.Src.Unmap().AsSlice()))
	}
	u32 := func(v uint32) []byte {
		b := make([]byte, 4)
		binary.NativeEndian.PutUint32(b, v)
		return b
	}
	for _, dev := range []struct {
		name string
		attr int
	}{{q.Iif, unix.RTA_IIF}, {q.Oif, unix.RTA_OIF}} {
		if dev.name == "" {
			continue
		}
		l, err := k.h.LinkByName(dev.name)
		if err != nil {
			return Answer{}, fmt.Errorf("interface %s: %w", dev.name, err)
		}
		req.AddData(nl.NewRtAttr(dev.attr, u32(uint32(l.Attrs().Index))))
	}
	if q.Mark != 0 {
		req.AddData(nl.NewRtAttr(unix.RTA_MARK, u32(q.Mark)))
	}
	if q.UID != nil {
		req.AddData(nl.NewRtAttr(unix.RTA_UID, u32(*q.UID)))
	}
	if q.Proto != 0 {
		req.AddData(nl.NewRtAttr(unix.RTA_IP_PROTO, []byte{q.Proto}))
	}
	// Ports travel in network byte order (nla_get_be16 in the kernel).
	be16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	if q.Sport != 0 {
		req.AddData(nl.NewRtAttr(unix.RTA_SPORT, be16(q.Sport)))
	}
	if q.Dport != 0 {
		req.AddData(nl.NewRtAttr(unix.RTA_DPORT, be16(q.Dport)))
	}
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWROUTE)
	if err != nil {
		return Answer{}, err
	}
	if len(msgs) == 0 {
		return Answer{}, errors.New("empty answer")
	}
	names, err := k.ifaceNames()
	if err != nil {
		return Answer{}, err
	}
	return parseAnswer(msgs[0], names)
}

// parseAnswer reads an RTM_NEWROUTE answer: struct rtmsg, then route
// attributes. Attributes of the wrong size are ignored. (mdlayher/netlink's
// decoder checks every attribute's length; nl.ParseRouteAttr panics on a
// short one.)
func parseAnswer(m []byte, names map[int]string) (Answer, error) {
	if len(m) < unix.SizeofRtMsg {
		return Answer{}, fmt.Errorf("parse answer: %d bytes, shorter than struct rtmsg", len(m))
	}
	rt := nl.DeserializeRtMsg(m)
	ad, err := mnl.NewAttributeDecoder(m[unix.SizeofRtMsg:])
	if err != nil {
		return Answer{}, fmt.Errorf("parse answer: %w", err)
	}
	a := Answer{Type: rt.Type, Table: int(rt.Table), Protocol: int(rt.Protocol)}
	var dst netip.Addr
	for ad.Next() {
		v := ad.Bytes()
		switch ad.Type() {
		case unix.RTA_TABLE:
			if len(v) == 4 {
				a.Table = int(binary.NativeEndian.Uint32(v))
			}
		case unix.RTA_DST:
			dst = addrOf(v)
		case unix.RTA_OIF:
			if len(v) == 4 {
				a.Dev = names[int(binary.NativeEndian.Uint32(v))]
			}
		case unix.RTA_GATEWAY:
			a.Gw = addrOf(v)
		case unix.RTA_PREFSRC:
			a.PrefSrc = addrOf(v)
		case unix.RTA_MULTIPATH:
			a.Nexthops = parseMultipath(v, names)
		}
	}
	if err := ad.Err(); err != nil {
		return Answer{}, fmt.Errorf("parse answer: %w", err)
	}
	if dst.IsValid() && int(rt.Dst_len) <= dst.BitLen() {
		a.Dst = netip.PrefixFrom(dst, int(rt.Dst_len))
	} else if rt.Family == unix.AF_INET6 {
		a.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	} else {
		a.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return a, nil
}

// parseMultipath reads a sequence of struct rtnexthop, each followed by its
// own attributes (RTA_GATEWAY). It stops at the first malformed one.
func parseMultipath(b []byte, names map[int]string) []Nexthop {
	var out []Nexthop
	for len(b) >= unix.SizeofRtNexthop {
		nh := nl.DeserializeRtNexthop(b)
		n := int(nh.RtNexthop.Len)
		if n < unix.SizeofRtNexthop || n > len(b) {
			break
		}
		hop := Nexthop{Dev: names[int(nh.Ifindex)], Weight: int(nh.Hops) + 1}
		if ad, err := mnl.NewAttributeDecoder(b[unix.SizeofRtNexthop:n]); err == nil {
			for ad.Next() {
				if ad.Type() == unix.RTA_GATEWAY {
					hop.Gw = addrOf(ad.Bytes())
				}
			}
		}
		out = append(out, hop)
		b = b[min(nlAlign(n), len(b)):]
	}
	return out
}

func nlAlign(n int) int { return (n + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1) }

// Neighbour is the kernel's neighbour entry for an address on a device.
type Neighbour struct {
	State string // "reachable", "stale", "failed", "" (none)
	MAC   string
}

// Usable: the kernel has (or had very recently) a link-layer answer.
func (n Neighbour) Usable() bool {
	switch n.State {
	case "reachable", "stale", "delay", "probe", "permanent", "noarp":
		return true
	}
	return false
}

// Neighbour reads the neighbour entry for ip on dev.
func (k *Kernel) Neighbour(dev string, ip netip.Addr) (Neighbour, error) {
	l, err := k.h.LinkByName(dev)
	if err != nil {
		return Neighbour{}, fmt.Errorf("interface %s: %w", dev, err)
	}
	fam := unix.AF_INET
	if ip.Is6() {
		fam = unix.AF_INET6
	}
	ns, err := retry(func() ([]netlink.Neigh, error) { return k.h.NeighList(l.Attrs().Index, fam) })
	if err != nil {
		return Neighbour{}, fmt.Errorf("list neighbours on %s: %w", dev, err)
	}
	for _, n := range ns {
		if addrOf(n.IP) == ip {
			return Neighbour{State: neighState(n.State), MAC: n.HardwareAddr.String()}, nil
		}
	}
	return Neighbour{State: "none"}, nil
}

func neighState(s int) string {
	switch {
	case s&netlink.NUD_PERMANENT != 0:
		return "permanent"
	case s&netlink.NUD_NOARP != 0:
		return "noarp"
	case s&netlink.NUD_REACHABLE != 0:
		return "reachable"
	case s&netlink.NUD_STALE != 0:
		return "stale"
	case s&netlink.NUD_DELAY != 0:
		return "delay"
	case s&netlink.NUD_PROBE != 0:
		return "probe"
	case s&netlink.NUD_INCOMPLETE != 0:
		return "incomplete"
	case s&netlink.NUD_FAILED != 0:
		return "failed"
	}
	return "none"
}
