package nft

import (
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func policySpec() Spec {
	return Spec{
		Mask:  0xff00,
		Links: []Link{{Name: "fiber", Iface: "wan1", Mark: 0x100, NAT: true}, {Name: "cable", Iface: "wan2", Mark: 0x200}},
		Classes: []Class{
			{Name: "voip", Proto: "udp", Src: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")}, DstPorts: []PortRange{{5060, 5060}, {10000, 20000}}, IIF: "lan0", Action: Action{Mark: 0xfe00}},
			{Name: "bank", Proto: "tcp", DstPorts: []PortRange{{443, 443}}, Action: Action{Mark: 0xfd00, Label: 3}, Sticky: 10 * time.Minute, StickyLinks: []string{"fiber", "cable"}, StickyLinks6: []string{"fiber", "cable"}},
			{Name: "lan", Dst: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("fd00::/8")}, Action: Action{Mark: 0xff00, CtMark: 0xff00}},
			{Name: "all-udp", Proto: "udp", Action: Action{Mark: 0xfc00}},
		},
		Bypass: 0xff00,
	}
}

// Rules that do not overlap share a map; a rule that overlaps an earlier
// one goes into a later map.
func TestGroups(t *testing.T) {
	s := policySpec()
	g4 := s.groups(ipv4)
	var names []string
	for _, g := range g4 {
		n := map[string]bool{}
		for _, e := range g.elems {
			n[s.Classes[e.class].Name] = true
		}
		var ks []string
		for _, c := range s.Classes {
			if n[c.Name] {
				ks = append(ks, c.Name)
			}
		}
		names = append(names, strings.Join(ks, ","))
	}
	if got, want := strings.Join(names, " | "), "voip | bank | lan | all-udp"; got != want {
		t.Errorf("v4 groups %q, want %q", got, want)
	}
	g6 := s.groups(ipv6)
	if len(g6) != 3 || len(g6[0].elems) != 1 {
		t.Errorf("v6 groups: %d, first %d elements", len(g6), len(g6[0].elems))
	}
}

// The table with maps, sticky sets and rule chains goes into the kernel,
// reads back up to date, and a second apply keeps what packets put into a
// sticky set.
func TestClassifyInNamespace(t *testing.T) {
	s := policySpec()
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
			t.Fatalf("not up to date after apply: %+v", cur)
		}
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "flowpin").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v\n%s", err, out)
		}
		t.Logf("%s", out)
		if o, err := exec.Command("ip", "netns", "exec", ns, "nft", "add", "element", "inet", "flowpin", "stuck4_bank", "{ 10.0.0.7 timeout 5m : 0x100 }").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, o)
		}
		src := netip.MustParseAddr("10.0.0.7")
		if mark, left, err := c.StuckTo(StickyMap("bank", src), src); mark != 0x100 || left <= 4*time.Minute || err != nil {
			t.Errorf("StuckTo = %#x, %v, %v; want fiber's 0x100 for about 5m", mark, left, err)
		}
		s2 := s
		s2.Classes = append([]Class{{Name: "x", Proto: "tcp", DstPorts: []PortRange{{22, 22}}, Action: Action{Mark: 0xfb00}}}, s.Classes...)
		if _, err := c.Apply(s2); err != nil {
			t.Fatalf("second apply: %v", err)
		}
		out, _ = exec.Command("ip", "netns", "exec", ns, "nft", "list", "map", "inet", "flowpin", "stuck4_bank").CombinedOutput()
		if !strings.Contains(string(out), "10.0.0.7") {
			t.Errorf("sticky entry lost by a re-apply:\n%s", out)
		}
		if wrote, err := c.Apply(s2); wrote || err != nil {
			t.Errorf("third apply wrote %v, %v", wrote, err)
		}
		// Back to no rules: maps, sets and chains go.
		plain := Spec{Mask: s.Mask, Links: s.Links}
		if _, err := c.Apply(plain); err != nil {
			t.Fatalf("apply without rules: %v", err)
		}
		cur, _ = c.Read()
		leftover := slices.ContainsFunc(cur.Sets, func(n string) bool {
			return strings.HasPrefix(n, "rules") || strings.HasPrefix(n, "stuck") || strings.HasPrefix(n, "stickto")
		})
		if leftover || !plain.UpToDate(cur) {
			t.Errorf("left over: sets %v, chains %v", cur.Sets, cur.Chains)
		}
		return nil
	})
}

// A traffic rule's counter counts the new flows it classifies: a local
// UDP packet to a port of rule "dns" hits it once per flow.
func TestRuleHitsInNamespace(t *testing.T) {
	s := Spec{Mask: 0xff00, Links: []Link{{Name: "isp1", Iface: "wan1", Mark: 0x100}},
		Classes: []Class{{Name: "dns", Proto: "udp", DstPorts: []PortRange{{53, 53}}, Action: Action{Mark: 0xfe00}}}}
	inFreshNS(t, func(ns string) error {
		if out, err := exec.Command("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		c := &Conn{}
		if _, err := c.Apply(s); err != nil {
			t.Fatal(err)
		}
		for _, port := range []string{"53", "53", "54"} {
			// Each run is a new socket: a new flow (new source port).
			_ = exec.Command("ip", "netns", "exec", ns, "bash", "-c", "echo x > /dev/udp/127.0.0.1/"+port).Run()
		}
		h, err := c.RuleHits()
		if err != nil {
			t.Fatal(err)
		}
		if h["dns"].Packets != 2 {
			t.Errorf("hits %+v, want 2 packets for dns", h)
		}
		return nil
	})
}

// The default_policy's flows (no rule matched) carry its failback label,
// or a failback flush of that policy finds none of them.
func TestUnmatchedLabel(t *testing.T) {
	s := policySpec()
	s.Unmatched = Action{Mark: 0xfa00, Label: 2}
	var classify []string
	for _, r := range s.layout().rules {
		if r.chain == "classify" && !strings.Contains(r.text, "vmap") {
			classify = append(classify, r.text)
		}
	}
	want := []string{"ct label set 1", "meta mark set meta mark & 0xffff00ff | 0x0000fa00"}
	if strings.Join(classify, "\n") != strings.Join(want, "\n") {
		t.Errorf("classify chain after the maps:\n%s\nwant:\n%s", strings.Join(classify, "\n"), strings.Join(want, "\n"))
	}
}
