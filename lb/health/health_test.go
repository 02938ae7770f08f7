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
	if got := tr.Loss(); got != 0.6 { // 6 of the last 10 rounds lost
		t.Errorf("loss %.3f, want 6/10", got)
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

// fakeClock steps one interval per round.
type fakeClock struct{ now time.Time }

func (c *fakeClock) tick(d time.Duration) time.Time { c.now = c.now.Add(d); return c.now }

var (
	tgt  = netip.MustParseAddr("203.0.113.10")
	ok   = func(rtt time.Duration) Round { return Round{Sent: 1, Answered: 1, RTT: rtt} }
	lost = Round{Sent: 1, Lost: []netip.Addr{tgt}}
)

// step is one round fed to the tracker, and what must hold after it.
type step struct {
	r      Round
	want   LinkState
	flip   bool
	reason string // "": not checked
}

func runSteps(t *testing.T, tr *Tracker, clk *fakeClock, interval time.Duration, steps []step) {
	t.Helper()
	for i, s := range steps {
		flip := tr.Observe(s.r, 1, clk.tick(interval))
		if flip != s.flip || tr.State != s.want {
			t.Fatalf("round %d (%s): state %s (changed %v), want %s (%v); reason %q", i, clk.now.Format("15:04:05.000"), tr.State, flip, s.want, s.flip, tr.Reason)
		}
		if s.reason != "" && tr.Reason != s.reason {
			t.Fatalf("round %d: reason %q, want %q", i, tr.Reason, s.reason)
		}
	}
}

func repeat(n int, s step) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestTrackerMaxRTT(t *testing.T) {
	c := config.HealthCheck{Fall: 3, Rise: 2, Quorum: 1, MaxRTT: 150 * time.Millisecond, Window: 10}
	clk := &fakeClock{time.Date(2026, 11, 22, 10, 31, 0, 0, time.UTC)}
	tr := NewTracker(c, StateUp, clk.now, "adopted")
	fast, slow := ok(20*time.Millisecond), ok(250*time.Millisecond)
	var steps []step
	steps = append(steps, step{slow, StateUp, false, ""}, step{slow, StateUp, false, ""}, step{fast, StateUp, false, ""}) // a fast round resets
	steps = append(steps, step{slow, StateUp, false, ""}, step{slow, StateUp, false, ""},
		step{slow, StateDown, true, "down: rtt 250 ms > 150 ms for 3 rounds"})
	steps = append(steps, step{ok(150 * time.Millisecond), StateDown, false, ""}) // at the limit is not above it
	steps = append(steps, step{fast, StateUp, true, "up: 2 good rounds (rtt 20 ms)"})
	// Lost, then slow: bad rounds of both kinds add up to fall.
	steps = append(steps, step{lost, StateUp, false, ""}, step{slow, StateUp, false, ""},
		step{slow, StateDown, true, "down: 3 bad rounds in a row (slow or lost), the last with rtt 250 ms > 150 ms"})
	runSteps(t, tr, clk, 300*time.Millisecond, steps)

	// Without max_rtt, slow answers are answers.
	c.MaxRTT = 0
	tr = NewTracker(c, StateUp, clk.now, "")
	runSteps(t, tr, clk, 300*time.Millisecond, repeat(20, step{ok(time.Second), StateUp, false, ""}))
}

// Alternate good and bad rounds: fall never triggers, loss does.
func TestTrackerMaxLoss(t *testing.T) {
	c := config.HealthCheck{Fall: 3, Rise: 3, Quorum: 1, MaxLoss: 0.2, Window: 10}
	clk := &fakeClock{time.Date(2026, 11, 22, 10, 31, 0, 0, time.UTC)}
	good := ok(10 * time.Millisecond)

	t.Run("from a start", func(t *testing.T) {
		tr := NewTracker(c, StateUp, clk.now, "")
		var steps []step
		for range 4 {
			steps = append(steps, step{lost, StateUp, false, ""}, step{good, StateUp, false, ""})
		}
		// 5 of 9 lost is far above 20%, but 9 rounds are not the window.
		steps = append(steps, step{lost, StateUp, false, ""},
			step{good, StateDown, true, "down: loss 50% > 20% over 10 rounds"})
		runSteps(t, tr, clk, 300*time.Millisecond, steps)
	})

	t.Run("a window of good rounds, then alternating", func(t *testing.T) {
		tr := NewTracker(c, StateUp, clk.now, "")
		steps := repeat(10, step{good, StateUp, false, ""})
		steps = append(steps, step{lost, StateUp, false, ""}, step{good, StateUp, false, ""},
			step{lost, StateUp, false, ""}, step{good, StateUp, false, ""}, // 2 of 10: 20% is not above 20%
			step{lost, StateDown, true, "down: loss 30% > 20% over 10 rounds"})
		// Rise good rounds are not enough while the loss is high; the
		// reason says why it stays down.
		steps = append(steps, step{good, StateDown, false, ""}, step{good, StateDown, false, ""},
			step{good, StateDown, false, "down: loss 30% > 20% over 10 rounds"})
		// The lost rounds leave the window one by one: the first at the
		// 6th good round (2 lost of 10 remain).
		steps = append(steps, step{good, StateDown, false, ""}, step{good, StateDown, false, ""},
			step{good, StateUp, true, "up: 6 good rounds (rtt 10 ms)"})
		runSteps(t, tr, clk, 300*time.Millisecond, steps)
		if got := tr.Loss(); got != 0.2 {
			t.Errorf("loss %v, want 0.2", got)
		}
	})

	t.Run("several targets, quorum met", func(t *testing.T) {
		// Half the probes lost in every round, but every round good: it
		// is loss that takes the link down.
		tr := NewTracker(c, StateUp, clk.now, "")
		half := Round{Sent: 2, Answered: 1, RTT: time.Millisecond, Lost: []netip.Addr{tgt}}
		steps := repeat(9, step{half, StateUp, false, ""})
		steps = append(steps, step{half, StateDown, true, "down: loss 50% > 20% over 10 rounds"})
		runSteps(t, tr, clk, 300*time.Millisecond, steps)
	})
}

func TestTrackerHoldDown(t *testing.T) {
	c := config.HealthCheck{Fall: 3, Rise: 2, Quorum: 1, HoldDown: 5 * time.Second, Window: 10}
	clk := &fakeClock{time.Date(2026, 11, 22, 10, 32, 0, 0, time.UTC)}
	tr := NewTracker(c, StateUp, clk.now, "")
	good := ok(10 * time.Millisecond)
	// Down at 10:32:00.900; held until 10:32:05.900, shown to the second.
	steps := []step{{lost, StateUp, false, ""}, {lost, StateUp, false, ""},
		{lost, StateDown, true, "down: 1/1 probes lost to 203.0.113.10, 3 rounds in a row"}}
	steps = append(steps, step{good, StateDown, false, ""},
		step{good, StateDown, false, "held down until 10:32:05 (down: 1/1 probes lost to 203.0.113.10, 3 rounds in a row)"})
	// 10:32:01.800 .. 10:32:05.700: 14 more rounds held.
	steps = append(steps, repeat(14, step{good, StateDown, false, ""})...)
	// 10:32:06.000: past the hold.
	steps = append(steps, step{good, StateUp, true, "up: 17 good rounds (rtt 10 ms)"})
	runSteps(t, tr, clk, 300*time.Millisecond, steps)
	if want := time.Date(2026, 11, 22, 10, 32, 6, 0, time.UTC); !tr.LastChange.Equal(want) {
		t.Errorf("up at %v, want %v", tr.LastChange, want)
	}

	// A forced down is held too, from the moment it happened.
	tr = NewTracker(c, StateUp, clk.now, "")
	if !tr.ForceDown("carrier lost on wan2", clk.tick(time.Second)) {
		t.Fatal("force down")
	}
	runSteps(t, tr, clk, time.Second, []step{{good, StateDown, false, ""},
		{good, StateDown, false, "held down until 10:32:12 (down: carrier lost on wan2)"},
		{good, StateDown, false, ""}, {good, StateDown, false, ""}, {good, StateUp, true, ""}})

	// Without hold_down, rise alone decides.
	c.HoldDown = 0
	tr = NewTracker(c, StateDown, clk.now, "down: daemon started")
	runSteps(t, tr, clk, 300*time.Millisecond, []step{{good, StateDown, false, ""}, {good, StateUp, true, ""}})
}

func TestTrackerStats(t *testing.T) {
	c := config.HealthCheck{Fall: 3, Rise: 3, Quorum: 1, Window: 4}
	tr := NewTracker(c, StateUp, time.Now(), "")
	if tr.RTT() != 0 || tr.Jitter() != 0 || tr.Loss() != 0 || tr.Rounds() != 0 {
		t.Errorf("before any round: rtt %v jitter %v loss %v rounds %d", tr.RTT(), tr.Jitter(), tr.Loss(), tr.Rounds())
	}
	ms := time.Millisecond
	for _, r := range []Round{ok(100 * ms), ok(10 * ms), ok(20 * ms), lost, ok(40 * ms), ok(30 * ms)} {
		tr.Observe(r, 1, time.Now())
	}
	// The window is the last 4: 20, lost, 40, 30.
	if got := tr.RTT(); got != 30*ms {
		t.Errorf("median %v, want 30ms", got)
	}
	// |40-20| and |30-40|: the lost round is skipped.
	if got := tr.Jitter(); got != 15*ms {
		t.Errorf("jitter %v, want 15ms", got)
	}
	if got := tr.Loss(); got != 0.25 || tr.Rounds() != 4 || tr.Window() != 4 {
		t.Errorf("loss %v over %d of %d rounds, want 0.25 over 4", got, tr.Rounds(), tr.Window())
	}
}

func TestMedianMillisPercent(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		in   []time.Duration
		want time.Duration
	}{{nil, 0}, {[]time.Duration{5 * ms}, 5 * ms}, {[]time.Duration{9 * ms, 1 * ms, 5 * ms}, 5 * ms}, {[]time.Duration{4 * ms, 1 * ms, 2 * ms, 3 * ms}, 2500 * time.Microsecond}} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	for d, want := range map[time.Duration]string{250 * ms: "250 ms", 150 * ms: "150 ms", 12600 * time.Microsecond: "13 ms", 2540 * time.Microsecond: "2.5 ms", 123 * time.Microsecond: "0.12 ms", 0: "0 ms"} {
		if got := Millis(d); got != want {
			t.Errorf("Millis(%v) = %q, want %q", d, got, want)
		}
	}
	for f, want := range map[float64]string{0.5: "50%", 0.2: "20%", 0.125: "12.5%", 1.0 / 3: "33.3%", 0: "0%", 1: "100%"} {
		if got := Percent(f); got != want {
			t.Errorf("Percent(%v) = %q, want %q", f, got, want)
		}
	}
}
