package keep

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
	"flowpin/lb/plan"
	"flowpin/rules"
)

// checked are two IPv4 links, isp1 and isp2.
const checked = `links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    weight: 1
    nat: true
    check: {targets: [203.0.113.10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
  - name: isp2
    interface: wan2
    gateway: 198.51.100.1
    weight: 1
    nat: true
    check: {targets: [203.0.113.10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
`

// ifaces are the links' interfaces, up, each with an address next to its
// gateway.
func ifaces(c *config.Config) map[string]rules.Iface {
	out := map[string]rules.Iface{}
	for i, l := range c.Links {
		ifc := rules.Iface{Name: l.Interface, Index: i + 2, Up: true}
		if l.Gateway.IsValid() {
			gw := l.Gateway.As4()
			gw[3]++
			ifc.Addrs = append(ifc.Addrs, netip.PrefixFrom(netip.AddrFrom4(gw), 24))
		}
		out[l.Interface] = ifc
	}
	return out
}

func TestPlanFlush(t *testing.T) {
	const voip = `policies:
  - {name: voip, tiers: [[isp2]], failback: flush}
rules:
  - {name: sip, proto: udp, dst_ports: [5060], policy: voip}
`
	// can is what the daemon's takersFor would say: each link live and ready.
	can := func(live, ready []bool) Takers {
		return func(j int) (bool, bool) { return live[j], ready[j] }
	}
	yes, no := []bool{true, true}, []bool{false, false}
	for _, tc := range []struct {
		name        string
		extra       string
		down        []string // out of the route
		live, ready []bool
		want        Plan
	}{
		{"the other link takes them", "", []string{"isp2"}, yes, yes, Plan{Flush: true}},
		{"the other link fails its probes too", "", []string{"isp2"}, yes, no,
			Plan{Kept: "the other IPv4 links' probes fail too"}},
		{"every link down", "", []string{"isp1", "isp2"}, no, no,
			Plan{Kept: "no other IPv4 link is up to take them"}},
		{"a policy with nowhere to go keeps its flows by label", voip, []string{"isp2"}, yes, yes,
			Plan{Flush: true, Keep: []int{0}, Kept: "those of policy voip: none of its other links is up in IPv4"}},
		{"a rule's one-link policy cannot be told apart", "rules:\n  - {name: r, proto: tcp, policy: isp2}\n", []string{"isp2"}, yes, yes,
			Plan{Flush: true, Mixed: []string{"isp2"}}},
		{"only a policy with no other link gets flows", "policies:\n  - {name: p, tiers: [[isp2]]}\ndefault_policy: p\n", []string{"isp2"}, yes, yes,
			Plan{Kept: "no other link of policy p is up in IPv4 to take them"}},
		{"the default policy gets no flows, the one that does can move", "policies:\n  - {name: p, tiers: [[isp2], [isp1]]}\ndefault_policy: p\n", []string{"isp2"}, yes, yes,
			Plan{Flush: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := configtest.MustParse(t, checked+tc.extra)
			down := map[string]string{}
			for _, n := range tc.down {
				down[n] = "down: test"
			}
			des, err := plan.With(c, ifaces(c), plan.Options{Down: down})
			if err != nil {
				t.Fatal(err)
			}
			live := slices.Clone(tc.live)
			for i, l := range des.Links {
				live[i] = live[i] && l.InRoute
			}
			got := PlanFlush(c, des, 1, false, can(live, tc.ready))
			if !cmp.Equal(got, tc.want) {
				t.Errorf("PlanFlush = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A unit's flows through a failure: nothing to settle before a sync took
// it out; kept while the other link fails too (said once, and again only
// when the reason changes); deleted, and settled, once the other link can
// take them; and a unit back up forgets its kept flows.
func TestSettle(t *testing.T) {
	c := configtest.MustParse(t, checked)
	units := []Unit{{Key: "isp1", Link: 0}, {Key: "isp2", Link: 1}}
	ready := false
	takers := func(u Unit) Takers {
		return func(j int) (bool, bool) { return j != u.Link, j != u.Link && ready }
	}
	f := New()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := f.Settle(c, nil, units, takers); got != nil {
		t.Fatalf("before any sync: %+v", got)
	}
	f.Down("isp2")
	f.Failed("isp2", now)
	if at := f.FailedAt("isp2"); !at.Equal(now) {
		t.Fatalf("failed at %v", at)
	}
	up, err := plan.With(c, ifaces(c), plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Settle(c, up, units, takers); len(got) != 0 {
		t.Fatalf("still in the route: %+v", got)
	}
	out, err := plan.With(c, ifaces(c), plan.Options{Down: map[string]string{"isp2": "down: test"}})
	if err != nil {
		t.Fatal(err)
	}
	wait := "the other IPv4 links' probes fail too"
	got := f.Settle(c, out, units, takers)
	if want := []Decision{{Unit: units[1], Why: wait}}; !cmp.Equal(got, want) {
		t.Fatalf("other link failing (-got +want):\n%s", cmp.Diff(got, want))
	}
	if !f.Keep("isp2", wait, now) || f.Keep("isp2", wait, now.Add(time.Second)) {
		t.Error("kept flows not said exactly once")
	}
	if k, ok := f.Kept("isp2"); !ok || k.Why != wait || !k.Since.Equal(now) {
		t.Errorf("kept %+v %v", k, ok)
	}
	if !f.Keep("isp2", "another reason", now.Add(2*time.Second)) {
		t.Error("a new reason not said")
	}
	if k, _ := f.Kept("isp2"); !k.Since.Equal(now) {
		t.Errorf("kept since %v, want the first time", k.Since)
	}
	ready = true
	got = f.Settle(c, out, units, takers)
	if want := []Decision{{Unit: units[1], Flush: true, Plan: Plan{Flush: true}}}; !cmp.Equal(got, want) {
		t.Fatalf("other link ready (-got +want):\n%s", cmp.Diff(got, want))
	}
	if got := f.Settle(c, out, units, takers); len(got) != 0 {
		t.Fatalf("settled twice: %+v", got)
	}
	f.Down("isp2")
	f.Up("isp2")
	if _, ok := f.Kept("isp2"); ok {
		t.Error("kept after up")
	}
	if got := f.Settle(c, out, units, takers); len(got) != 0 {
		t.Fatalf("up again: %+v", got)
	}
}

// Every link of a family down: the route fails open (planned with no
// link down), said once; the flows of a unit still in the route stay;
// a link back ends it.
func TestFailOpen(t *testing.T) {
	c := configtest.MustParse(t, checked)
	units := []Unit{{Key: "isp1", Link: 0}, {Key: "isp2", Link: 1}}
	f := New()
	one := map[string]string{"isp2": "down"}
	if got, changed := f.FailOpen(false, one, 2); changed || !cmp.Equal(got, one) {
		t.Fatalf("one down: %v %v", got, changed)
	}
	both := map[string]string{"isp1": "down", "isp2": "down"}
	if got, changed := f.FailOpen(false, both, 2); !changed || got != nil || f.Open() != [2]bool{true, false} {
		t.Fatalf("both down: %v %v %v", got, changed, f.Open())
	}
	if _, changed := f.FailOpen(false, both, 2); changed {
		t.Fatal("said twice")
	}
	if _, changed := f.FailOpen(true, nil, 0); changed || f.Open()[1] {
		t.Fatal("a family without links failed open")
	}
	f.Down("isp1")
	f.Down("isp2")
	all, err := plan.With(c, ifaces(c), plan.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := f.Settle(c, all, units, func(Unit) Takers { return func(int) (bool, bool) { return true, false } })
	why := "no other IPv4 link is up to take them (every IPv4 link is judged down, and all stay in the route)"
	if want := []Decision{{Unit: units[0], Why: why}, {Unit: units[1], Why: why}}; !cmp.Equal(got, want) {
		t.Fatalf("failed open (-got +want):\n%s", cmp.Diff(got, want))
	}
	if got, changed := f.FailOpen(false, one, 2); !changed || !cmp.Equal(got, one) {
		t.Fatalf("a link back: %v %v", got, changed)
	}
}

// A reload's daemon takes over what was pending for the units that
// remain, and whether the route failed open.
func TestInherit(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	old := New()
	old.Down("isp2")
	old.Failed("isp2", now)
	old.Keep("isp2", "why", now)
	old.Down("gone")
	old.FailOpen(false, map[string]string{"isp1": "", "isp2": ""}, 2)
	prev := old.Clone()
	old.Up("isp2") // the copy does not follow
	f := New()
	f.Inherit(prev, "isp2")
	f.Inherit(prev, "isp1")
	f.InheritOpen(prev)
	if !f.flush["isp2"] || f.flush["gone"] || !f.FailedAt("isp2").Equal(now) || f.Open() != [2]bool{true, false} {
		t.Errorf("inherited %+v", f)
	}
	if k, ok := f.Kept("isp2"); !ok || k.Why != "why" {
		t.Errorf("kept %+v %v", k, ok)
	}
	if _, ok := f.Kept("isp1"); ok || f.flush["isp1"] {
		t.Error("isp1 inherited what it did not have")
	}
}
