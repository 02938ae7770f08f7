package daemon

import (
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"flowpin/lb/config"
	"flowpin/lb/daemon/hooks"
	"flowpin/lb/health"
	"flowpin/lb/plan"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The hook of a change waits for the sync after it and sees the tiers
// and the up links as that sync left them.
func TestHookEnv(t *testing.T) {
	c := &config.Config{
		Links: []config.Link{
			{Name: "isp1", Interface: "wan1", GatewayAuto: true},
			{Name: "lte", Interface: "wwan0", GatewayAuto: true, Tier: 2},
		},
		Hooks: config.Hooks{OnChange: "/bin/true", Timeout: time.Second},
	}
	d := New(c, Deps{}, quietLog())
	now := time.Now()
	d.board.Add(unitKey("isp1", false), health.NewTracker(c.Links[0].Check, health.StateDown, now, "down"))
	d.board.Add(unitKey("lte", false), health.NewTracker(c.Links[1].Check, health.StateUp, now, "up"))
	d.tiers.Applied(&plan.Desired{Policies: []plan.PolicyPlan{
		{Policy: config.Policy{Name: "default"}, Active: 1, Active6: -1},
		{Policy: config.Policy{Name: "cable-first"}, Active: 0, Active6: -1},
	}}, c.Links, [2]bool{})
	got := d.hookJob(hooks.Change{Link: c.Links[0], State: health.StateDown, Reason: "down: carrier lost on wan1"}).Env
	want := []string{
		"FLOWPIN_LINK=isp1", "FLOWPIN_INTERFACE=wan1", "FLOWPIN_FAMILY=ipv4", "FLOWPIN_STATE=down",
		"FLOWPIN_REASON=down: carrier lost on wan1", "FLOWPIN_CAUSE=health", "FLOWPIN_UP_LINKS=lte",
		"FLOWPIN_POLICY_DEFAULT_TIER=2", "FLOWPIN_POLICY_DEFAULT_TIER6=none",
		"FLOWPIN_POLICY_CABLE_FIRST_TIER=1", "FLOWPIN_POLICY_CABLE_FIRST_TIER6=none",
	}
	if !slices.Equal(got, want) {
		t.Errorf("env\n got %q\nwant %q", got, want)
	}
}
