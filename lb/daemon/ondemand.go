package daemon

import (
	"slices"

	"flowpin/lb/config"
	"flowpin/lb/daemon/ondemand"
)

// onDemandLinks carries out what the on-demand part (lb/daemon/ondemand)
// decides after each sync: an on-demand link is brought up when no link
// of a tier above it is up in some policy that has it, and taken down once
// a higher tier has been up in every such policy for its keep time. While
// intentionally down it is "standby".
func (d *Daemon) onDemandLinks() {
	linkUp := d.linkUp
	if !d.acts() {
		// Not the node that routes the pair's flows (an HA backup): no
		// on-demand link is needed here, as if every other link were up.
		// One this node brought up while primary goes down after its
		// keep time; on promotion the next sync brings up what is needed.
		linkUp = func(name string) bool {
			if i := slices.IndexFunc(d.Config.Links, func(l config.Link) bool { return l.Name == name }); i >= 0 && d.Config.Links[i].OnDemand == nil {
				return true
			}
			return d.linkUp(name)
		}
	}
	for _, a := range d.od.Follow(d.Config, linkUp) {
		l := a.Link
		switch a.Kind {
		case ondemand.SetStandby:
			v := 0.0
			if a.Standby {
				v = 1
			}
			d.metrics.standby(l.Name, v)
		case ondemand.Up:
			d.Log.Warn("on-demand link needed: bringing it up", "link", l.Name, "command", l.OnDemand.Up)
			d.onDemandCommand(l, "up", l.OnDemand.Up)
		case ondemand.RetryUp:
			d.Log.Warn("on-demand link still not up: running its up command again", "link", l.Name, "after", ondemand.Retry, "command", l.OnDemand.Up)
			d.onDemandCommand(l, "up", l.OnDemand.Up)
		case ondemand.Unneeded:
			d.Log.Info("on-demand link no longer needed: a higher tier is up", "link", l.Name, "down_in", l.OnDemand.Keep)
		case ondemand.Down:
			d.Log.Info("on-demand link: a higher tier has been up for its keep time; taking it down", "link", l.Name, "keep", l.OnDemand.Keep, "command", l.OnDemand.Down)
			// Its flows move back to the higher tier. Unlike a link judged
			// down, it is surely gone once its down command has run, so
			// its flows could not go on there even with nowhere else to
			// go: deleting them lets them fail at once rather than hang.
			// Not on an HA node that is not the primary: it took the link
			// down because it was demoted, not because the link is gone
			// for the pair, and conntrackd would delete the flows on the
			// peer too, which routes them now, maybe by its own copy of
			// the link. The primary deletes them as a lone router does.
			if !d.acts() {
				d.keepFlows(l, unit{link: slices.IndexFunc(d.Config.Links, func(o config.Link) bool { return o.Name == l.Name })}, haKeep)
			} else if err := d.deps.Conntrack.FlushMark(l.Mark, d.Config.MarkMask); err != nil {
				d.Log.Error("on-demand: flush the link's flows", "link", l.Name, "err", err)
			}
			d.onDemandCommand(l, "down", l.OnDemand.Down)
		}
	}
}

// linkUp: some family of the link is up.
func (d *Daemon) linkUp(name string) bool {
	return d.board.Up(unitKey(name, false)) || d.board.Up(unitKey(name, true))
}

// onDemandCommand runs an on-demand link's up or down command.
func (d *Daemon) onDemandCommand(l config.Link, what, cmd string) {
	if d.hooks == nil {
		return
	}
	d.hooks.Submit(ondemand.Command(l, what, cmd))
}
