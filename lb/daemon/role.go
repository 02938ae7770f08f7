package daemon

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"flowpin/lb/plan"
)

// An HA pair's role (config ha): this node is the primary while it holds
// the VIPs (the links' nat_source addresses), which keepalived moves. The
// daemon reads it from its own addresses at every sync; an address change
// is a notification that triggers one. Only the primary runs on_change
// hooks and on-demand commands (the backup must not dial a modem); the
// backup keeps what they would have done pending, and acts on it once
// promoted. Routing, probes and the nft table are the same on both.

// followRole takes the role of the plan just applied (with ha).
func (d *Daemon) followRole(des *plan.Desired) {
	if !d.Config.HA {
		return
	}
	r := plan.RoleOf(des.VIPs)
	d.roleMu.Lock()
	old := d.role
	d.role = r
	d.roleMu.Unlock()
	if old == r {
		return
	}
	var held, not []string
	for _, v := range des.VIPs {
		if v.Iface != "" {
			held = append(held, v.Addr.String()+" on "+v.Iface)
		} else {
			not = append(not, v.Addr.String())
		}
	}
	switch {
	case old == "":
		d.Log.Info("ha role", "role", r, "holds", held, "not", not)
	case r == plan.RolePrimary:
		d.Log.Warn("ha role changed: this node holds the VIPs now; pending hooks and on-demand commands run", "from", old, "to", r, "holds", held)
	default:
		d.Log.Warn("ha role changed: hooks and on-demand commands wait while this node does not hold every VIP", "from", old, "to", r, "holds", held, "not", not)
	}
	d.metrics.haRole(r, old != "")
}

// Role is the HA role as of the last sync ("" without ha).
func (d *Daemon) Role() plan.Role {
	d.roleMu.Lock()
	defer d.roleMu.Unlock()
	return d.role
}

// acts says whether this node runs hooks and on-demand commands: always
// without ha; with ha, only as the primary.
func (d *Daemon) acts() bool {
	return !d.Config.HA || d.Role() == plan.RolePrimary
}

// haMetrics are registered with the first role of a daemon with ha, and
// unregistered by a reload to a config without: a node that is no longer
// one of a pair must not go on saying it is the primary.
type haMetrics struct {
	mu      sync.Mutex
	primary prometheus.Gauge
	changes prometheus.Counter
}

func (m *Metrics) dropHA() {
	m.ha.mu.Lock()
	defer m.ha.mu.Unlock()
	if m.ha.primary != nil {
		m.Registry.Unregister(m.ha.primary)
		m.Registry.Unregister(m.ha.changes)
		m.ha.primary, m.ha.changes = nil, nil
	}
}

func (m *Metrics) haRole(r plan.Role, changed bool) {
	m.ha.mu.Lock()
	defer m.ha.mu.Unlock()
	if m.ha.primary == nil {
		m.ha.primary = prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flowpin_ha_primary", Help: "1 if this node of an HA pair holds every VIP (its links' nat_source addresses), 0 if not.",
		})
		m.ha.changes = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowpin_ha_role_changes_total", Help: "Changes of this node's HA role (primary, backup, split) seen since the daemon started.",
		})
		m.Registry.MustRegister(m.ha.primary, m.ha.changes)
	}
	v := 0.0
	if r == plan.RolePrimary {
		v = 1
	}
	m.ha.primary.Set(v)
	if changed {
		m.ha.changes.Inc()
	}
}
