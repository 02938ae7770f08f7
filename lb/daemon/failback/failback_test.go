package failback

import (
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"flowpin/lb/config"
	"flowpin/lb/plan"
)

// Three links: isp1 (both families), isp2 (both), lte (IPv4 only).
var links = []config.Link{
	{Name: "isp1", Mark: 0x100, GatewayAuto: true, Gateway6Auto: true},
	{Name: "isp2", Mark: 0x200, GatewayAuto: true, Gateway6Auto: true},
	{Name: "lte", Mark: 0x300, GatewayAuto: true},
}

func desired(ps ...plan.PolicyPlan) *plan.Desired {
	d := &plan.Desired{Policies: ps}
	for _, l := range links {
		d.Links = append(d.Links, plan.LinkPlan{Link: l})
	}
	return d
}

// policy is isp1 first, then isp2, then lte, with active tiers a4 and a6.
func policy(name string, fb config.Failback, label, a4, a6 int) plan.PolicyPlan {
	return plan.PolicyPlan{
		Policy: config.Policy{Name: name, Tiers: [][]int{{0}, {1}, {2}}, Failback: fb},
		Label:  label, Active: a4, Active6: a6,
	}
}

// The tiers through a failover and a failback: the first plan starts
// them, a move down flushes nothing, a move back up to a live tier
// flushes the policy's flows on every lower tier's link (by its label)
// with failback: flush only, and a family moves on its own.
func TestApplied(t *testing.T) {
	tr := New()
	for _, step := range []struct {
		what string
		des  *plan.Desired
		open [2]bool
		want []Step
	}{
		{"first plan", desired(policy("p", config.Flush, 1, 0, 0), policy("k", config.Keep, 0, 0, 0)), [2]bool{}, []Step{
			{Policy: "p", Family: "ipv4", Started: true, To: 0},
			{Policy: "p", Family: "ipv6", Started: true, To: 0},
			{Policy: "k", Family: "ipv4", Started: true, To: 0},
			{Policy: "k", Family: "ipv6", Started: true, To: 0},
		}},
		{"nothing moved", desired(policy("p", config.Flush, 1, 0, 0), policy("k", config.Keep, 0, 0, 0)), [2]bool{}, nil},
		{"isp1 IPv4 down: a failover flushes nothing", desired(policy("p", config.Flush, 1, 1, 0), policy("k", config.Keep, 0, 1, 0)), [2]bool{}, []Step{
			{Policy: "p", Family: "ipv4", From: 0, To: 1},
			{Policy: "k", Family: "ipv4", From: 0, To: 1},
		}},
		{"no link of IPv4 up: to the last resort, nothing flushed", desired(policy("p", config.Flush, 1, -1, 0), policy("k", config.Keep, 0, -1, 0)), [2]bool{}, []Step{
			{Policy: "p", Family: "ipv4", From: 1, To: -1},
			{Policy: "k", Family: "ipv4", From: 1, To: -1},
		}},
		{"lte back after none: failback flushes the policy's flows below it (none)", desired(policy("p", config.Flush, 1, 2, 0), policy("k", config.Keep, 0, 2, 0)), [2]bool{}, []Step{
			{Policy: "p", Family: "ipv4", From: -1, To: 2},
			{Policy: "k", Family: "ipv4", From: -1, To: 2},
		}},
		{"isp1 back: p's IPv4 flows on isp2 and lte go, k's stay", desired(policy("p", config.Flush, 1, 0, 0), policy("k", config.Keep, 0, 0, 0)), [2]bool{}, []Step{
			{Policy: "p", Family: "ipv4", From: 2, To: 0, Flushes: []Flush{
				{Link: "isp2", Mark: 0x200, Label: 0, AF: unix.AF_INET},
				{Link: "lte", Mark: 0x300, Label: 0, AF: unix.AF_INET},
			}},
			{Policy: "k", Family: "ipv4", From: 2, To: 0},
		}},
		{"IPv6 fails over alone", desired(policy("p", config.Flush, 1, 0, 1)), [2]bool{}, []Step{
			{Policy: "p", Family: "ipv6", From: 0, To: 1},
		}},
		{"the IPv6 route fails open: its tier means nothing and is kept", desired(policy("p", config.Flush, 1, 0, 0)), [2]bool{false, true}, nil},
		// Every lower tier's link is named (lte has no IPv6 flows to find).
		{"IPv6 fails back: only its IPv6 flows below go", desired(policy("p", config.Flush, 1, 0, 0)), [2]bool{}, []Step{
			{Policy: "p", Family: "ipv6", From: 1, To: 0, Flushes: []Flush{
				{Link: "isp2", Mark: 0x200, Label: 0, AF: unix.AF_INET6},
				{Link: "lte", Mark: 0x300, Label: 0, AF: unix.AF_INET6},
			}},
		}},
		{"a flush policy without a label flushes nothing", desired(policy("p", config.Flush, 0, 1, 0)), [2]bool{}, []Step{
			{Policy: "p", Family: "ipv4", From: 0, To: 1},
		}},
		{"...and back", desired(policy("p", config.Flush, 0, 0, 0)), [2]bool{}, []Step{
			{Policy: "p", Family: "ipv4", From: 1, To: 0},
		}},
	} {
		got := tr.Applied(step.des, links, step.open)
		if !reflect.DeepEqual(got, step.want) {
			t.Fatalf("%s:\n got %+v\nwant %+v", step.what, got, step.want)
		}
		if p := tr.Policies(); !reflect.DeepEqual(p, step.des.Policies) {
			t.Fatalf("%s: policies %+v", step.what, p)
		}
	}
}

// A policy whose links have no IPv6 has no IPv6 tier.
func TestAppliedOneFamily(t *testing.T) {
	p := plan.PolicyPlan{Policy: config.Policy{Name: "lte-only", Tiers: [][]int{{2}}}, Active: 0, Active6: -1}
	got := New().Applied(desired(p), links, [2]bool{})
	if want := []Step{{Policy: "lte-only", Family: "ipv4", Started: true, To: 0}}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestTierName(t *testing.T) {
	if got := TierName(-1); got != "none (last resort)" {
		t.Error(got)
	}
	if got := TierName(0); got != "tier 1" {
		t.Error(got)
	}
}
