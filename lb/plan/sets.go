package plan

import (
	"go4.org/netipx"

	"flowpin/lb/config"
	"flowpin/nft"
)

// namedSets are the config's sets as the table holds them. Every set is
// made, used by a rule or not: dnsmasq's nftset lines name them, and
// dnsmasq logs an error for each answer it cannot add to a missing set.
func namedSets(c *config.Config) []nft.NamedSet {
	var out []nft.NamedSet
	for _, s := range c.Sets {
		n := nft.NamedSet{Name: s.Name}
		if s.Domain() {
			n.Timeout = s.Timeout
		} else {
			// Merged: an interval set refuses overlapping elements, and
			// adjacent ones are one element fewer.
			var b netipx.IPSetBuilder
			for _, p := range s.Elems {
				b.AddPrefix(p)
			}
			set, _ := b.IPSet()
			n.Ranges = set.Ranges()
		}
		out = append(out, n)
	}
	return out
}
