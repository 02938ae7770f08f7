package integration

import (
	"strings"
	"testing"
)

// checkSetsDemo: in the demo's section on sets, flows are balanced before
// the name is resolved, and all on isp2 after, also after an apply of a
// changed config.
func checkSetsDemo(t *testing.T, sec string, each func(string) [][5]int) {
	t.Helper()
	for _, w := range []string{"nftset=/video.example/4#inet#flowpin#set4_video,6#inet#flowpin#set6_video", "video.example -> 203.0.113.10", "203.0.113.10 expires"} {
		if !strings.Contains(sec, w) {
			t.Errorf("sets demo: no %q", w)
		}
	}
	c := each(sec)
	// At far a retransmitted SYN counts as one more new connection, so
	// "all on isp2" is none on isp1.
	if len(c) != 3 || c[0][0] != 30 || c[0][2] == 0 || c[0][3] == 0 ||
		c[1][0] != 30 || c[1][2] != 0 || c[1][3] < 30 || c[2][0] != 30 || c[2][2] != 0 || c[2][3] < 30 {
		t.Errorf("sets demo: %v; want 30 balanced, then 30 on isp2 twice", c)
	}
}
