package diagnose

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"unicode"

	"flowpin/lb/config"
	"flowpin/lb/plan"
	"flowpin/lb/status"
	"flowpin/rules"
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

// With ha, verify says whether conntrackd runs in this node's namespace:
// without it nothing else shows that the peer has no copy of the flows
// (the VIPs still move, and every flow dies at the takeover). It cannot
// always tell (not root): then it says so and skips.
func TestVerifyHAConntrackd(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte(haCfg))
	if err != nil {
		t.Fatal(err)
	}
	c, _ = config.Assign(c, nil)
	f, _ := applied(t, c, map[string]rules.Iface{
		"wan1": {Name: "wan1", Index: 3, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.3/24"), netip.MustParsePrefix("192.0.2.2/24")}},
		"wan2": {Name: "wan2", Index: 4, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.3/24"), netip.MustParsePrefix("198.51.100.2/24")}},
	})
	for _, tc := range []struct {
		name string
		pids []int
		err  error
		want string
	}{
		{"running", []int{812}, nil, "ok   ha conntrackd: conntrackd runs here (pid 812)"},
		{"not running", nil, nil, "FAIL ha conntrackd: no conntrackd runs in this network namespace"},
		{"cannot tell", nil, errors.New("permission denied"), "skip ha conntrackd: cannot tell whether conntrackd runs here: permission denied"},
	} {
		k := f.kernel()
		k.SyncDaemons = func() ([]int, error) { return tc.pids, tc.err }
		rep, err := k.Verify(c, VerifyOptions{NoProbe: true})
		if err != nil {
			t.Fatal(err)
		}
		if got := report(rep.Checks); !strings.Contains(got, tc.want) {
			t.Errorf("%s: no %q in\n%s", tc.name, tc.want, got)
		}
	}
}

// A peer whose status lists thousands of links (its body may be up to
// 16 MiB) gets a detail of a few lines, not one line per link.
func TestPeerChecksBoundTheDifferences(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte(haCfg))
	if err != nil {
		t.Fatal(err)
	}
	c, _ = config.Assign(c, nil)
	peer := &status.Status{MarkMask: 0xff00, HA: &status.HAStatus{Role: plan.RolePrimary}}
	for i := range 5000 {
		peer.Links = append(peer.Links, status.LinkStatus{Name: fmt.Sprintf("x%d", i), Mark: 0x100, Table: 101})
	}
	for _, ch := range PeerChecks(c, plan.RoleBackup, peer, nil) {
		if ch.Name != "ha peer layout" {
			continue
		}
		if ch.OK || len(ch.Detail) > 1000 || !strings.HasSuffix(ch.Detail, "and 4994 more") {
			t.Errorf("%d-byte detail: %.300q...", len(ch.Detail), ch.Detail)
		}
		return
	}
	t.Error("no ha peer layout check")
}
