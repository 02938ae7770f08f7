package diagnose

import (
	"strings"
	"testing"

	"flowpin/lb/config/configtest"
)

// verify --peer on a node whose config has no ha: true fails, rather than
// leaving out the comparison it was asked for and passing.
func TestPeerChecksWithoutHA(t *testing.T) {
	c := configtest.MustParse(t, "links:\n  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.2}\n")
	ch := PeerChecks(c, "", nil, nil)
	if len(ch) != 1 || ch[0].OK || ch[0].Skip || !strings.Contains(ch[0].Detail, "no ha: true") {
		t.Errorf("peer checks without ha: %+v", ch)
	}
}
