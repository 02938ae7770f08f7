package diagnose

import (
	"fmt"
	"net/netip"

	"flowpin/lb/plan"
	"flowpin/nft"
)

// prefixOf is the planned ISP prefix (prefixes6) that holds a, or nil.
func (x *explainer) prefixOf(a netip.Addr) *plan.Prefix6Plan {
	if !a.IsValid() {
		return nil
	}
	for i, pp := range x.d.Prefixes6 {
		if pp.Prefix.Contains(a) {
			return &x.d.Prefixes6[i]
		}
	}
	return nil
}

// natPrefix is the nat chain for a new flow from an ISP's prefix: left
// alone on its own link; translated 1:1 onto the link it leaves by when
// the table holds that mapping (its own link is down); else masqueraded
// by a link with NAT, or sent as it is, which that ISP will likely drop.
// The translation is read from the table, as the daemon last wrote it.
func (x *explainer) natPrefix(src netip.Addr) {
	e, out, pp := x.e, x.out, x.prefixOf(src)
	own := x.d.Links[pp.Link].Name
	if out.Name == own {
		e.add("nat", "%s is link %s's own prefix: it leaves untranslated, no masquerade (source %s)", pp.Prefix, own, src)
		return
	}
	cur, err := x.k.NFT.Read()
	if err != nil {
		e.Notes = append(e.Notes, fmt.Sprintf("reading the nft table: %v", err))
		return
	}
	for _, ap := range cur.Prefixes6() {
		if ap.Prefix != pp.Prefix {
			continue
		}
		for _, t := range ap.To {
			if t.Link == out.Name {
				e.Source = nft.MapAddr(src, t.To)
				e.add("nat", "link %s is down: %s is translated 1:1 onto link %s's %s, host bits kept: source becomes %s (conntrack NAT, held for the flow's life)", own, pp.Prefix, out.Name, t.To, e.Source)
				return
			}
		}
	}
	if out.NAT {
		if out.Addr.IsValid() {
			e.Source = out.Addr.Addr()
		}
		e.add("nat", "%s is link %s's prefix and %s has no prefix of its length: masquerade on %s, source becomes %s", pp.Prefix, own, out.Name, out.Interface, e.Source)
		return
	}
	e.add("nat", "%s is link %s's prefix, leaving untranslated by link %s, whose ISP will likely drop it (no translation to %s in the table)", pp.Prefix, own, out.Name, out.Name)
}
