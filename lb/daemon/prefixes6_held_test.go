package daemon

import (
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/config/configtest"
	"flowpin/rules"
)

// setDelegated sets the delegated-prefix routes the kernel holds (on lo,
// as dhcpcd installs them).
func (k *fakeKernel) setDelegated(ps ...string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	lo := rules.Iface{Name: "lo", Up: true}
	for _, p := range ps {
		lo.Delegated = append(lo.Delegated, netip.MustParsePrefix(p))
	}
	k.ifaces["lo"] = lo
}

// A DHCPv6-PD client drops its delegation when its uplink fails (dhcpcd
// on carrier loss), while the LAN hosts keep the addresses they took from
// it. The daemon keeps translating the prefix the auto link held while it
// is down; once the link is back, the kernel's delegations count again.
func TestPrefixes6AutoHeldWhileDown(t *testing.T) {
	h := newHarness(t)
	h.c = configtest.MustParse(t, `links:
  - name: isp1
    interface: wan1
    gateway6: 2001:db8:1::1
    prefixes6: auto
    check: {targets: [2001:db8:ff::10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
  - name: isp2
    interface: wan2
    gateway6: 2001:db8:2::1
    prefixes6: [2001:db8:2:100::/56]
    check: {targets: [2001:db8:ff::10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
`)
	h.k = newFakeKernel(h.rec, h.c)
	h.k.setDelegated("2001:db8:1:100::/56")
	h.probers = newFakeProbers(h.c)
	h.start()
	translated := func(want float64) func() bool {
		return func() bool {
			g := h.d.Metrics().prefix6
			return testutil.CollectAndCount(g) == 2 && testutil.ToFloat64(g.WithLabelValues("isp1", "2001:db8:1:100::/56")) == want
		}
	}
	h.eventually("isp1's delegated prefix planned, untranslated", translated(0))

	// The uplink fails and its client withdraws the delegation.
	h.k.setDelegated()
	h.probers.set("wan1/6", false)
	h.round()
	h.round()
	h.round()
	h.advanceSync()
	h.eventually("isp1's prefix translated while isp1 is down, its delegation gone", translated(1))

	// Back up without the delegation: the kernel's word counts again.
	h.probers.set("wan1/6", true)
	h.round()
	h.round()
	h.advanceSync()
	h.eventually("isp1's prefix gone once isp1 is up with no delegation", func() bool {
		return testutil.CollectAndCount(h.d.Metrics().prefix6) == 1
	})
}
