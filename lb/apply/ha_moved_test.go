package apply

import (
	"strings"
	"testing"
)

// Turning ha on can move marks: with ha they come from the config alone,
// not from what this node applied before. The flows of a moved mark are
// not deleted (conntrackd would delete the peer's copies too), so they
// now route by whichever link has their mark: apply says so.
func TestHAMovedMarkWarns(t *testing.T) {
	b := newBox()
	b.apply(t, "links:\n"+
		"  - {name: isp2, interface: wan2, gateway: 198.51.100.1, nat: true}\n"+
		"  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true}\n")
	// Reordered without ha: each link keeps its mark (history), no warning.
	res := b.apply(t, "links:\n"+
		"  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true}\n"+
		"  - {name: isp2, interface: wan2, gateway: 198.51.100.1, nat: true}\n")
	for _, w := range res.Warnings {
		if strings.Contains(w, "moved") {
			t.Errorf("without ha: %q", w)
		}
	}
	b.flows.flushed = nil
	res = b.apply(t, "ha: true\nlinks:\n"+
		"  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.9}\n"+
		"  - {name: isp2, interface: wan2, gateway: 198.51.100.1, nat: true, nat_source: 198.51.100.9}\n")
	if len(b.flows.flushed) != 0 {
		t.Errorf("ha: flushed %q", b.flows.flushed)
	}
	var got []string
	for _, w := range res.Warnings {
		if strings.Contains(w, "moved") {
			got = append(got, w)
		}
	}
	if len(got) != 1 || !strings.Contains(got[0], "isp1 mark 0x200 -> 0x100") || !strings.Contains(got[0], "isp2 mark 0x100 -> 0x200") {
		t.Errorf("ha, marks moved: warnings %q", res.Warnings)
	}
}
