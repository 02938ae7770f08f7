package status

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"flowpin/lb/plan"
	"flowpin/rules"
)

// Status reads each link's prefixes and their translations back from the
// table as planned, up and with isp2 down.
func TestStatusPrefixes6(t *testing.T) {
	c := statusConfig(t, `links:
  - {name: isp1, interface: wan1, gateway6: '2001:db8:1::1', prefixes6: [2001:db8:1:100::/56]}
  - {name: isp2, interface: wan2, gateway6: '2001:db8:2::1', prefixes6: [2001:db8:2:100::/56, 2001:db8:2:200::/60]}
`)
	ifs := map[string]rules.Iface{
		"wan1": {Name: "wan1", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::2/64")}},
		"wan2": {Name: "wan2", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:2::2/64")}},
	}
	for _, tc := range []struct {
		name string
		down map[string]string
		want [][]Prefix6Status
		text string
	}{
		{"up", nil, [][]Prefix6Status{
			{{Prefix: "2001:db8:1:100::/56", OwnLink: true}},
			{{Prefix: "2001:db8:2:100::/56", OwnLink: true}, {Prefix: "2001:db8:2:200::/60", OwnLink: true}},
		}, "prefixes6 of isp1: 2001:db8:1:100::/56 (isp1, own link, untranslated)\nprefixes6 of isp2: 2001:db8:2:100::/56 (isp2, own link, untranslated); 2001:db8:2:200::/60 (isp2, own link, untranslated)\n"},
		{"isp2 down", map[string]string{"isp2": "down"}, [][]Prefix6Status{
			{{Prefix: "2001:db8:1:100::/56", OwnLink: true}},
			{{Prefix: "2001:db8:2:100::/56", Translated: true, To: []Prefix6MapStatus{{Link: "isp1", Prefix: "2001:db8:1:100::/56"}}}, {Prefix: "2001:db8:2:200::/60"}},
		}, "prefixes6 of isp2: 2001:db8:2:100::/56 (isp2, down: translated to 2001:db8:1:100::/56 on isp1); 2001:db8:2:200::/60 (isp2, down: no live link has a prefix of its length, so it is not translated)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := plan.With(c, ifs, plan.Options{Down6: tc.down})
			if err != nil {
				t.Fatal(err)
			}
			a := &Applied{Table: true, Acct: true, Rules: d.Routing.Rules, Prefixes6: d.NFT.Current().Prefixes6()}
			s := BuildStatus(c, a, Tally{}, time.Unix(0, 0))
			var got [][]Prefix6Status
			for _, l := range s.Links {
				got = append(got, l.Prefixes6)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("prefixes (-want +got):\n%s", diff)
			}
			var b bytes.Buffer
			if err := WriteStatus(&b, s); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(b.String(), tc.text) {
				t.Errorf("text lacks %q:\n%s", tc.text, b.String())
			}
		})
	}
}
