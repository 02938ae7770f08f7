package diagnose

import (
	"strings"
	"testing"
	"unicode"

	"flowpin/lb/config"
	"flowpin/lb/plan"
	"flowpin/lb/status"
)

// The peer's status comes over the network: a link name or role with
// terminal control sequences in it is shown escaped, never sent to the
// operator's terminal as it is.
func TestPeerChecksEscapeThePeersStrings(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte(haCfg))
	if err != nil {
		t.Fatal(err)
	}
	c, _ = config.Assign(c, nil)
	peer := &status.Status{MarkMask: 0xff00, HA: &status.HAStatus{Role: "primary\x1b[2J\x1b]0;owned\x07"}, Links: []status.LinkStatus{
		{Name: "isp1", Mark: 0x100, Table: 101}, {Name: "isp2", Mark: 0x200, Table: 102}, {Name: "isp3\x1b[31m\r\n", Mark: 0x300, Table: 103}}}
	seen := 0
	for _, ch := range PeerChecks(c, plan.RoleBackup, peer, nil) {
		if strings.ContainsFunc(ch.Detail, func(r rune) bool { return r != ' ' && !unicode.IsGraphic(r) }) {
			t.Errorf("%s: the peer's control characters reach the detail: %q", ch.Name, ch.Detail)
		}
		if strings.Contains(ch.Detail, `\x1b`) {
			seen++
		}
	}
	if seen != 2 {
		t.Errorf("%d details show the peer's strings escaped, want 2 (the link, the role)", seen)
	}
}
