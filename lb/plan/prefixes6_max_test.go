package plan

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"flowpin/lb/config"
	"flowpin/rules"
)

// prefixes6: auto takes what the kernel holds, which the config cannot
// bound: at most MaxPrefixes6 of the delegated prefixes, and no more than
// keep the translation rules within MaxTranslate6 with the other links'
// prefixes. The rest are left out with a warning.
func TestPrefixes6AutoBounded(t *testing.T) {
	for _, tc := range []struct {
		given, delegated, want int
	}{
		{0, 40, config.MaxPrefixes6},  // one link: no translation, but the list's bound
		{21, 40, config.MaxPrefixes6}, // 22 links x 32: 3872 rules
		{22, 32, 0},                   // a 23rd link with a /56 makes 4224
	} {
		var b strings.Builder
		b.WriteString("links:\n  - {name: auto, interface: wan99, gateway6: '2001:db8:99::1', prefixes6: auto}\n")
		ifs := []rules.Iface{iface("wan99", true, "2001:db8:99::2/64")}
		for i := range tc.given {
			fmt.Fprintf(&b, "  - {name: l%d, interface: wan%d, gateway6: '2001:db8:%x::1', prefixes6: [", i, i, i+1)
			for j := range config.MaxPrefixes6 {
				if j > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "2a%02x:%x:100::/56", i, j)
			}
			b.WriteString("]}\n")
			ifs = append(ifs, iface(fmt.Sprintf("wan%d", i), true, fmt.Sprintf("2001:db8:%x::2/64", i+1)))
		}
		c := mustParse(t, b.String())
		lo := iface("lo", true)
		for j := range tc.delegated {
			lo.Delegated = append(lo.Delegated, netip.MustParsePrefix(fmt.Sprintf("2c00:%x:100::/56", j)))
		}
		ifs = append(ifs, lo)
		d, err := Plan(c, ifaces(ifs...))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		var lists [][]netip.Prefix
		own := map[int][]netip.Prefix{}
		for _, p := range d.Prefixes6 {
			if p.Auto {
				got++
			}
			own[p.Link] = append(own[p.Link], p.Prefix)
		}
		for _, ps := range own {
			lists = append(lists, ps)
		}
		if got != tc.want {
			t.Errorf("%d given links, %d delegated: auto took %d, want %d", tc.given, tc.delegated, got, tc.want)
		}
		if n := config.Translate6Bound(lists); n > config.MaxTranslate6 {
			t.Errorf("%d given links, %d delegated: up to %d translation rules", tc.given, tc.delegated, n)
		}
		if len(d.Warnings) != tc.delegated-tc.want {
			t.Errorf("%d warnings, want one per prefix left out: %q", len(d.Warnings), d.Warnings)
		}
	}
}
