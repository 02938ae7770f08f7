package nft

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

func TestMapAddr(t *testing.T) {
	for _, tc := range []struct{ a, to, want string }{
		{"2001:db8:1:100::2", "2001:db8:2:100::/56", "2001:db8:2:100::2"},
		{"2001:db8:1:1a7::7", "2001:db8:2:100::/56", "2001:db8:2:1a7::7"},
		{"2001:db8:1:10f::7", "2001:db8:2:20::/60", "2001:db8:2:2f::7"},
	} {
		if got := MapAddr(netip.MustParseAddr(tc.a), netip.MustParsePrefix(tc.to)); got != netip.MustParseAddr(tc.want) {
			t.Errorf("MapAddr(%s, %s) = %s, want %s", tc.a, tc.to, got, tc.want)
		}
	}
}

// The prefix rules read back from the table they are written to.
func TestPrefixes6ReadBack(t *testing.T) {
	p1, p2 := netip.MustParsePrefix("2001:db8:1:100::/56"), netip.MustParsePrefix("2001:db8:2:100::/56")
	s := Spec{Mask: 0xff00, V6: true,
		Links:      []Link{{Name: "isp1", Iface: "wan1", Mark: 0x100}, {Name: "isp2", Iface: "wan2", Mark: 0x200, NAT: true}},
		Prefixes6:  []Prefix6{{Prefix: p1, Link: "isp1", Iface: "wan1"}, {Prefix: p2, Link: "isp2", Iface: "wan2"}},
		Translate6: []Translate6{{From: p1, To: p2, Link: "isp2", Iface: "wan2"}},
	}
	got := s.Current().Prefixes6()
	if len(got) != 2 || got[0].Prefix != p1 || got[0].Link != "isp1" || len(got[0].To) != 1 || got[0].To[0].To != p2 || got[0].To[0].Link != "isp2" ||
		got[1].Prefix != p2 || got[1].Link != "isp2" || len(got[1].To) != 0 {
		t.Errorf("read back %+v", got)
	}
}

// A new flow from an ISP prefix is never classified: no policy mark (nor
// the failback label of a policy with failback: flush) reaches it, so no
// traffic rule sends it to another ISP and no failback deletes it.
func TestPrefixes6SkipClassify(t *testing.T) {
	p1 := netip.MustParsePrefix("2001:db8:1:100::/56")
	s := Spec{Mask: 0xff00, V6: true,
		Links:     []Link{{Name: "isp1", Iface: "wan1", Mark: 0x100}, {Name: "isp2", Iface: "wan2", Mark: 0x200}},
		Unmatched: Action{Mark: 0x8000, Label: 1},
		Prefixes6: []Prefix6{{Prefix: p1, Link: "isp1", Iface: "wan1"}},
	}
	var classify []string
	for _, r := range s.Planned() {
		if r.Chain == "classify" {
			classify = append(classify, r.Text)
		}
	}
	if len(classify) < 2 || classify[0] != "ip6 saddr 2001:db8:1:100::/56 return" {
		t.Errorf("classify chain: %q; want the prefix's return first", classify)
	}
	// Without a classify chain, nothing to skip.
	s.Unmatched = Action{}
	for _, r := range s.Planned() {
		if r.Chain == "classify" {
			t.Errorf("classify rule without classification: %q", r.Text)
		}
	}
}

// The prefix rules as the kernel takes them from this library: nft lists
// each exactly as planned (so the expressions say what the text says),
// the table reads back up to date, and the prefixes read back from it.
func TestPrefixes6InNamespace(t *testing.T) {
	p1, p2, p3 := netip.MustParsePrefix("2001:db8:1:100::/56"), netip.MustParsePrefix("2001:db8:2:100::/56"), netip.MustParsePrefix("2001:db8:3:100::/56")
	s := Spec{Mask: 0xff00, V6: true,
		Links: []Link{
			{Name: "isp1", Iface: "wan1", Mark: 0x100, NAT: true},
			{Name: "modem1", Iface: "wan0", Mark: 0x200, Shared: true, Nexthop6: netip.MustParseAddr("fe80::1")},
			{Name: "modem2", Iface: "wan0", Mark: 0x300, Shared: true, Nexthop6: netip.MustParseAddr("fe80::fe")},
		},
		Unmatched: Action{Mark: 0x8000},
		Prefixes6: []Prefix6{
			{Prefix: p1, Link: "isp1", Iface: "wan1"},
			{Prefix: p2, Link: "modem1", Iface: "wan0", Nexthop6: netip.MustParseAddr("fe80::1")},
			{Prefix: p3, Link: "modem2", Iface: "wan0", Nexthop6: netip.MustParseAddr("fe80::fe")},
		},
		Translate6: []Translate6{
			{From: p1, To: p2, Link: "modem1", Iface: "wan0", Nexthop6: netip.MustParseAddr("fe80::1")},
			{From: p1, To: p3, Link: "modem2", Iface: "wan0", Nexthop6: netip.MustParseAddr("fe80::fe")},
		},
	}
	inFreshNS(t, func(ns string) error {
		c := &Conn{}
		if _, err := c.Apply(s); err != nil {
			t.Fatalf("apply: %v", err)
		}
		cur, err := c.Read()
		if err != nil {
			t.Fatal(err)
		}
		if !s.UpToDate(cur) {
			t.Errorf("not up to date after apply")
		}
		got := cur.Prefixes6()
		if len(got) != 3 || len(got[0].To) != 2 || got[0].To[1].To != p3 || got[0].To[1].Link != "modem2" || got[2].Link != "modem2" {
			t.Errorf("read back %+v", got)
		}
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "flowpin").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v\n%s", err, out)
		}
		n := 0
		for _, r := range s.Planned() {
			if strings.Contains(r.Text, "ip6 saddr 2001:db8:") {
				n++
				if !strings.Contains(string(out), r.Text+" comment") {
					t.Errorf("nft lists no %q\n%s", r.Text, out)
				}
			}
		}
		if n != 8 {
			t.Errorf("%d prefix rules planned, want 8 (3 own, 2 translations, 3 classify skips)", n)
		}
		return nil
	})
}
