package integration

import "testing"

// checkOperatorDemo checks the demo's operator section (scripts/
// demo_operator.sh): isp2 takes new flows before its drain and after its
// auto, none while drained; with isp1 drained, isp2 carries flows until
// its 10 kB quota runs out, and then none.
func checkOperatorDemo(t *testing.T, sec string, each func(string) [][5]int) {
	t.Helper()
	c := each(sec)
	if len(c) != 5 {
		t.Errorf("operator section: %d traffic lines, want 5: %v", len(c), c)
		return
	}
	before, drained, auto, quota, after := c[0], c[1], c[2], c[3], c[4]
	switch {
	case before[0] != 20 || before[3] == 0:
		t.Errorf("operator: before the drain %v; want all 20, some over isp2", before)
	case drained[0] != 20 || drained[3] != 0:
		t.Errorf("operator: drained %v; want all 20 and none over isp2", drained)
	case auto[0] != 20 || auto[3] == 0:
		t.Errorf("operator: after auto %v; want all 20, some over isp2", auto)
	case quota[3] == 0:
		t.Errorf("operator: with isp1 drained %v; want isp2 to carry flows until its quota ran out", quota)
	case after[0] != 20 || after[3] != 0:
		t.Errorf("operator: isp2 on standby %v; want all 20 over isp1", after)
	}
}
