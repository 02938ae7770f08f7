package ondemand

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"flowpin/lb/clock/clocktest"
	"flowpin/lb/config"
)

// isp1 (tier 1) and an on-demand lte (tier 2), in the default policy,
// and a rule's one-link policy of lte (which does not make it needed).
func testConfig() *config.Config {
	c := &config.Config{
		Links: []config.Link{
			{Name: "isp1", Interface: "wan1"},
			{Name: "lte", Interface: "wwan0", Tier: 1, OnDemand: &config.OnDemand{Up: "ifup wwan0", Down: "ifdown wwan0", Keep: time.Minute}},
		},
		Policies: []config.Policy{
			{Name: config.DefaultPolicy, Implicit: true, Tiers: [][]int{{0}, {1}}},
			{Name: "lte", Implicit: true, Tiers: [][]int{{1}}},
		},
	}
	return c
}

func kinds(as []Action) []string {
	var out []string
	for _, a := range as {
		s := map[Kind]string{SetStandby: "standby", Up: "up", RetryUp: "retry", Unneeded: "unneeded", Down: "down"}[a.Kind]
		if a.Kind == SetStandby && !a.Standby {
			s = "active"
		}
		out = append(out, a.Link.Name+" "+s)
	}
	return out
}

// The on-demand link through its life: standby while the primary is up,
// up when it goes (its command retried while the link does not come up),
// its keep time once the primary is back, and down after it.
func TestFollow(t *testing.T) {
	clk := clocktest.New()
	c := testConfig()
	up := map[string]bool{"isp1": true}
	o := New(clk)
	follow := func(want ...string) {
		t.Helper()
		if got := kinds(o.Follow(c, func(n string) bool { return up[n] })); !slices.Equal(got, want) {
			t.Fatalf("actions %q, want %q", got, want)
		}
	}
	follow("lte standby")
	if !o.Standby("lte") || o.C() != nil {
		t.Fatalf("lte at start: standby %v, timer %v", o.Standby("lte"), o.C())
	}
	follow() // nothing changed

	up["isp1"] = false
	follow("lte active", "lte up")
	if o.Standby("lte") || o.C() == nil {
		t.Fatalf("lte needed: standby %v", o.Standby("lte"))
	}
	clk.Advance(Retry - time.Second)
	follow() // not yet
	clk.Advance(time.Second)
	<-o.C()
	follow("lte retry")

	up["lte"] = true
	follow() // up and needed
	up["isp1"] = true
	follow("lte unneeded")
	clk.Advance(time.Minute - time.Second)
	follow()
	clk.Advance(time.Second)
	<-o.C()
	follow("lte standby", "lte down")
	if !o.Standby("lte") {
		t.Error("lte down: not standby")
	}
	o.Stop()
}

// A link up when the daemon starts and not needed goes down after keep.
func TestFollowUpAtStart(t *testing.T) {
	clk := clocktest.New()
	o := New(clk)
	c := testConfig()
	all := func(string) bool { return true }
	if got := kinds(o.Follow(c, all)); !slices.Equal(got, []string{"lte active", "lte unneeded"}) {
		t.Fatalf("start: %q", got)
	}
	clk.Advance(time.Minute)
	if got := kinds(o.Follow(c, all)); !slices.Equal(got, []string{"lte standby", "lte down"}) {
		t.Fatalf("after keep: %q", got)
	}
}

// Needed by the default policy, not by a rule's one-link policy of its
// own, and by an explicit policy where it is the first tier.
func TestNeeded(t *testing.T) {
	c := testConfig()
	isp1Up := func(n string) bool { return n == "isp1" }
	if Needed(c, 1, isp1Up) {
		t.Error("needed with isp1 up")
	}
	if !Needed(c, 1, func(string) bool { return false }) {
		t.Error("not needed with isp1 down")
	}
	c.Policies = append(c.Policies, config.Policy{Name: "lte-first", Tiers: [][]int{{1}, {0}}})
	if !Needed(c, 1, isp1Up) {
		t.Error("not needed by the policy that puts it first")
	}
}

func TestCommand(t *testing.T) {
	j := Command(config.Link{Name: "lte", Interface: "wwan0"}, "up", "ifup wwan0")
	want := []string{"FLOWPIN_LINK=lte", "FLOWPIN_INTERFACE=wwan0", "FLOWPIN_STATE=up", "FLOWPIN_REASON=on-demand up"}
	if j.Queue != "lte on_demand" || j.What != "on_demand up" || !reflect.DeepEqual(j.Argv, []string{"/bin/sh", "-c", "ifup wwan0"}) || !slices.Equal(j.Env, want) {
		t.Errorf("job %+v", j)
	}
}
