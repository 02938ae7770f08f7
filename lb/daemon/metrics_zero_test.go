package daemon

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/health"
)

// Counters a dashboard rates over exist at 0 before their first event:
// per link and family once it has a state, per policy once seen, per
// kernel subscription from the start. Without them a healthy router shows
// "no data" instead of 0 failovers.
func TestCountersStartAtZero(t *testing.T) {
	m := NewMetrics()
	for _, what := range kernelSubscriptions {
		if v := testutil.ToFloat64(m.subLosses.WithLabelValues(what)); v != 0 {
			t.Errorf("subscription losses %s = %v", what, v)
		}
	}
	if n := testutil.CollectAndCount(m.subLosses); n != len(kernelSubscriptions) {
		t.Errorf("flowpin_subscription_losses_total: %d series, want %d", n, len(kernelSubscriptions))
	}
	if n := testutil.CollectAndCount(m.changes) + testutil.CollectAndCount(m.tierChanges); n != 0 {
		t.Fatalf("%d change series before any link or policy", n)
	}
	m.setState("isp1", "ipv4", health.StateUp)
	m.tierStarted("backup", "ipv4", 0)
	if n := testutil.CollectAndCount(m.changes, "flowpin_link_state_changes_total"); n != 1 {
		t.Errorf("flowpin_link_state_changes_total: %d series after the link's first state, want 1", n)
	}
	if n := testutil.CollectAndCount(m.tierChanges, "flowpin_policy_tier_changes_total"); n != 1 {
		t.Errorf("flowpin_policy_tier_changes_total: %d series after the policy was seen, want 1", n)
	}
	if v := testutil.ToFloat64(m.tier.WithLabelValues("backup", "ipv4")); v != 1 {
		t.Errorf("active tier %v, want 1", v)
	}
	if v := testutil.ToFloat64(m.changes.WithLabelValues("isp1", "ipv4")); v != 0 {
		t.Errorf("state changes %v, want 0", v)
	}
}
