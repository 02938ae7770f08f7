package status

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
	"flowpin/nft"
	"flowpin/rules"
)

type hits map[string]nft.Hits

func (h hits) RuleHits() (map[string]nft.Hits, error) { return h, nil }

// The active tier is read from the route in each policy's table: the
// default policy's multipath route names tier 1, the backup policy's
// unreachable route says no tier is up.
func TestPolicyStatus(t *testing.T) {
	c := configtest.MustParse(t, configtest.TwoLinks)
	c.Policies = append(c.Policies, config.Policy{Name: "isp2-first", Tiers: [][]int{{1}, {0}}, LastResort: config.Unreachable, Failback: config.Flush})
	c.Rules = []config.Rule{{Name: "https", Proto: config.TCP, DstPorts: []config.PortRange{{Lo: 443, Hi: 443}}, Policy: "isp2-first", Target: 1, Sticky: 10 * time.Minute}}
	all4 := netip.MustParsePrefix("0.0.0.0/0")
	a := &Applied{Table: true, Routes: []rules.Route{
		{Family: rules.V4, Table: 100, Dst: all4, Nexthops: []rules.Nexthop{{Dev: "wan1", Weight: 3}, {Dev: "wan2", Weight: 1}}},
		{Family: rules.V4, Table: 103, Dst: all4, Type: "unreachable"},
	}}
	s := &Status{}
	if err := AddPolicies(s, c, a, hits{"https": {Packets: 7, Bytes: 420}}); err != nil {
		t.Fatal(err)
	}
	if len(s.Policies) != 2 || s.Policies[0].ActiveTier != 1 || strings.Join(s.Policies[0].ActiveLinks, ",") != "isp1,isp2" || s.Policies[1].ActiveTier != 0 {
		t.Fatalf("policies %+v", s.Policies)
	}
	if len(s.Rules) != 1 || s.Rules[0].Hits != 7 || s.Rules[0].Sticky != "10m0s" {
		t.Fatalf("rules %+v", s.Rules)
	}
	var b bytes.Buffer
	if err := WritePolicies(&b, s); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"default     [isp1 isp2]    tier 1  isp1 isp2  unreachable  keep", "isp2-first  [isp2] [isp1]  none", "https  isp2-first  10m0s   7"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("no %q in\n%s", w, b.String())
		}
	}
	// Links alone in one tier: nothing to show.
	plain := &Status{}
	if err := AddPolicies(plain, configtest.MustParse(t, configtest.TwoLinks), a, hits{}); err != nil || plain.Policies != nil {
		t.Errorf("plain config: %+v %v", plain.Policies, err)
	}
}

// A dual-stack policy shows its IPv6 tier beside its IPv4 one, and the
// table says so only where they differ.
func TestPolicyStatusPerFamily(t *testing.T) {
	c := configtest.MustParse(t, `links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, gateway6: 2001:db8:1::1}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, gateway6: 2001:db8:2::1}
  - {name: lte, interface: wwan0, gateway: 203.0.113.1, tier: 2}
`)
	all4, all6 := netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")
	a := &Applied{Table: true, Routes: []rules.Route{
		{Family: rules.V4, Table: 100, Dst: all4, Nexthops: []rules.Nexthop{{Dev: "wan1", Weight: 1}, {Dev: "wan2", Weight: 1}}},
		{Family: rules.V6, Table: 100, Dst: all6, Dev: "wan2"},
	}}
	s := &Status{}
	if err := AddPolicies(s, c, a, hits{}); err != nil {
		t.Fatal(err)
	}
	p := s.Policies[0]
	if p.ActiveTier != 1 || p.ActiveTier6 == nil || *p.ActiveTier6 != 1 || strings.Join(p.ActiveLinks6, ",") != "isp2" {
		t.Fatalf("policy %+v (IPv6 tier %v)", p, p.ActiveTier6)
	}
	var b bytes.Buffer
	if err := WritePolicies(&b, s); err != nil {
		t.Fatal(err)
	}
	if w := "tier 1, IPv6 tier 1  isp1 isp2, IPv6 isp2"; !strings.Contains(b.String(), w) {
		t.Errorf("no %q in\n%s", w, b.String())
	}
	// IPv6 on no link: no IPv6 tier.
	c4 := configtest.MustParse(t, configtest.TwoLinks+"    tier: 2\n")
	s4 := &Status{}
	if err := AddPolicies(s4, c4, a, hits{}); err != nil || len(s4.Policies) != 1 || s4.Policies[0].ActiveTier6 != nil {
		t.Fatalf("IPv4 config: %+v %v", s4.Policies, err)
	}
}
