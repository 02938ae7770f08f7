package daemon

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
	"flowpin/lb/plan"
)

// haChecked is checked with ha: each link's VIP is .9 of its subnet, so
// the fake kernel's own address (.2) stays the node's.
var haChecked = "ha: true\n" + strings.NewReplacer(
	"gateway: 192.0.2.1\n", "gateway: 192.0.2.1\n    nat_source: 192.0.2.9\n",
	"gateway: 198.51.100.1\n", "gateway: 198.51.100.1\n    nat_source: 198.51.100.9\n",
).Replace(checked)

// holdVIPs gives (or takes from) the fake kernel's wan1 and wan2 their VIPs.
func (k *fakeKernel) holdVIPs(hold bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for name, vip := range map[string]string{"wan1": "192.0.2.9/24", "wan2": "198.51.100.9/24"} {
		ifc := k.ifaces[name]
		p := netip.MustParsePrefix(vip)
		ifc.Addrs = append([]netip.Prefix(nil), ifc.Addrs[0])
		if hold {
			ifc.Addrs = append(ifc.Addrs, p)
		}
		k.ifaces[name] = ifc
	}
}

// Reloads while the role flips: a role that changed across a reload is a
// change (said and counted, as without the reload), and a reload to a
// config without ha takes the ha metrics away rather than leaving
// flowpin_ha_primary at 1 on a node that is no longer one of a pair.
func TestHAReloadWhileTheRoleFlips(t *testing.T) {
	h := newHarness(t)
	c := configtest.MustParse(t, haChecked)
	h.k = newFakeKernel(h.rec, c)
	h.k.holdVIPs(true)
	var mu sync.Mutex
	next := c
	sup := NewSupervisor(Deps{Applier: h.k, Conntrack: h.k, Probers: h.probers.factory, Clock: h.clock, Events: h.events},
		func() (*config.Config, error) { mu.Lock(); defer mu.Unlock(); return next, nil }, quietLog())
	d, stop := runSupervisor(t, sup, c)
	defer stop()
	h.d = d
	m := d.Metrics()
	// The metrics follow the role just after it is taken.
	metrics := func(primary, changes float64) func() bool {
		return func() bool {
			m.ha.mu.Lock()
			defer m.ha.mu.Unlock()
			return m.ha.primary != nil && testutil.ToFloat64(m.ha.primary) == primary && testutil.ToFloat64(m.ha.changes) == changes
		}
	}
	h.eventually("primary", func() bool { return d.Role() == plan.RolePrimary })
	h.eventually("flowpin_ha_primary 1, no change", metrics(1, 0))
	// keepalived takes the VIPs away; a reload overtakes the sync.
	h.k.holdVIPs(false)
	if err := sup.Reload(); err != nil {
		t.Fatal(err)
	}
	d2 := waitDaemon(t, sup, d)
	h.eventually("backup", func() bool { return d2.Role() == plan.RoleBackup })
	h.eventually("backup after a reload: flowpin_ha_primary 0, one change", metrics(0, 1))
	// Back, reloaded again: one more change.
	h.k.holdVIPs(true)
	if err := sup.Reload(); err != nil {
		t.Fatal(err)
	}
	d3 := waitDaemon(t, sup, d2)
	h.eventually("primary again", func() bool { return d3.Role() == plan.RolePrimary })
	h.eventually("primary after another reload: flowpin_ha_primary 1, two changes", metrics(1, 2))
	// ha taken out of the config.
	mu.Lock()
	next = configtest.MustParse(t, strings.Replace(haChecked, "ha: true\n", "", 1))
	mu.Unlock()
	if err := sup.Reload(); err != nil {
		t.Fatal(err)
	}
	d4 := waitDaemon(t, sup, d3)
	h.eventually("no role", func() bool { return d4.Role() == "" })
	families, err := d4.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "flowpin_ha_") {
			t.Errorf("without ha, %s is still exported", f.GetName())
		}
	}
}

// A node demoted while its syncs fail (the apply refused, say, by a
// netlink error) is a backup all the same: the role is the node's
// addresses, not what it managed to apply. Taken only from syncs that
// succeeded, it stayed primary, and the node ran hooks (which run after
// every sync, successful or not) and on-demand commands as the primary.
func TestHADemotedWhileSyncsFail(t *testing.T) {
	h := newHarness(t)
	h.c = configtest.MustParse(t, haChecked)
	h.k = newFakeKernel(h.rec, h.c)
	h.k.holdVIPs(true)
	h.probers = newFakeProbers(h.c)
	h.start()
	h.eventually("primary", func() bool { return h.d.Role() == plan.RolePrimary })
	h.k.setApplyErr(errors.New("netlink: no buffer space available"))
	h.k.holdVIPs(false)
	h.events.send(Event{Kind: EventDrift, What: "address change"})
	h.advanceSync()
	h.eventually("an apply failed", func() bool {
		return slices.ContainsFunc(h.rec.get(), func(l string) bool { return strings.HasSuffix(l, ": FAILED") })
	})
	h.eventually("backup, though the sync failed", func() bool { return h.d.Role() == plan.RoleBackup })
}
