package rules

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Rule actions, as RuleInfo.Action has them (FR_ACT_*,
// linux/fib_rules.h).
const (
	ActionToTable     = nl.FR_ACT_TO_TBL
	ActionGoto        = nl.FR_ACT_GOTO
	ActionNop         = nl.FR_ACT_NOP
	ActionBlackhole   = nl.FR_ACT_BLACKHOLE
	ActionUnreachable = nl.FR_ACT_UNREACHABLE
	ActionProhibit    = nl.FR_ACT_PROHIBIT
)

// RuleInfo is one ip rule with every selector and its action, flowpin's or
// not. netlink v1.3.1's RuleList drops the action (blackhole, unreachable,
// ...) and reads a goto as a lookup, which verify and explain must not
// confuse, so the dump is decoded here.
type RuleInfo struct {
	Family   int
	Priority int
	Action   uint8 // ActionToTable, ActionGoto, ActionBlackhole, ...
	Table    int
	Goto     int
	Src, Dst netip.Prefix // invalid: all
	Mark     uint32
	Mask     uint32 // 0: no fwmark selector
	Iif, Oif string
	Invert   bool
	Tos      uint8
	IPProto  uint8
	Sport    [2]uint16 // inclusive range; zero: any
	Dport    [2]uint16
	UID      *[2]uint32
	L3mdev   bool
	// SuppressPrefixlen -1: none.
	SuppressPrefixlen int
	Protocol          uint8
}

// Owned: flowpin added it.
func (r RuleInfo) Owned() bool { return r.Protocol == Protocol }

// Terminal: a matching packet stops here (dropped or rejected) rather than
// being looked up in a table.
func (r RuleInfo) Terminal() bool {
	return r.Action == nl.FR_ACT_BLACKHOLE || r.Action == nl.FR_ACT_UNREACHABLE || r.Action == nl.FR_ACT_PROHIBIT
}

// String renders the rule the way `ip rule show` prints it.
func (r RuleInfo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d:\t", r.Priority)
	if r.Invert {
		b.WriteString("not ")
	}
	b.WriteString(r.Selector())
	switch r.Action {
	case nl.FR_ACT_TO_TBL:
		fmt.Fprintf(&b, " lookup %s", TableName(r.Table))
		if r.SuppressPrefixlen >= 0 {
			fmt.Fprintf(&b, " suppress_prefixlength %d", r.SuppressPrefixlen)
		}
	case nl.FR_ACT_GOTO:
		fmt.Fprintf(&b, " goto %d", r.Goto)
	case nl.FR_ACT_NOP:
		b.WriteString(" nop")
	case nl.FR_ACT_BLACKHOLE:
		b.WriteString(" blackhole")
	case nl.FR_ACT_UNREACHABLE:
		b.WriteString(" unreachable")
	case nl.FR_ACT_PROHIBIT:
		b.WriteString(" prohibit")
	}
	if r.Protocol != 0 && r.Protocol != unix.RTPROT_BOOT && r.Protocol != unix.RTPROT_KERNEL {
		fmt.Fprintf(&b, " proto %d", r.Protocol)
	}
	return b.String()
}

// Selector is the match part of the rule as ip(8) prints it.
func (r RuleInfo) Selector() string {
	var parts []string
	pfx := func(p netip.Prefix) string {
		if p.IsSingleIP() {
			return p.Addr().String()
		}
		return p.Masked().String()
	}
	if r.Src.IsValid() {
		parts = append(parts, "from "+pfx(r.Src))
	} else {
		parts = append(parts, "from all")
	}
	if r.Dst.IsValid() {
		parts = append(parts, "to "+pfx(r.Dst))
	}
	if r.Tos != 0 {
		parts = append(parts, fmt.Sprintf("tos %#x", r.Tos))
	}
	if r.Mask != 0 {
		parts = append(parts, fmt.Sprintf("fwmark %#x/%#x", r.Mark, r.Mask))
	}
	if r.Iif != "" {
		parts = append(parts, "iif "+r.Iif)
	}
	if r.Oif != "" {
		parts = append(parts, "oif "+r.Oif)
	}
	if r.L3mdev {
		parts = append(parts, "l3mdev")
	}
	if r.UID != nil {
		parts = append(parts, fmt.Sprintf("uidrange %d-%d", r.UID[0], r.UID[1]))
	}
	if r.IPProto != 0 {
		parts = append(parts, "ipproto "+ProtoName(r.IPProto))
	}
	portRange := func(name string, p [2]uint16) {
		switch {
		case p == [2]uint16{}:
		case p[0] == p[1]:
			parts = append(parts, fmt.Sprintf("%s %d", name, p[0]))
		default:
			parts = append(parts, fmt.Sprintf("%s %d-%d", name, p[0], p[1]))
		}
	}
	portRange("sport", r.Sport)
	portRange("dport", r.Dport)
	return strings.Join(parts, " ")
}

// Packet is what the rule selectors look at. Iif is "lo" for a locally
// generated packet, as the kernel has it (flowi4_iif = LOOPBACK_IFINDEX).
type Packet struct {
	Src, Dst     netip.Addr // Src invalid: not chosen yet (0.0.0.0)
	Iif, Oif     string
	Mark         uint32
	Proto        uint8
	Sport, Dport uint16
	UID          *uint32
}

// Matches says whether the rule's selectors match p, as fib_rule_match
// and fib4_rule_match decide it. It is used only to name the rule behind
// an answer the kernel already gave, never to route.
func (r RuleInfo) Matches(p Packet) bool {
	m := r.matchSelectors(p)
	if r.Invert {
		return !m
	}
	return m
}

func (r RuleInfo) matchSelectors(p Packet) bool {
	if r.Iif != "" && r.Iif != p.Iif {
		return false
	}
	if r.Oif != "" && r.Oif != p.Oif {
		return false
	}
	if (r.Mark^p.Mark)&r.Mask != 0 {
		return false
	}
	if r.Src.IsValid() {
		src := p.Src
		if !src.IsValid() {
			src = netip.IPv4Unspecified()
		}
		if !r.Src.Contains(src) {
			return false
		}
	}
	if r.Dst.IsValid() && !r.Dst.Contains(p.Dst) {
		return false
	}
	if r.IPProto != 0 && r.IPProto != p.Proto {
		return false
	}
	inRange := func(rg [2]uint16, v uint16) bool { return rg == [2]uint16{} || (v >= rg[0] && v <= rg[1]) }
	if !inRange(r.Sport, p.Sport) || !inRange(r.Dport, p.Dport) {
		return false
	}
	if r.UID != nil {
		// Without a socket the kernel looks up as uid 0
		// (sock_net_uid(net, NULL)).
		uid := uint32(0)
		if p.UID != nil {
			uid = *p.UID
		}
		if uid < r.UID[0] || uid > r.UID[1] {
			return false
		}
	}
	// tos and l3mdev are not modelled: such a rule never "matches" here,
	// so it is never named as the one that routed a packet.
	return r.Tos == 0 && !r.L3mdev
}

// Rule is the part of r that flowpin writes and compares.
func (r RuleInfo) Rule() Rule {
	out := Rule{Family: r.Family, Priority: r.Priority, Src: r.Src, Mark: r.Mark, Mask: r.Mask, Iif: r.Iif, Invert: r.Invert, Table: r.Table, SuppressPrefixlen: r.SuppressPrefixlen}
	if r.Action == ActionGoto {
		out.Goto, out.Table = r.Goto, 0
	}
	return out
}

// ListRules dumps every ip rule of family, sorted by priority. It is the
// one rule reader: Owned and ForeignRules are built from it.
func (k *Kernel) ListRules(family int) ([]RuleInfo, error) {
	rs, err := retry(func() ([]RuleInfo, error) { return k.listRules(family) })
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	return rs, nil
}

func (k *Kernel) listRules(family int) ([]RuleInfo, error) {
	req := k.request(unix.RTM_GETRULE, unix.NLM_F_DUMP|unix.NLM_F_REQUEST)
	req.AddData(nl.NewIfInfomsg(family))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWRULE)
	if err != nil {
		return nil, err
	}
	var out []RuleInfo
	for _, m := range msgs {
		hdr := nl.DeserializeRtMsg(m)
		attrs, err := nl.ParseRouteAttr(m[hdr.Len():])
		if err != nil {
			return nil, err
		}
		r := RuleInfo{
			Family: int(hdr.Family), Action: hdr.Type, Table: int(hdr.Table), Tos: hdr.Tos,
			Invert: hdr.Flags&0x2 != 0, // FIB_RULE_INVERT
			Goto:   -1, SuppressPrefixlen: -1,
		}
		u32 := func(b []byte) uint32 { return binary.NativeEndian.Uint32(b) }
		str := func(b []byte) string { return strings.TrimRight(string(b), "\x00") }
		for _, a := range attrs {
			v := a.Value
			switch a.Attr.Type {
			case nl.FRA_TABLE:
				r.Table = int(u32(v))
			case nl.FRA_PRIORITY:
				r.Priority = int(u32(v))
			case nl.FRA_SRC:
				r.Src = netip.PrefixFrom(addrOf(v), int(hdr.Src_len))
			case nl.FRA_DST:
				r.Dst = netip.PrefixFrom(addrOf(v), int(hdr.Dst_len))
			case nl.FRA_FWMARK:
				r.Mark = u32(v)
				if r.Mask == 0 {
					// A mark without a mask matches all 32 bits.
					r.Mask = 0xffffffff
				}
			case nl.FRA_FWMASK:
				r.Mask = u32(v)
			case nl.FRA_IIFNAME:
				r.Iif = str(v)
			case nl.FRA_OIFNAME:
				r.Oif = str(v)
			case nl.FRA_GOTO:
				r.Goto = int(u32(v))
			case nl.FRA_SUPPRESS_PREFIXLEN:
				if s := u32(v); s != 0xffffffff {
					r.SuppressPrefixlen = int(s)
				}
			case nl.FRA_IP_PROTO:
				r.IPProto = v[0]
			case nl.FRA_SPORT_RANGE:
				r.Sport = [2]uint16{binary.NativeEndian.Uint16(v), binary.NativeEndian.Uint16(v[2:])}
			case nl.FRA_DPORT_RANGE:
				r.Dport = [2]uint16{binary.NativeEndian.Uint16(v), binary.NativeEndian.Uint16(v[2:])}
			case nl.FRA_UID_RANGE:
				r.UID = &[2]uint32{u32(v), u32(v[4:])}
			case nl.FRA_PROTOCOL:
				r.Protocol = v[0]
			case nl.FRA_L3MDEV:
				r.L3mdev = v[0] != 0
			}
		}
		out = append(out, r)
	}
	slices.SortStableFunc(out, func(a, b RuleInfo) int { return a.Priority - b.Priority })
	return out, nil
}
