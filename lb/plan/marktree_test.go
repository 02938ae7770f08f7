package plan

import (
	"fmt"
	"math/bits"
	"strings"
	"testing"

	"flowpin/rules"
)

// walk follows a forwarded packet (in on a LAN port, source not this
// host's) carrying mark through rs as the kernel's fib rules would: it
// returns the table of the first lookup whose selectors match and how many
// rules the packet passed to get there.
func walk(rs []rules.Rule, mark uint32) (table, passed int) {
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		passed++
		ok := !r.Src.IsValid() // a forwarded packet has no source of this host
		if r.Mask != 0 {
			ok = ok && mark&r.Mask == r.Mark
		}
		if r.Iif != "" {
			ok = ok && (r.Iif == "lan") != r.Invert
		}
		if !ok {
			continue
		}
		if r.Goto == 0 {
			return r.Table, passed
		}
		for i+1 < len(rs) && rs[i+1].Priority < r.Goto {
			i++
		}
	}
	return 0, passed
}

func manyLinks(n int, marks func(i int) string) (string, map[string]rules.Iface) {
	var b strings.Builder
	b.WriteString("links:\n")
	var ifs []rules.Iface
	for i := range n {
		fmt.Fprintf(&b, "  - {name: l%d, interface: w%d, gateway: 10.%d.%d.1%s}\n", i, i, i/200, i%200, marks(i))
		ifs = append(ifs, iface(fmt.Sprintf("w%d", i), true, fmt.Sprintf("10.%d.%d.2/24", i/200, i%200)))
	}
	return b.String(), ifaces(ifs...)
}

// A pinned forwarded packet reaches its link's table in a number of rules
// bounded by the mark mask's bits, not by the number of links: the source
// rules are skipped by goto, and the fwmark rules branch on one mark bit
// at a time. The kernel's rule list has no "table = mark" lookup, so this
// bound (B, B+100, one branch per mask bit but the last, two lookups) is
// the constant.
func TestPinnedWalkIsBounded(t *testing.T) {
	auto := func(int) string { return "" }
	// Marks a user chose, scattered over the mask's bits.
	scattered := func(i int) string { return fmt.Sprintf(", mark: %#x", ((i*37+5)%255+1)<<8) }
	for _, tc := range []struct {
		name  string
		n     int
		marks func(int) string
		worst int // the most rules any link's packet passes, as laid out today
	}{
		{"2 links", 2, auto, 4},
		{"3 links", 3, auto, 5},
		{"32 links", 32, auto, 8},
		{"99 links", 99, auto, 10},
		{"32 scattered marks", 32, scattered, 0},
		{"99 scattered marks", 99, scattered, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text, ifs := manyLinks(tc.n, tc.marks)
			c := mustParse(t, text)
			d, err := Plan(c, ifs)
			if err != nil {
				t.Fatal(err)
			}
			bound := 2 + bits.OnesCount32(c.MarkMask) - 1 + 2
			worst := 0
			for _, l := range d.Links {
				table, passed := walk(d.Routing.Rules, l.Mark)
				if table != l.Table {
					t.Errorf("link %s (mark %#x) reaches table %d, want %d", l.Name, l.Mark, table, l.Table)
				}
				worst = max(worst, passed)
			}
			t.Logf("%d links: a pinned packet passes at most %d ip rules (bound %d)", tc.n, worst, bound)
			if worst > bound {
				t.Errorf("a pinned packet passes %d ip rules, more than the bound %d", worst, bound)
			}
			if tc.worst != 0 && worst != tc.worst {
				t.Errorf("a pinned packet passes at most %d ip rules, want %d", worst, tc.worst)
			}
			// Unpinned, and marked by no link (a policy's mark): main.
			if table, _ := walk(d.Routing.Rules, 0); table != MainTable {
				t.Errorf("an unmarked packet reaches table %d, want main", table)
			}
			if table, _ := walk(d.Routing.Rules, 0xff00); table != MainTable {
				t.Errorf("a packet with a mark of no link reaches table %d, want main", table)
			}
		})
	}
}
