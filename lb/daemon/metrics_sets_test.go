package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
)

type fakeSetCounts map[string]int

func (f fakeSetCounts) SetCounts(names []string) (map[string]int, error) {
	out := map[string]int{}
	for _, n := range names {
		if v, ok := f[n]; ok {
			out[n] = v
		}
	}
	return out, nil
}

// Each set's elements per family; a set missing from the kernel has no
// sample.
func TestSetMetrics(t *testing.T) {
	c := configtest.MustParse(t, configtest.TwoLinks)
	c.Sets = []config.Set{{Name: "video", Domains: []string{"video.example"}, Timeout: time.Hour}, {Name: "office"}, {Name: "gone"}}
	m := NewMetrics()
	if err := m.RegisterSetMetrics(c, fakeSetCounts{"set4_video": 7, "set6_video": 2, "set4_office": 100000, "set6_office": 0}); err != nil {
		t.Fatal(err)
	}
	want := `# HELP flowpin_set_elements Elements of the named set in the family's nft set: addresses of a domain set, merged ranges of a file set.
# TYPE flowpin_set_elements gauge
flowpin_set_elements{family="ipv4",kind="domains",set="video"} 7
flowpin_set_elements{family="ipv4",kind="file",set="office"} 100000
flowpin_set_elements{family="ipv6",kind="domains",set="video"} 2
flowpin_set_elements{family="ipv6",kind="file",set="office"} 0
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "flowpin_set_elements"); err != nil {
		t.Error(err)
	}
}
