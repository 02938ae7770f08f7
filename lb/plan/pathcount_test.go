package plan

import (
	"testing"

	"flowpin/rules"
)

// walkNew follows a new flow's first packet, forwarded from the LAN to an
// address on the internet, unmarked (no traffic rule), through rs: a
// lookup of main that hides the default route finds nothing for it, so
// the kernel goes on to the next rule; the first other lookup is its
// table. It returns that table and how many rules the packet passed.
func walkNew(rs []rules.Rule) (table, passed int) {
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		passed++
		ok := !r.Src.IsValid()
		if r.Mask != 0 {
			ok = ok && r.Mark == 0
		}
		if r.Iif != "" {
			ok = ok && (r.Iif == "lan") != r.Invert
		}
		if !ok {
			continue
		}
		if r.Goto != 0 {
			for i+1 < len(rs) && rs[i+1].Priority < r.Goto {
				i++
			}
			continue
		}
		if r.Table == MainTable && r.SuppressPrefixlen == 0 {
			continue
		}
		return r.Table, passed
	}
	return 0, passed
}

// The ip rules a forwarded packet passes, counted on the planned rules
// for 2 and 32 links (printed for issue 25's closing note; the kernel's
// own `lookup local` rule at priority 0 comes on top of each). A new
// flow's first packet skips the source rules and the mark tree by goto
// and reaches the balance table in the same number of rules whatever the
// number of links; a pinned packet's walk is bounded by the mark bits.
func TestForwardedRuleWalk(t *testing.T) {
	auto := func(int) string { return "" }
	newPassed := map[int]int{}
	for _, n := range []int{2, 32} {
		text, ifs := manyLinks(n, auto)
		c := mustParse(t, text)
		d, err := Plan(c, ifs)
		if err != nil {
			t.Fatal(err)
		}
		var v4 []rules.Rule
		for _, r := range d.Routing.Rules {
			if r.Family == rules.V4 {
				v4 = append(v4, r)
			}
		}
		table, passed := walkNew(v4)
		if table != c.BalanceTable {
			t.Errorf("%d links: a new flow's first packet reaches table %d, want the balance table %d", n, table, c.BalanceTable)
		}
		newPassed[n] = passed
		worst := 0
		for _, l := range d.Links {
			_, p := walk(v4, l.Mark)
			worst = max(worst, p)
		}
		t.Logf("%d links: %d ip rules; a new flow's first packet passes %d, a pinned packet at most %d (plus the kernel's local rule)", n, len(v4), passed, worst)
	}
	if newPassed[2] != newPassed[32] {
		t.Errorf("a new flow's first packet passes %d ip rules at 2 links, %d at 32", newPassed[2], newPassed[32])
	}
}
