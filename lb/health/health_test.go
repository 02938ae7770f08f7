package health

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"flowpin/lb/config"
)

func TestTrackerHysteresis(t *testing.T) {
	c := config.HealthCheck{Fall: 3, Rise: 2, Quorum: 1}
	now := time.Unix(1000, 0)
	tr := NewTracker(c, StateUp, now, "adopted")
	target := netip.MustParseAddr("203.0.113.10")
	good := Round{Sent: 1, Answered: 1, RTT: time.Millisecond}
	bad := Round{Sent: 1, Lost: []netip.Addr{target}}

	steps := []struct {
		r    Round
		want LinkState
		flip bool
	}{
		{bad, StateUp, false},
		{bad, StateUp, false},
		{good, StateUp, false}, // a good round resets the count
		{bad, StateUp, false},
		{bad, StateUp, false},
		{bad, StateDown, true},
		{bad, StateDown, false},
		{good, StateDown, false},
		{bad, StateDown, false}, // rise restarts
		{good, StateDown, false},
		{good, StateUp, true},
	}
	for i, s := range steps {
		now = now.Add(time.Second)
		if flip := tr.Observe(s.r, c.Quorum, now); flip != s.flip || tr.State != s.want {
			t.Fatalf("step %d: state %s (changed %v), want %s (%v)", i, tr.State, flip, s.want, s.flip)
		}
	}
	if tr.Changes != 2 || !strings.HasPrefix(tr.Reason, "up: 2 good rounds") {
		t.Errorf("changes %d, reason %q", tr.Changes, tr.Reason)
	}
	if got := tr.Loss(); got < 0.63 || got > 0.64 { // 7 of 11 lost
		t.Errorf("loss %.3f, want 7/11", got)
	}
}

func TestTrackerQuorumAndReason(t *testing.T) {
	c := config.HealthCheck{Fall: 1, Rise: 1, Quorum: 2}
	tr := NewTracker(c, StateUp, time.Now(), "")
	b := netip.MustParseAddr("198.51.100.53")
	// One of two answering is below a quorum of 2.
	if !tr.Observe(Round{Sent: 2, Answered: 1, Lost: []netip.Addr{b}}, c.Quorum, time.Now()) {
		t.Fatal("one answer of a quorum of two kept the link up")
	}
	if want := "down: 1/2 probes lost to 198.51.100.53, 1 rounds in a row"; tr.Reason != want {
		t.Errorf("reason %q, want %q", tr.Reason, want)
	}
	if !tr.Observe(Round{Sent: 2, Answered: 2}, c.Quorum, time.Now()) || tr.State != StateUp {
		t.Error("two answers did not bring it back")
	}
}

func TestTrackerForceDown(t *testing.T) {
	c := config.HealthCheck{Fall: 3, Rise: 3, Quorum: 1}
	tr := NewTracker(c, StateUp, time.Now(), "")
	if !tr.ForceDown("carrier lost on wan2", time.Now()) || tr.State != StateDown || tr.Reason != "down: carrier lost on wan2" {
		t.Fatalf("force down: %+v", tr)
	}
	if tr.ForceDown("again", time.Now()) {
		t.Error("a second force down counted as a change")
	}
	for i := 0; i < 2; i++ {
		tr.Observe(Round{Sent: 1, Answered: 1}, 1, time.Now())
	}
	if tr.State != StateDown {
		t.Error("came back before rise rounds")
	}
	tr.Observe(Round{Sent: 1, Answered: 1}, 1, time.Now())
	if tr.State != StateUp {
		t.Error("did not come back after rise rounds")
	}
}
