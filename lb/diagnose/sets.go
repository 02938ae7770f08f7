package diagnose

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"flowpin/lb/config"
	"flowpin/nft"
)

// SetReader says whether one of the table's sets holds an address
// (nft.Conn).
type SetReader interface {
	SetHas(set string, a netip.Addr) (bool, error)
}

// inSet says whether the config's set named name holds a now, as the
// kernel's set of a's family does. A set that cannot be read holds
// nothing, with a note.
func (x *explainer) inSet(name string, a netip.Addr) bool {
	sr, ok := x.k.NFT.(SetReader)
	if !ok {
		return false
	}
	has, err := sr.SetHas(nft.SetName(name, a.Is6()), a)
	if err != nil {
		x.e.Notes = append(x.e.Notes, err.Error())
		return false
	}
	return has
}

// sets names the config's sets that hold the packet's destination and
// source: a domain set holds what a resolver added, so whether a name's
// flows follow its rule depends on it.
func (x *explainer) sets() {
	if len(x.c.Sets) == 0 {
		return
	}
	for _, side := range []struct {
		what string
		a    netip.Addr
	}{{"destination", x.p.Dst}, {"source", x.p.Src}} {
		if !side.a.IsValid() {
			continue
		}
		a := side.a.Unmap()
		var in []string
		for _, s := range x.c.Sets {
			if x.inSet(s.Name, a) {
				in = append(in, fmt.Sprintf("%s (%s)", s.Name, nft.SetName(s.Name, a.Is6())))
				x.e.Sets = append(x.e.Sets, side.what+" in "+s.Name)
			}
		}
		if len(in) == 0 {
			x.e.add("sets", "%s %s is in none of the config's sets", side.what, a)
			continue
		}
		x.e.add("sets", "%s %s is in set %s", side.what, a, strings.Join(in, ", "))
	}
}

// SetDriftReader compares a file set's elements in the kernel with
// what spec writes (nft.Conn).
type SetDriftReader interface {
	FileSetDrift(spec nft.Spec, names []string) ([]nft.SetDrift, error)
}

// verifySets checks that each of the config's sets is in the table, one
// per family, with how many elements it holds, that a file set holds the
// elements flowpin wrote and no others, and names a set no rule uses (a
// resolver may still fill it; no flow follows it).
func (k *Kernel) verifySets(r *VerifyReport, c *config.Config, spec nft.Spec) error {
	if len(c.Sets) == 0 {
		return nil
	}
	cur, err := k.NFT.Read()
	if err != nil {
		return err
	}
	counter, _ := k.NFT.(interface {
		SetCounts(names []string) (map[string]int, error)
	})
	drifted := map[string][]string{}
	if dr, ok := k.NFT.(SetDriftReader); ok {
		// Every file set, every time: a count would miss an element
		// deleted and another added.
		drift, err := dr.FileSetDrift(spec, spec.FileSets())
		if err != nil {
			return err
		}
		for _, d := range drift {
			set := strings.TrimPrefix(strings.TrimPrefix(d.Set, "set4_"), "set6_")
			drifted[set] = append(drifted[set], d.String())
		}
	}
	for _, s := range c.Sets {
		name := "set " + s.Name
		n4, n6 := nft.SetName(s.Name, false), nft.SetName(s.Name, true)
		if !slices.Contains(cur.Sets, n4) || !slices.Contains(cur.Sets, n6) {
			r.fail(name, applyFix, "missing from table inet %s (%s, %s)", nft.TableName, n4, n6)
			continue
		}
		if d := drifted[s.Name]; len(d) > 0 {
			r.fail(name, applyFix, "%s: elements deleted or added by hand, so flows escape the set's rules or follow them wrongly", strings.Join(d, "; "))
			continue
		}
		var used []string
		for _, rl := range c.Rules {
			if rl.SrcSet == s.Name || rl.DstSet == s.Name {
				used = append(used, rl.Name)
			}
		}
		detail := fmt.Sprintf("%s and %s", n4, n6)
		if counter != nil {
			if counts, err := counter.SetCounts([]string{n4, n6}); err == nil {
				detail = fmt.Sprintf("%s (%d elements) and %s (%d)", n4, counts[n4], n6, counts[n6])
			}
		}
		if len(used) == 0 {
			r.skip(name, "%s; used by no rule, so no flow follows it", detail)
			continue
		}
		r.pass(name, "%s; matched by rule %s", detail, strings.Join(used, ", "))
	}
	return nil
}
