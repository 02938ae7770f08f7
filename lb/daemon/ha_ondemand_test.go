package daemon

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"flowpin/lb/config"
	"flowpin/lb/health"
	"flowpin/lb/plan"
)

// With ha, an on-demand link that a node demoted while it had the link up
// takes down after its keep time keeps its flows: deleting them there
// would delete them on the new primary too (conntrackd syncs deletions),
// which may carry them on by its own copy of the link. Without ha they
// go, as before, and so they do on the primary.
func TestHAOnDemandDownKeepsFlows(t *testing.T) {
	for _, ha := range []bool{false, true} {
		yaml := `links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.2}
  - name: lte
    interface: wwan0
    gateway: 10.64.0.1
    tier: 2
    on_demand: {up: "true", down: "true", keep: 1ms}
`
		if ha {
			yaml = "ha: true\n" + yaml
		}
		c, err := config.Parse("f.yaml", []byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		rec := &transcript{}
		k := newFakeKernel(rec, c)
		d := New(c, Deps{Applier: k, Conntrack: k}, quietLog())
		now := time.Now()
		// The demoted node: lte is still up (it was needed while this node
		// was the primary), isp1 is up again.
		d.board.Add(unitKey("isp1", false), health.NewTracker(c.Links[0].Check, health.StateUp, now, "up"))
		d.board.Add(unitKey("lte", false), health.NewTracker(c.Links[1].Check, health.StateUp, now, "up"))
		d.followRole(&plan.Desired{VIPs: []plan.VIP{{Addr: netip.MustParseAddr("192.0.2.2")}}})
		d.onDemandLinks() // unneeded: keep starts
		time.Sleep(10 * time.Millisecond)
		d.onDemandLinks() // keep is over: down
		flushed := slices.ContainsFunc(rec.get(), func(l string) bool { return strings.HasPrefix(l, "flush") })
		if flushed == ha {
			t.Errorf("ha %v, demoted: flushed %v (%q)", ha, flushed, rec.get())
		}
		if !ha {
			continue
		}
		// Primary again, lte needed and up, then unneeded for its keep
		// time: the primary deletes its flows.
		d.followRole(&plan.Desired{VIPs: []plan.VIP{{Addr: netip.MustParseAddr("192.0.2.2"), Iface: "wan1"}}})
		d.board.Add(unitKey("isp1", false), health.NewTracker(c.Links[0].Check, health.StateDown, time.Now(), "down"))
		d.onDemandLinks()
		d.board.Add(unitKey("isp1", false), health.NewTracker(c.Links[0].Check, health.StateUp, time.Now(), "up"))
		d.onDemandLinks()
		time.Sleep(10 * time.Millisecond)
		d.onDemandLinks()
		if !slices.ContainsFunc(rec.get(), func(l string) bool { return strings.HasPrefix(l, "flush") }) {
			t.Errorf("ha, primary: not flushed (%q)", rec.get())
		}
	}
}
