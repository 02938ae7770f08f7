package status

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"flowpin/rules"
)

// Prefix6Status is one of a link's ISP prefixes: whether new flows from
// it are translated now (its link is down), and to what on which link.
type Prefix6Status struct {
	Prefix string `json:"prefix"`
	// OwnLink: new flows from it leave by its own link (its ip rule is
	// in place); false while the link is down.
	OwnLink    bool               `json:"own_link"`
	Translated bool               `json:"translated"`
	To         []Prefix6MapStatus `json:"to,omitempty"`
}

// Prefix6MapStatus is where a translated prefix leaves: as Prefix, by
// Link.
type Prefix6MapStatus struct {
	Link   string `json:"link"`
	Prefix string `json:"prefix"`
}

// prefixes6Of lists link's prefixes as applied. A prefix is translated
// when the table maps it elsewhere; a down link whose prefix no live link
// can take (none has one of its length) has it untranslated, and says so
// in the plan's warnings.
func prefixes6Of(link string, a *Applied) []Prefix6Status {
	var out []Prefix6Status
	for _, p := range a.Prefixes6 {
		if p.Link != link {
			continue
		}
		ps := Prefix6Status{Prefix: p.Prefix.String(), Translated: len(p.To) > 0}
		ps.OwnLink = slices.ContainsFunc(a.Rules, func(r rules.Rule) bool { return r.Family == rules.V6 && r.Src == p.Prefix })
		for _, t := range p.To {
			ps.To = append(ps.To, Prefix6MapStatus{Link: t.Link, Prefix: t.To.String()})
		}
		out = append(out, ps)
	}
	return out
}

// writePrefixes6 is one line per link with prefixes: each prefix, and
// where it goes while translated.
func writePrefixes6(w io.Writer, s *Status) error {
	for _, l := range s.Links {
		if len(l.Prefixes6) == 0 {
			continue
		}
		var parts []string
		for _, p := range l.Prefixes6 {
			switch {
			case p.OwnLink:
				parts = append(parts, fmt.Sprintf("%s (%s, own link, untranslated)", p.Prefix, Printable(l.Name)))
				continue
			case !p.Translated:
				parts = append(parts, fmt.Sprintf("%s (%s, down: no live link has a prefix of its length, so it is not translated)", p.Prefix, Printable(l.Name)))
				continue
			}
			var to []string
			for _, m := range p.To {
				to = append(to, fmt.Sprintf("%s on %s", m.Prefix, Printable(m.Link)))
			}
			parts = append(parts, fmt.Sprintf("%s (%s, down: translated to %s)", p.Prefix, Printable(l.Name), strings.Join(to, ", ")))
		}
		if _, err := fmt.Fprintf(w, "prefixes6 of %s: %s\n", Printable(l.Name), strings.Join(parts, "; ")); err != nil {
			return err
		}
	}
	return nil
}
