package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"flowpin/lb/config"
	"flowpin/lb/plan"
)

// prefixChanges says, one line each, which ISP prefixes (prefixes6)
// started or stopped being translated between two applied plans, and
// which appeared or went (prefixes6: auto following a delegation).
func prefixChanges(old, cur *plan.Desired) []string {
	was := map[string]plan.Prefix6Plan{}
	if old != nil {
		for _, p := range old.Prefixes6 {
			was[p.Prefix.String()] = p
		}
	}
	var out []string
	for _, p := range cur.Prefixes6 {
		name := cur.Links[p.Link].Name
		o, ok := was[p.Prefix.String()]
		delete(was, p.Prefix.String())
		switch {
		case !ok && old != nil:
			out = append(out, fmt.Sprintf("prefix %s of link %s appeared", p.Prefix, name))
		case p.Translated && (!ok || !o.Translated || !slices.Equal(o.To, p.To)):
			var to []string
			for _, m := range p.To {
				to = append(to, fmt.Sprintf("%s on %s", m.Prefix, cur.Links[m.Link].Name))
			}
			if len(to) == 0 {
				to = append(to, "nothing (no live link has a prefix of its length)")
			}
			out = append(out, fmt.Sprintf("prefix %s of link %s: its link is down, new flows are translated to %s", p.Prefix, name, strings.Join(to, ", ")))
		case !p.Translated && ok && o.Translated:
			out = append(out, fmt.Sprintf("prefix %s of link %s: its link is back, new flows leave by it untranslated (flows translated meanwhile stay where they are)", p.Prefix, name))
		}
	}
	if old != nil {
		for _, p := range old.Prefixes6 {
			if _, gone := was[p.Prefix.String()]; gone {
				out = append(out, fmt.Sprintf("prefix %s of link %s is gone", p.Prefix, old.Links[p.Link].Name))
			}
		}
	}
	return out
}

// held6 are the prefixes the link with prefixes6: auto had in the plan
// last applied. While that link is down they stay its own, translated,
// even when the kernel no longer holds their delegation (plan.Options.Held6).
type held6 struct {
	link     string
	prefixes []netip.Prefix
}

// heldOf is what the link with prefixes6: auto has in des.
func heldOf(c *config.Config, des *plan.Desired) held6 {
	i := slices.IndexFunc(c.Links, func(l config.Link) bool { return l.Prefixes6Auto })
	if i < 0 {
		return held6{}
	}
	h := held6{link: c.Links[i].Name}
	for _, p := range des.Prefixes6 {
		if p.Auto {
			h.prefixes = append(h.prefixes, p.Prefix)
		}
	}
	return h
}

// heldPrefixes6 are the prefixes held for the auto link: this daemon's
// own once it has applied a plan, else those its predecessor held before
// a reload, for the same link.
func (d *Daemon) heldPrefixes6() []netip.Prefix {
	h := d.held6
	if d.applied == nil && d.inherit != nil {
		h = d.inherit.held6
	}
	i := slices.IndexFunc(d.Config.Links, func(l config.Link) bool { return l.Prefixes6Auto })
	if i < 0 || h.link != d.Config.Links[i].Name {
		return nil
	}
	return h.prefixes
}
