package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"flowpin/lb/config"
	"flowpin/lb/daemon/hooks"
	"flowpin/lb/daemon/keep"
	"flowpin/lb/health"
	"flowpin/lb/plan"
	"flowpin/nft/ct"
	"flowpin/nft/ct/cttest"
)

// On an HA backup, hooks and on-demand commands wait: the node that does
// not hold the VIPs must not dial a modem for flows it does not route.
// Promoted, it runs the hooks of where each link ended up and brings up
// the on-demand link its tiers need.
func TestHARoleGatesHooksAndOnDemand(t *testing.T) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho \"$FLOWPIN_LINK $FLOWPIN_STATE\" >> "+dir+"/hooks\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("f.yaml", []byte(`ha: true
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.2}
  - name: lte
    interface: wwan0
    gateway: 10.64.0.1
    tier: 2
    on_demand: {up: "echo up >> `+dir+`/lte", down: "echo down >> `+dir+`/lte", keep: 1h}
hooks:
  on_change: `+hook+`
`))
	if err != nil {
		t.Fatal(err)
	}
	d := New(c, Deps{}, quietLog())
	d.hooks = hooks.NewRunner(5*time.Second, quietLog())
	defer d.hooks.Stop()
	now := time.Now()
	d.board.Add(unitKey("isp1", false), health.NewTracker(c.Links[0].Check, health.StateDown, now, "down"))
	d.board.Add(unitKey("lte", false), health.NewTracker(c.Links[1].Check, health.StateDown, now, "down"))
	vip := netip.MustParseAddr("192.0.2.2")
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return string(b)
	}

	d.followRole(&plan.Desired{VIPs: []plan.VIP{{Addr: vip}}})
	if d.Role() != plan.RoleBackup || d.acts() {
		t.Fatalf("role %q, acts %v", d.Role(), d.acts())
	}
	d.pendingHooks.Add(hooks.Change{Link: c.Links[0], State: health.StateUp})
	d.pendingHooks.Add(hooks.Change{Link: c.Links[0], State: health.StateDown})
	d.pendingHooks.Add(hooks.Change{Link: c.Links[1], State: health.StateDown})
	d.hookChanges()
	d.onDemandLinks() // isp1 is down: the primary would dial lte
	time.Sleep(300 * time.Millisecond)
	if h, l := read("hooks"), read("lte"); h != "" || l != "" {
		t.Fatalf("the backup ran hooks %q and on-demand commands %q", h, l)
	}
	if got := len(d.pendingHooks.List()); got != 2 {
		t.Errorf("%d hooks wait, want 2 (the last change of each link)", got)
	}

	d.followRole(&plan.Desired{VIPs: []plan.VIP{{Addr: vip, Iface: "wan1"}}})
	if d.Role() != plan.RolePrimary || !d.acts() {
		t.Fatalf("role %q, acts %v", d.Role(), d.acts())
	}
	d.hookChanges()
	d.onDemandLinks()
	deadline := time.Now().Add(5 * time.Second)
	for (strings.Count(read("hooks"), "\n") < 2 || read("lte") == "") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if h := read("hooks"); h != "isp1 down\nlte down\n" && h != "lte down\nisp1 down\n" {
		t.Errorf("hooks after promotion: %q, want isp1's last change and lte's", h)
	}
	if l := read("lte"); l != "up\n" {
		t.Errorf("on-demand after promotion: %q, want lte brought up once", l)
	}
}

// flowpin_ha_primary follows the role; its changes count from the first.
func TestHARoleMetrics(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte("ha: true\nlinks:\n  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := New(c, Deps{}, quietLog())
	vip := netip.MustParseAddr("192.0.2.2")
	for _, step := range []struct {
		iface   string
		primary float64
		changes float64
	}{{"", 0, 0}, {"wan1", 1, 1}, {"wan1", 1, 1}, {"", 0, 2}} {
		d.followRole(&plan.Desired{VIPs: []plan.VIP{{Addr: vip, Iface: step.iface}}})
		if p, ch := testutil.ToFloat64(d.metrics.ha.primary), testutil.ToFloat64(d.metrics.ha.changes); p != step.primary || ch != step.changes {
			t.Errorf("VIP on %q: flowpin_ha_primary %v, changes %v; want %v, %v", step.iface, p, ch, step.primary, step.changes)
		}
	}
}

// With ha, a link that goes down keeps its answered flows: deleting them
// here would delete them on the peer too (conntrackd syncs deletions),
// which may still route them. Its connection attempts that never saw a
// reply go, so their retries are classified again onto a live link.
// Without ha the link's flows all go.
func TestHADownLinkKeepsFlows(t *testing.T) {
	const v4, v6 = unix.AF_INET, unix.AF_INET6
	for _, ha := range []bool{false, true} {
		yaml := "links:\n  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.2}\n  - {name: isp2, interface: wan2, gateway: 198.51.100.1, nat: true, nat_source: 198.51.100.2}\n"
		if ha {
			yaml = "ha: true\n" + yaml
		}
		c, err := config.Parse("f.yaml", []byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		rec := &transcript{}
		k := newFakeKernel(rec, c)
		k.ct = &cttest.Fake{Flows: []ct.FlowRecord{
			{ID: 1, Family: v4, Mark: 0x100, SeenReply: true},
			{ID: 2, Family: v4, Mark: 0x100},            // a SYN that got no answer
			{ID: 3, Family: v4, Mark: 0x100 | 0x1_0000}, // so, with another program's mark bit
			{ID: 4, Family: v4, Mark: 0x100},            // a kept policy's, by its label
			{ID: 5, Family: v6, Mark: 0x100},            // the other family's
			{ID: 6, Family: v4, Mark: 0x200},            // the other link's
		}, Labels: map[uint32][]byte{4: {1 << 2}}}
		d := New(c, Deps{Applier: k, Conntrack: k}, quietLog())
		d.flushDown(c.Links[0], unit{link: 0}, keep.Plan{Flush: true, Keep: []int{2}})
		if !ha {
			if got := rec.get(); !slices.Equal(got, []string{"flush mark 0x100/0xff00 family 2 except labels [2]"}) {
				t.Errorf("without ha: %q", got)
			}
			continue
		}
		var left []uint32
		_ = k.ct.Walk(nil, ct.DetailCounters, func(r *ct.FlowRecord) { left = append(left, r.ID) })
		if want := []uint32{1, 4, 5, 6}; !slices.Equal(left, want) {
			t.Errorf("ha: flows left %v, want %v (%q)", left, want, rec.get())
		}
		if kf, kept := d.keep.Kept(unitKey("isp1", false)); !kept || kf.Why != haKeepReplied {
			t.Errorf("ha: kept %v %+v", kept, kf)
		}
	}
}
