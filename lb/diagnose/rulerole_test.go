package diagnose

import (
	"net/netip"
	"testing"

	"flowpin/lb/config"
	"flowpin/lb/plan"
	"flowpin/rules"
)

// From three links on, the links' fwmark rules are a tree: explain names a
// lookup rule's link by its mark and table, not by its place in the block.
func TestRuleRoleInTheMarkTree(t *testing.T) {
	c, err := config.Parse("test.yaml", []byte(`links:
  - {name: a, interface: wan1, gateway: 192.0.2.1}
  - {name: b, interface: wan2, gateway: 198.51.100.1}
  - {name: c, interface: wan3, gateway: 203.0.113.1}
`))
	if err != nil {
		t.Fatal(err)
	}
	d, err := plan.Plan(c, map[string]rules.Iface{
		"wan1": {Name: "wan1", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24")}},
		"wan2": {Name: "wan2", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24")}},
		"wan3": {Name: "wan3", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("203.0.113.2/24")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]string{}
	for _, r := range d.Routing.Rules {
		off := r.Priority - c.PriorityBase
		if off < plan.OffMark || off >= plan.OffMain {
			continue
		}
		info := rules.RuleInfo{Priority: r.Priority, Action: rules.ActionToTable, Table: r.Table, Mark: r.Mark, Mask: r.Mask, SuppressPrefixlen: -1}
		if r.Goto != 0 {
			info.Action, info.Goto = rules.ActionGoto, r.Goto
		}
		got[off] = (&Kernel{}).ruleRole(c, info)
	}
	// Marks 0x100, 0x200, 0x300: bit 0x100 sends a and c past b.
	want := map[int]string{
		101: "pinned flows: a branch of the mark tree on bit 0x100",
		102: "pinned flows of link b",
		103: "pinned flows of link a",
		104: "pinned flows of link c",
	}
	for off, w := range want {
		if got[off] != w {
			t.Errorf("rule at base+%d: %q, want %q", off, got[off], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("mark block: %v, want %v", got, want)
	}
}
