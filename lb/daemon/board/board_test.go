package board

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"flowpin/lb/config"
	"flowpin/lb/health"
)

var check = config.HealthCheck{Fall: 2, Rise: 1, Quorum: 1, Window: 4}

func answered(rtt time.Duration) health.Round { return health.Round{Sent: 1, Answered: 1, RTT: rtt} }

func lost() health.Round { return health.Round{Sent: 1} }

func TestObserveFallAndRise(t *testing.T) {
	b := New()
	t0 := time.Unix(1000, 0)
	b.Add("isp1", health.NewTracker(check, health.StateUp, t0, "up"))
	if s := b.Observe("isp1", lost(), 1, t0.Add(time.Second)); s.Changed || s.State != health.StateUp || s.Bad != 1 {
		t.Fatalf("one lost round of fall 2: %+v", s)
	}
	s := b.Observe("isp1", lost(), 1, t0.Add(2*time.Second))
	if !s.Changed || s.State != health.StateDown || s.Bad != 2 {
		t.Fatalf("second lost round: %+v", s)
	}
	if why, ok := b.Down("isp1"); !ok || why != s.Reason {
		t.Errorf("Down = %q %v, want %q", why, ok, s.Reason)
	}
	s = b.Observe("isp1", answered(10*time.Millisecond), 1, t0.Add(3*time.Second))
	if !s.Changed || s.State != health.StateUp || s.Bad != 0 || s.RTT != 10*time.Millisecond {
		t.Fatalf("answered round of rise 1: %+v", s)
	}
	v, ok := b.View("isp1")
	if !ok || v.State != health.StateUp || v.Rounds != 3 || v.Loss == 0 || !v.LastChange.Equal(t0.Add(3*time.Second)) {
		t.Errorf("View = %+v %v", v, ok)
	}
	if _, ok := b.View("isp2"); ok {
		t.Error("View of a unit with no tracker")
	}
}

func TestForceDown(t *testing.T) {
	b := New()
	t0 := time.Unix(1000, 0)
	b.Add("isp1", health.NewTracker(check, health.StateUp, t0, "up"))
	changed, why := b.ForceDown("isp1", "carrier lost on wan1", t0)
	if !changed || why == "" || b.Up("isp1") {
		t.Fatalf("ForceDown = %v %q, up %v", changed, why, b.Up("isp1"))
	}
	if changed, _ := b.ForceDown("isp1", "again", t0); changed {
		t.Error("ForceDown of a down unit changed it")
	}
}

func TestGateway(t *testing.T) {
	b := New()
	gw1, gw2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.254")
	if old := b.SetGateway("isp1", gw1); old.IsValid() {
		t.Errorf("first SetGateway returned %v", old)
	}
	if old := b.SetGateway("isp1", gw2); old != gw1 {
		t.Errorf("SetGateway returned %v, want %v", old, gw1)
	}
	if got := b.Gateway("isp1"); got != gw2 {
		t.Errorf("Gateway = %v", got)
	}
	if got := b.Gateway("isp1/ipv6"); got.IsValid() {
		t.Errorf("Gateway of another unit = %v", got)
	}
}

// A suspicion asks for a burst only of an up unit, once armed, and one
// pending burst at a time.
func TestSuspect(t *testing.T) {
	b := New()
	t0 := time.Unix(1000, 0)
	b.Add("isp1", health.NewTracker(check, health.StateUp, t0, "up"))
	b.Add("isp2", health.NewTracker(check, health.StateDown, t0, "down"))
	if b.Suspect("isp1", "before arming") || b.Armed() {
		t.Fatal("a suspicion before Arm asked for a burst")
	}
	c1, c2 := make(chan struct{}, 1), make(chan struct{}, 1)
	b.Arm(map[string]chan<- struct{}{"isp1": c1, "isp2": c2})
	if !b.Armed() {
		t.Fatal("not armed")
	}
	if b.Suspect("isp2", "down already") || len(c2) != 0 {
		t.Error("a down unit was asked for a burst")
	}
	if !b.Suspect("isp1", "4 flows unanswered") || !b.Suspect("isp1", "5 flows unanswered") {
		t.Fatal("an up unit was not suspected")
	}
	if len(c1) != 1 {
		t.Errorf("%d bursts pending, want 1", len(c1))
	}
	if got := b.BurstWhy("isp1"); got != "5 flows unanswered" {
		t.Errorf("BurstWhy = %q", got)
	}
}

// Takers are ready when up, answering and up since before the failure;
// none while the failed unit answers again.
func TestReady(t *testing.T) {
	b := New()
	t0 := time.Unix(1000, 0)
	failed := t0.Add(10 * time.Second)
	b.Add("isp1", health.NewTracker(check, health.StateDown, t0, "down"))
	b.Add("isp2", health.NewTracker(check, health.StateUp, t0, "up"))                      // up long before
	b.Add("isp3", health.NewTracker(check, health.StateUp, failed.Add(time.Second), "up")) // came back after
	b.Add("isp4", health.NewTracker(check, health.StateUp, t0, "up"))
	b.Observe("isp4", lost(), 1, t0.Add(time.Second)) // failing now
	others := []string{"isp1", "isp2", "isp3", "isp4", "isp5"}
	if got, want := b.Ready("isp1", others, failed), []bool{false, true, false, false, false}; !slices.Equal(got, want) {
		t.Errorf("Ready = %v, want %v", got, want)
	}
	b.Observe("isp1", answered(time.Millisecond), 1, failed.Add(2*time.Second))
	if got := b.Ready("isp1", others, failed); !slices.Equal(got, make([]bool, len(others))) {
		t.Errorf("Ready while the failed unit answers = %v, want none", got)
	}
}

func TestTrackersIsACopy(t *testing.T) {
	b := New()
	tr := health.NewTracker(check, health.StateUp, time.Unix(1000, 0), "up")
	b.Add("isp1", tr)
	m := b.Trackers()
	delete(m, "isp1")
	if m2 := b.Trackers(); m2["isp1"] != tr {
		t.Error("Trackers' map is the board's own")
	}
}

// An override sets a unit's state whatever its probes say; they go on
// judging underneath, for when it is lifted.
func TestOverride(t *testing.T) {
	b := New()
	t0 := time.Unix(1000, 0)
	b.Add("isp1", health.NewTracker(check, health.StateUp, t0, "up"))
	b.Add("isp2", health.NewTracker(check, health.StateUp, t0, "up"))
	c1 := make(chan struct{}, 1)
	b.Arm(map[string]chan<- struct{}{"isp1": c1})
	changed, state, reason := b.SetOverride("isp1", &Override{State: health.StateDown, Reason: "down by operator", Since: t0})
	if !changed || state != health.StateDown || reason != "down by operator" || b.Up("isp1") {
		t.Fatalf("SetOverride down = %v %v %q", changed, state, reason)
	}
	if why, ok := b.Down("isp1"); !ok || why != "down by operator" {
		t.Errorf("Down = %q %v", why, ok)
	}
	for i := 1; i <= 3; i++ {
		if s := b.Observe("isp1", lost(), 1, t0.Add(time.Duration(i)*time.Second)); s.Changed || s.State != health.StateDown {
			t.Fatalf("round %d under the override: %+v", i, s)
		}
	}
	if b.Suspect("isp1", "suspicion") || len(c1) != 0 {
		t.Error("an overridden unit was asked for a burst")
	}
	// It answers its probes, yet others are ready to take its flows: it
	// is not coming back by itself.
	b.Observe("isp1", answered(time.Millisecond), 1, t0.Add(4*time.Second))
	if r := b.Ready("isp1", []string{"isp2"}, t0.Add(5*time.Second)); !r[0] {
		t.Error("isp2 not ready to take the flows of isp1 down by the operator")
	}
	// Lifted: the tracker's state, which its probes brought back up
	// (rise 1) after taking it down.
	changed, state, _ = b.SetOverride("isp1", nil)
	if !changed || state != health.StateUp {
		t.Errorf("lifted: %v %v, want up (its probes')", changed, state)
	}
	changed, state, _ = b.SetOverride("isp2", &Override{State: health.StateStandby, Reason: "quota", Since: t0})
	if v, _ := b.View("isp2"); !changed || state != health.StateStandby || v.State != health.StateStandby || v.Reason != "quota" {
		t.Errorf("standby: %v %v %+v", changed, state, v)
	}
	if _, ok := b.Down("isp2"); !ok {
		t.Error("a unit on standby is not out")
	}
}
