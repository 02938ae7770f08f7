package nft

import (
	"fmt"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"go4.org/netipx"
)

// setSpec has a domain set (video) and a file set (office) of n ranges
// per family, and rules that match them.
func setSpec(n int, timeout time.Duration) Spec {
	s := policySpec()
	var b netipx.IPSetBuilder
	for i := range n {
		// Every other /26 and /64, so no two merge.
		j := 2 * i
		b.AddPrefix(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(j >> 10), byte(j >> 2), byte(j&3) << 6}), 26))
		b.AddPrefix(netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x:%x::/64", j>>16, j&0xffff)))
	}
	set, _ := b.IPSet()
	s.Sets = []NamedSet{{Name: "video", Timeout: timeout}, {Name: "office", Ranges: set.Ranges()}, {Name: "unused", Timeout: time.Hour}}
	s.Classes = append([]Class{
		{Name: "video-by-cable", DstSet: "video", Action: Action{Mark: 0xfb00}},
		{Name: "office-https", Proto: "tcp", DstPorts: []PortRange{{443, 443}}, SrcSet: "office", Action: Action{Mark: 0xfa00}},
	}, s.Classes...)
	return s
}

// A rule with a set is a lookup of the set in front of its own map; a
// later rule it overlaps is in a later map, an earlier one it overlaps in
// an earlier map.
func TestGroupsWithSets(t *testing.T) {
	s := setSpec(2, time.Hour)
	var got []string
	for _, r := range s.classifyRulesOf([2][]group{s.groups(ipv4), s.groups(ipv6)}, s.layout().sets) {
		if r.chain == "classify" {
			got = append(got, r.text)
		}
	}
	want := []string{
		"meta nfproto ipv4 ip daddr @set4_video meta l4proto . ip saddr . ip daddr . th sport . th dport vmap @rules4_0",
		"meta nfproto ipv4 ip saddr @set4_office meta l4proto . ip saddr . ip daddr . th sport . th dport vmap @rules4_1",
		"meta nfproto ipv4 iifname \"lan0\" meta l4proto . ip saddr . ip daddr . th sport . th dport vmap @rules4_2",
	}
	for i, w := range want {
		if i >= len(got) || got[i] != w {
			t.Fatalf("classify rules:\n%s\nwant first:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	r := s.Render()
	for _, w := range []string{
		"set set4_video {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t\ttimeout 1h\n\t}",
		"set set6_office {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\telements = { 2001:db8::/64,",
		"add set inet flowpin set4_office { type ipv4_addr; flags interval; }\nflush set inet flowpin set4_office\n",
		"meta nfproto ipv4 ip daddr @set4_unused comment \"set set4_unused #",
	} {
		if !strings.Contains(r, w) {
			t.Errorf("render lacks %q", w)
		}
	}
	// No flush of a domain set, ever.
	if strings.Contains(r, "flush set inet flowpin set4_video") {
		t.Error("render flushes a domain set")
	}
}

func TestSetHolds(t *testing.T) {
	s := setSpec(3, time.Hour)
	var es = s.namedSetDefs()[2].elems // set4_office
	for a, want := range map[string]bool{"10.0.0.1": true, "10.0.0.64": false, "10.0.0.191": true, "10.0.0.192": false, "9.255.255.255": false} {
		if got := setHolds(es, true, netip.MustParseAddr(a)); got != want {
			t.Errorf("%s: %v, want %v", a, got, want)
		}
	}
	all := (Spec{Sets: []NamedSet{{Name: "all", Ranges: []netipx.IPRange{netipx.MustParseIPRange("0.0.0.0-255.255.255.255")}}}}).namedSetDefs()[0]
	if len(all.elems) != 1 || !setHolds(all.elems, true, netip.MustParseAddr("255.255.255.255")) {
		t.Errorf("a range to the last address has no end element: %+v", all.elems)
	}
}

func nftCmd(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// The domain set keeps what a resolver added through apply of the same
// table, of a changed one, and of a changed timeout; the file set's
// 100k ranges are written once and rewritten only when they change.
func TestNamedSetsInNamespace(t *testing.T) {
	inFreshNS(t, func(ns string) error {
		c := &Conn{}
		big := setSpec(50_000, time.Hour) // 50k ranges per family
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		start := time.Now()
		if _, err := c.Apply(big); err != nil {
			return err
		}
		took := time.Since(start)
		runtime.ReadMemStats(&m1)
		t.Logf("100k ranges (50k per family): one batch of %d bytes, applied in %v, %d MiB allocated, heap %d MiB", c.LastBatch, took.Round(time.Millisecond), (m1.TotalAlloc-m0.TotalAlloc)>>20, m1.HeapSys>>20)
		counts, err := c.SetCounts([]string{"set4_office", "set6_office", "set4_video", "set4_nope"})
		if err != nil {
			return err
		}
		if counts["set4_office"] != 50_000 || counts["set6_office"] != 50_000 || counts["set4_video"] != 0 || len(counts) != 3 {
			t.Errorf("counts %v", counts)
		}
		// What comparing the file sets' elements with the kernel's costs
		// (a sync the daemon makes for a notification that named them;
		// every apply), beside an apply with nothing to do.
		checked := big
		checked.Recheck = big.FileSets()
		var plain, withCheck []time.Duration
		for range 2 {
			start := time.Now()
			if wrote, err := c.Apply(big); err != nil || wrote {
				t.Fatalf("same table: wrote %v, %v", wrote, err)
			}
			plain = append(plain, time.Since(start))
			start = time.Now()
			if wrote, err := c.Apply(checked); err != nil || wrote {
				t.Fatalf("same table, elements checked: wrote %v, %v", wrote, err)
			}
			withCheck = append(withCheck, time.Since(start))
		}
		t.Logf("an apply with nothing to do, 50k ranges per family: %v without the elements' check, %v with both file sets listed and compared", plain, withCheck)
		// A resolver adds: dnsmasq the way nft does, the daemon's own.
		nftCmd(t, ns, "add", "element", "inet", "flowpin", "set4_video", "{ 203.0.113.10 }")
		if err := c.AddToSet("video", []netip.Addr{netip.MustParseAddr("203.0.113.11"), netip.MustParseAddr("2001:db8:ffff::1")}, 5*time.Minute); err != nil {
			return err
		}
		if err := c.AddToSet("video", []netip.Addr{netip.MustParseAddr("203.0.113.11")}, 10*time.Minute); err != nil {
			return err
		}
		has := func(set, a string) bool {
			ok, err := c.SetHas(set, netip.MustParseAddr(a))
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		check := func(step string) {
			t.Helper()
			for _, a := range []string{"203.0.113.10", "203.0.113.11"} {
				if !has("set4_video", a) {
					t.Errorf("%s: %s is gone from set4_video", step, a)
				}
			}
			if !has("set6_video", "2001:db8:ffff::1") {
				t.Errorf("%s: 2001:db8:ffff::1 is gone from set6_video", step)
			}
		}
		if wrote, err := c.Apply(big); err != nil || wrote {
			t.Errorf("the same table again: wrote %v, %v (elements a resolver added are no drift)", wrote, err)
		}
		check("same table")
		changed := big
		changed.Classes = append([]Class{{Name: "new", Proto: "udp", DstPorts: []PortRange{{53, 53}}, Action: Action{Mark: 0xf900}}}, big.Classes...)
		start = time.Now()
		if wrote, err := c.Apply(changed); err != nil || !wrote {
			t.Fatalf("changed table: wrote %v, %v", wrote, err)
		}
		t.Logf("a changed rule, the 100k-range set as it was: one batch of %d bytes, applied in %v", c.LastBatch, time.Since(start).Round(time.Millisecond))
		if c.LastBatch > 100_000 {
			t.Errorf("a changed rule rewrote the unchanged file set: %d bytes", c.LastBatch)
		}
		check("changed table")
		longer := setSpec(50_000, 2*time.Hour)
		if wrote, err := c.Apply(longer); err != nil || !wrote {
			t.Fatalf("changed timeout: wrote %v, %v", wrote, err)
		}
		check("changed timeout")
		if out := nftCmd(t, ns, "list", "set", "inet", "flowpin", "set4_video"); !strings.Contains(out, "timeout 2h") {
			t.Errorf("timeout not changed:\n%s", out)
		}
		small := setSpec(3, 2*time.Hour)
		if _, err := c.Apply(small); err != nil {
			return err
		}
		check("changed file set")
		if has("set4_office", "10.0.2.1") || !has("set4_office", "10.0.0.129") || !has("set6_office", "2001:db8:0:4::1") {
			t.Errorf("the file set was not rewritten")
		}
		// A packet's view: the kernel matches through the sets.
		out := nftCmd(t, ns, "get", "element", "inet", "flowpin", "set4_office", "{ 10.0.0.130 }")
		if !strings.Contains(out, "10.0.0.128/26") {
			t.Errorf("nft get element: %s", out)
		}
		if _, err := c.Remove(); err != nil {
			return err
		}
		if out, _ := exec.Command("ip", "netns", "exec", ns, "nft", "list", "sets").CombinedOutput(); strings.Contains(string(out), "set4_") {
			t.Errorf("sets left after remove:\n%s", out)
		}
		return nil
	})
}
