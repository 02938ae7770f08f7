package daemon

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
	"flowpin/nft"
)

type fakeHits map[string]nft.Hits

func (f fakeHits) RuleHits() (map[string]nft.Hits, error) { return f, nil }

func TestRuleMetrics(t *testing.T) {
	c := configtest.MustParse(t, configtest.TwoLinks)
	c.Rules = []config.Rule{{Name: "voip", Policy: "isp1", Target: 0}, {Name: "idle", Policy: "default"}}
	m := NewMetrics()
	if err := m.RegisterRuleMetrics(c, fakeHits{"voip": {Packets: 12, Bytes: 900}}); err != nil {
		t.Fatal(err)
	}
	want := `# HELP flowpin_rule_hits_total New flows the traffic rule classified (their first packets).
# TYPE flowpin_rule_hits_total counter
flowpin_rule_hits_total{policy="default",rule="idle"} 0
flowpin_rule_hits_total{policy="isp1",rule="voip"} 12
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "flowpin_rule_hits_total"); err != nil {
		t.Error(err)
	}
}
