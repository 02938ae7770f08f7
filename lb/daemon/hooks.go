package daemon

import (
	"flowpin/lb/daemon/hooks"
)

// hookChanges submits the on_change hook for each change since the last
// sync (the hook runner's part, lb/daemon/hooks). Called on the loop's
// goroutine after a sync, successful or not.
func (d *Daemon) hookChanges() {
	if !d.acts() {
		// The backup of an HA pair: the hooks wait, one per link and
		// family (the last change), for a promotion (role.go).
		d.pendingHooks.Coalesce()
		return
	}
	pending := d.pendingHooks.Take()
	if d.hooks == nil || d.Config.Hooks.OnChange == "" {
		return
	}
	for _, ch := range pending {
		d.hooks.Submit(d.hookJob(ch))
	}
}

// hookJob is ch's on_change hook, with the links up in its family and the
// policies' tiers as now.
func (d *Daemon) hookJob(ch hooks.Change) hooks.Job {
	var up []string
	for _, l := range d.Config.Links {
		if d.board.Up(unitKey(l.Name, ch.V6)) {
			up = append(up, l.Name)
		}
	}
	policies := d.tiers.Policies()
	return hooks.OnChange(d.Config.Hooks.OnChange, ch, up, policies)
}
