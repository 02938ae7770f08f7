package use

import (
	"fmt"
	"slices"
	"strings"

	"flowpin/lb/config"
	"flowpin/lb/plan"
	"flowpin/nft"
	"flowpin/rules"
)

// familyUse is what an address family of the link means for a use.
type familyUse struct {
	Name string // IPv4, IPv6
	// Why the link carries none of the family now; "" when it does.
	Why string
	// InConfig: the link has the family in its config (a gateway).
	InConfig bool
}

// families says which address families link i of c carries in the
// kernel now, given the records in flowpin's table and the rules and
// routes flowpin owns. The mark use gives the command's packets routes
// them by the link's table only if the link's fwmark rule is there and
// the table has a default route: without either, they fall through to
// the rules after it and leave by another link. It is an error if the
// link is not in the applied state at all (never applied with this
// config, or applied with another mark or table), or carries neither
// family. d is the plan, for the reason a family is not usable.
func families(c *config.Config, i int, d *plan.Desired, records nft.Records, owned rules.State) ([2]familyUse, error) {
	l := c.Links[i]
	rec, ok := records.Link(l.Name)
	switch {
	case !ok:
		return [2]familyUse{}, fmt.Errorf("link %s is not applied in this network namespace (flowpin's table has no record of it): flowpin apply -c %s first", l.Name, c.Path)
	case rec.Mark != l.Mark || rec.Table != l.Table:
		return [2]familyUse{}, fmt.Errorf("link %s is applied with mark %#x table %d, and %s gives it mark %#x table %d: flowpin apply -c %s first", l.Name, rec.Mark, rec.Table, c.Path, l.Mark, l.Table, c.Path)
	}
	fams := [2]familyUse{
		{Name: "IPv4", InConfig: l.HasV4()},
		{Name: "IPv6", InConfig: l.HasV6()},
	}
	for k, fam := range []int{rules.V4, rules.V6} {
		f := &fams[k]
		rule := slices.ContainsFunc(owned.Rules, func(r rules.Rule) bool {
			return r.Family == fam && !r.Src.IsValid() && r.Mark == l.Mark && r.Mask == c.MarkMask && r.Table == l.Table
		})
		route := slices.ContainsFunc(owned.Routes, func(r rules.Route) bool {
			return r.Family == fam && r.Table == l.Table && r.Dst.Bits() == 0 && r.Type == ""
		})
		why := ""
		if fam == rules.V4 {
			why = d.Links[i].Why
		} else {
			why = d.Links[i].V6.Why
		}
		switch {
		case rule && route:
		case !f.InConfig && fam == rules.V4:
			f.Why = "no gateway in " + c.Path
		case !f.InConfig:
			f.Why = "no gateway6 in " + c.Path
		case why != "":
			f.Why = why
		case !rule:
			f.Why = fmt.Sprintf("no ip rule for its mark %#x/%#x yet: flowpin apply", l.Mark, c.MarkMask)
		default:
			f.Why = fmt.Sprintf("its table %d has no default route yet: flowpin apply", l.Table)
		}
	}
	if fams[0].Why != "" && fams[1].Why != "" {
		var whys []string
		for _, f := range fams {
			if f.InConfig {
				whys = append(whys, f.Name+": "+f.Why)
			}
		}
		return fams, fmt.Errorf("link %s cannot carry traffic now (%s)", l.Name, strings.Join(whys, "; "))
	}
	return fams, nil
}
