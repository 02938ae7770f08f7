package plan

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"flowpin/rules"
)

// prefixes6Config: each ISP routes a /56 to the site; isp2 also has NAT66
// for a ULA LAN; isp3 has neither prefix nor NAT.
const prefixes6Config = `links:
  - {name: isp1, interface: wan1, gateway6: '2001:db8:1::1', weight: 3, prefixes6: [2001:db8:1:100::/56]}
  - {name: isp2, interface: wan2, gateway6: '2001:db8:2::1', nat: true, prefixes6: [2001:db8:2:100::/56, 2001:db8:2:200::/60]}
`

func prefixes6Ifaces() map[string]rules.Iface {
	return ifaces(iface("wan1", true, "2001:db8:1::2/64"), iface("wan2", true, "2001:db8:2::2/64"), iface("lan", true, "2001:db8:1:100::1/64", "2001:db8:2:100::1/64", "fd00::1/64"))
}

func prefixRulesOf(d *Desired) []string {
	var out []string
	for _, r := range d.Routing.Rules {
		if r.Src.IsValid() && !r.Src.IsSingleIP() {
			out = append(out, r.Command("add"))
		}
	}
	return out
}

func natRulesOf(d *Desired) []string {
	var out []string
	for _, r := range d.NFT.Planned() {
		if r.Chain == "nat" && strings.Contains(r.Text, "saddr") {
			out = append(out, r.Text)
		}
	}
	return out
}

func TestPrefixes6Up(t *testing.T) {
	d, err := Plan(mustParse(t, prefixes6Config), prefixes6Ifaces())
	if err != nil {
		t.Fatal(err)
	}
	// Every prefix by its own link's table, after main (1300) and before
	// forwarded packets are sent past the host's source rules (1400).
	want := []string{
		"ip -6 rule add pref 1399 from 2001:db8:1:100::/56 lookup 101 proto 201",
		"ip -6 rule add pref 1399 from 2001:db8:2:100::/56 lookup 102 proto 201",
		"ip -6 rule add pref 1399 from 2001:db8:2:200::/60 lookup 102 proto 201",
	}
	if diff := cmp.Diff(want, prefixRulesOf(d)); diff != "" {
		t.Errorf("prefix rules (-want +got):\n%s", diff)
	}
	var prio []int
	for _, r := range d.Routing.Rules {
		if r.Family == rules.V6 {
			prio = append(prio, r.Priority)
		}
	}
	if !slices.IsSorted(prio) {
		t.Errorf("rules out of order: %v", prio)
	}
	// Never masqueraded on their own link, nothing translated.
	wantNAT := []string{
		`oifname "wan1" ip6 saddr 2001:db8:1:100::/56 accept`,
		`oifname "wan2" ip6 saddr 2001:db8:2:100::/56 accept`,
		`oifname "wan2" ip6 saddr 2001:db8:2:200::/60 accept`,
	}
	if diff := cmp.Diff(wantNAT, natRulesOf(d)); diff != "" {
		t.Errorf("nat rules (-want +got):\n%s", diff)
	}
	if len(d.Warnings) != 0 {
		t.Errorf("warnings: %q", d.Warnings)
	}
	golden(t, "prefixes6-up.golden", strings.Join(FullScript(d), "\n")+"\n")
}

func TestPrefixes6Down(t *testing.T) {
	c := mustParse(t, prefixes6Config)
	d, err := With(c, prefixes6Ifaces(), Options{Down6: map[string]string{"isp2": "3 bad rounds"}})
	if err != nil {
		t.Fatal(err)
	}
	// isp2's prefixes lose their rules (they take the balance route, now
	// isp1 alone); its /56 maps onto isp1's /56, its /60 onto nothing.
	want := []string{"ip -6 rule add pref 1399 from 2001:db8:1:100::/56 lookup 101 proto 201"}
	if diff := cmp.Diff(want, prefixRulesOf(d)); diff != "" {
		t.Errorf("prefix rules (-want +got):\n%s", diff)
	}
	wantNAT := []string{
		`oifname "wan1" ip6 saddr 2001:db8:2:100::/56 snat ip6 prefix to 2001:db8:1:100::/56`,
		`oifname "wan1" ip6 saddr 2001:db8:1:100::/56 accept`,
		`oifname "wan2" ip6 saddr 2001:db8:2:100::/56 accept`,
		`oifname "wan2" ip6 saddr 2001:db8:2:200::/60 accept`,
	}
	if diff := cmp.Diff(wantNAT, natRulesOf(d)); diff != "" {
		t.Errorf("nat rules (-want +got):\n%s", diff)
	}
	wantWarn := []string{"link isp2 is down: new flows from its 2001:db8:2:200::/60 that leave by link isp1 leave untranslated, and its ISP will likely drop them: isp1 has no /60 in prefixes6 to translate it to"}
	if diff := cmp.Diff(wantWarn, d.Warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	got := d.Prefixes6[1]
	if !got.Translated || len(got.To) != 1 || got.To[0] != (Prefix6Map{Link: 0, Prefix: netip.MustParsePrefix("2001:db8:1:100::/56")}) {
		t.Errorf("isp2's /56 planned as %+v", got)
	}
	golden(t, "prefixes6-isp2-down.golden", strings.Join(FullScript(d), "\n")+"\n")
}

// With several live links, a down link's prefix maps onto each of them,
// and the balance route spreads its flows by weight.
func TestPrefixes6DownThreeLinks(t *testing.T) {
	c := mustParse(t, prefixes6Config+`  - {name: isp3, interface: wan3, gateway6: '2001:db8:3::1', prefixes6: [2001:db8:3:100::/56]}
`)
	ifs := prefixes6Ifaces()
	ifs["wan3"] = iface("wan3", true, "2001:db8:3::2/64")
	d, err := With(c, ifs, Options{Down6: map[string]string{"isp1": "down"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`oifname "wan2" ip6 saddr 2001:db8:1:100::/56 snat ip6 prefix to 2001:db8:2:100::/56`,
		`oifname "wan3" ip6 saddr 2001:db8:1:100::/56 snat ip6 prefix to 2001:db8:3:100::/56`,
	}
	if diff := cmp.Diff(want, natRulesOf(d)[:2]); diff != "" {
		t.Errorf("translations (-want +got):\n%s", diff)
	}
}

// A link whose interface is down (down at boot) is translated too; a
// link with nat: true and no prefix of the length masquerades instead.
func TestPrefixes6UnusableLink(t *testing.T) {
	c := mustParse(t, `links:
  - {name: isp1, interface: wan1, gateway6: '2001:db8:1::1', prefixes6: [2001:db8:1:100::/56]}
  - {name: isp2, interface: wan2, gateway6: '2001:db8:2::1', nat: true}
`)
	ifs := ifaces(iface("wan1", false, "2001:db8:1::2/64"), iface("wan2", true, "2001:db8:2::2/64"))
	d, err := Plan(c, ifs)
	if err != nil {
		t.Fatal(err)
	}
	if got := prefixRulesOf(d); len(got) != 0 {
		t.Errorf("prefix rules of a down link: %q", got)
	}
	if !d.Prefixes6[0].Translated {
		t.Error("not translated")
	}
	want := "link isp1 is down: new flows from its 2001:db8:1:100::/56 that leave by link isp2 are masqueraded to its address (nat: true): isp2 has no /56 in prefixes6 to translate it to"
	if !slices.Contains(d.Warnings, want) {
		t.Errorf("warnings %q lack %q", d.Warnings, want)
	}
}

// prefixes6: auto takes the delegated-prefix routes (on lo, as dhcpcd
// installs them), leaving out what is no site's prefix and what another
// link names.
func TestPrefixes6Auto(t *testing.T) {
	c := mustParse(t, `links:
  - {name: isp1, interface: wan1, gateway6: '2001:db8:1::1', prefixes6: auto}
  - {name: isp2, interface: wan2, gateway6: '2001:db8:2::1', prefixes6: [2001:db8:2:100::/56]}
`)
	ifs := prefixes6Ifaces()
	lo := iface("lo", true)
	lo.Delegated = []netip.Prefix{
		netip.MustParsePrefix("2001:db8:1:100::/56"),
		netip.MustParsePrefix("fd00:1::/48"),
		netip.MustParsePrefix("2001:db8:2:100::/56"),
	}
	ifs["lo"] = lo
	d, err := Plan(c, ifs)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"ip -6 rule add pref 1399 from 2001:db8:1:100::/56 lookup 101 proto 201",
		"ip -6 rule add pref 1399 from 2001:db8:2:100::/56 lookup 102 proto 201",
	}
	if diff := cmp.Diff(want, prefixRulesOf(d)); diff != "" {
		t.Errorf("prefix rules (-want +got):\n%s", diff)
	}
	wantWarn := []string{
		"link isp1: prefixes6: auto leaves out delegated 2001:db8:2:100::/56: it overlaps another link's prefixes6",
		"link isp1: prefixes6: auto leaves out delegated fd00:1::/48, which is unique-local (fc00::/7), which no ISP routes: a ULA LAN leaves by NAT66 (the link's nat: true)",
	}
	if diff := cmp.Diff(wantWarn, d.Warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	if !d.Prefixes6[0].Auto || d.Prefixes6[1].Auto {
		t.Errorf("auto flags: %+v", d.Prefixes6)
	}
}

// A prefix holding another link's own address would send that link's own
// traffic out of the wrong ISP: refused.
func TestPrefixes6HoldsAnotherLinksAddress(t *testing.T) {
	c := mustParse(t, `links:
  - {name: isp1, interface: wan1, gateway6: '2001:db8:1::1', prefixes6: [2001:db8::/32]}
  - {name: isp2, interface: wan2, gateway6: '2001:db8:2::1'}
`)
	_, err := Plan(c, prefixes6Ifaces())
	want := "f.yaml:2: links[0].prefixes6: 2001:db8::/32 holds 2001:db8:2::2, link isp2's own address: flows from that address would leave by link isp1"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

// Every link down (as planned; the daemon keeps them in the route then,
// failing open): nothing to translate onto, said in a warning.
func TestPrefixes6AllDown(t *testing.T) {
	d, err := With(mustParse(t, prefixes6Config), prefixes6Ifaces(), Options{Down6: map[string]string{"isp1": "down", "isp2": "down"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := natRulesOf(d); slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "snat") }) {
		t.Errorf("translations with no live link: %q", got)
	}
	if !slices.Contains(d.Warnings, "link isp1 is down and no other link takes IPv6 flows: its 2001:db8:1:100::/56 has nowhere to go") {
		t.Errorf("warnings: %q", d.Warnings)
	}
}

// Two modems on one interface: the nat chain tells their flows apart by
// the next hop routing chose, as the save chain does.
func TestPrefixes6SharedInterface(t *testing.T) {
	c := mustParse(t, `links:
  - {name: isp1, interface: wan1, gateway6: '2001:db8:1::1', prefixes6: [2001:db8:1:100::/56]}
  - {name: modem1, interface: wan0, gateway6: 'fe80::1', prefixes6: [2001:db8:2:100::/56]}
  - {name: modem2, interface: wan0, gateway6: 'fe80::fe', prefixes6: [2001:db8:3:100::/56]}
`)
	ifs := ifaces(iface("wan1", true, "2001:db8:1::2/64"), iface("wan0", true, "2001:db8:2::2/64"))
	d, err := With(c, ifs, Options{Down6: map[string]string{"isp1": "down"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`oifname "wan0" meta nfproto ipv6 rt ip6 nexthop fe80::1 ip6 saddr 2001:db8:1:100::/56 snat ip6 prefix to 2001:db8:2:100::/56`,
		`oifname "wan0" meta nfproto ipv6 rt ip6 nexthop fe80::fe ip6 saddr 2001:db8:1:100::/56 snat ip6 prefix to 2001:db8:3:100::/56`,
		`oifname "wan1" ip6 saddr 2001:db8:1:100::/56 accept`,
		`oifname "wan0" meta nfproto ipv6 rt ip6 nexthop fe80::1 ip6 saddr 2001:db8:2:100::/56 accept`,
		`oifname "wan0" meta nfproto ipv6 rt ip6 nexthop fe80::fe ip6 saddr 2001:db8:3:100::/56 accept`,
	}
	if diff := cmp.Diff(want, natRulesOf(d)); diff != "" {
		t.Errorf("nat rules (-want +got):\n%s", diff)
	}
}
