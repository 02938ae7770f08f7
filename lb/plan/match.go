package plan

import (
	"fmt"
	"net/netip"
	"slices"

	"flowpin/lb/config"
)

// Flow is what the traffic rules look at in a new flow's first packet.
// Zero fields are unknown: Proto 0, ports 0, Src invalid.
type Flow struct {
	Src, Dst     netip.Addr
	Proto        uint8
	Sport, Dport uint16
	// Iif: the interface the packet arrived on; "" for the router's own.
	Iif string
	// InSet says whether the named set holds an address now (the kernel's
	// sets); nil: unknown.
	InSet func(set string, a netip.Addr) bool
}

// Match finds the traffic rule that decides the policy of f, as the
// classify chain does: the first rule whose every selector matches. It
// returns -1 when none does (the default policy). unsure names a selector
// of an earlier or the matching rule that the flow leaves unknown (no
// source, no ports): the answer then assumes it does not match.
func Match(rs []config.Rule, f Flow) (i int, unsure string) {
	for i, r := range rs {
		ok, why := matches(r, f)
		if why != "" && unsure == "" {
			unsure = fmt.Sprintf("rule %s needs the flow's %s", r.Name, why)
		}
		if ok {
			return i, unsure
		}
	}
	return -1, unsure
}

func matches(r config.Rule, f Flow) (bool, string) {
	is4 := f.Dst.Unmap().Is4()
	switch r.Proto {
	case config.TCP, config.UDP, config.ICMP:
		want := map[config.Proto]uint8{config.TCP: 6, config.UDP: 17, config.ICMP: 1}[r.Proto]
		if r.Proto == config.ICMP && !is4 {
			want = 58
		}
		if f.Proto == 0 {
			return false, "protocol (--proto)"
		}
		if f.Proto != want {
			return false, ""
		}
	}
	if r.IIF != "" && r.IIF != f.Iif {
		return false, ""
	}
	if !inPrefixes(r.Dst, f.Dst.Unmap(), is4) {
		return false, ""
	}
	if r.SrcSet != "" || r.DstSet != "" {
		if f.InSet == nil {
			return false, "set membership"
		}
		if r.DstSet != "" && !f.InSet(r.DstSet, f.Dst.Unmap()) {
			return false, ""
		}
		if r.SrcSet != "" {
			if !f.Src.IsValid() {
				return false, "source (--from)"
			}
			if !f.InSet(r.SrcSet, f.Src.Unmap()) {
				return false, ""
			}
		}
	}
	if len(r.Src) > 0 && !f.Src.IsValid() {
		// The kernel picks the source of a local flow; a forwarded one has it.
		if !slices.ContainsFunc(r.Src, func(p netip.Prefix) bool { return p.Addr().Is4() == is4 }) {
			return false, ""
		}
		return false, "source (--from)"
	}
	if f.Src.IsValid() && !inPrefixes(r.Src, f.Src.Unmap(), is4) {
		return false, ""
	}
	for _, sel := range []struct {
		rs   []config.PortRange
		port uint16
		name string
	}{{r.SrcPorts, f.Sport, "source port (--sport)"}, {r.DstPorts, f.Dport, "destination port (--dport)"}} {
		if len(sel.rs) == 0 {
			continue
		}
		if sel.port == 0 {
			return false, sel.name
		}
		if !slices.ContainsFunc(sel.rs, func(p config.PortRange) bool { return p.Lo <= sel.port && sel.port <= p.Hi }) {
			return false, ""
		}
	}
	return true, ""
}

// inPrefixes: an empty list matches every address; otherwise a prefix of
// the flow's family must hold a.
func inPrefixes(ps []netip.Prefix, a netip.Addr, is4 bool) bool {
	if len(ps) == 0 {
		return true
	}
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Addr().Is4() == is4 && p.Contains(a) })
}
