// Package apply makes the kernel match a plan: it reads what flowpin owns,
// diffs it against the Desired value, and changes only the difference,
// adding before deleting. A failed apply is rolled back newest first. Down
// removes exactly what flowpin added. It reaches the kernel only through
// the interfaces declared here, so a fake can stand in for each.
package apply

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"flowpin/lb/config"
	"flowpin/lb/dnslease"
	"flowpin/lb/plan"
	"flowpin/nft"
	"flowpin/rules"
)

// Routing is what apply needs of netlink and /proc/sys: rules.Kernel in
// production, rulestest.Fake in tests.
type Routing interface {
	// Interfaces lists every interface with its addresses and main's
	// default gateways through it.
	Interfaces() (map[string]rules.Iface, error)
	// Owned reads back every rule and route carrying flowpin's tag.
	Owned() (rules.State, error)
	// ForeignRules lists the ip rules flowpin does not own.
	ForeignRules() ([]rules.ForeignRule, error)
	// ForeignRoutes lists, per table of tables, routes flowpin does not own.
	ForeignRoutes(tables []int) (map[int][]string, error)
	// Do sends one change.
	Do(rules.Op) error
	ReadSysctl(key string) (string, error)
	WriteSysctl(rules.Sysctl) error
}

// Tables is what apply needs of nftables: nft.Conn in production,
// nfttest.Fake in tests.
type Tables interface {
	// Read lists the owned table; a missing one is not an error.
	Read() (*nft.Current, error)
	// Apply replaces the owned table in one transaction when it differs
	// from spec, and says whether it wrote.
	Apply(nft.Spec) (bool, error)
	// Remove deletes the owned table, and says whether there was one.
	Remove() (bool, error)
	// Record replaces only the table's records (a missing table is
	// created with its chains empty) in one transaction, and says
	// whether it wrote.
	Record(nft.Records) (bool, error)
}

// elementChecker finds file sets whose elements someone changed, as
// nft.Conn's Apply does, so that plan shows the rewrite apply would make.
type elementChecker interface {
	CheckElements(nft.Spec, *nft.Current) error
}

// scripter renders the script that turns the table found into a spec as
// Apply would (nft.Conn): sets made anew with the elements they had.
type scripter interface {
	Script(nft.Spec, *nft.Current) (string, error)
}

// tableScript is the nft script that turns cur into s, as Apply does.
func (k *Kernel) tableScript(s nft.Spec, cur *nft.Current) (string, error) {
	if sc, ok := k.NFT.(scripter); ok {
		return sc.Script(s, cur)
	}
	return s.Render(), nil
}

// TableScript is the nft script that makes the table of d from the one
// in the kernel, as apply would: run by `nft -f` on a router where the
// table exists, it makes the same table as apply (plan --full).
// The records are apply's too (the values sysctls had before flowpin),
// so that down after the script restores them.
func (k *Kernel) TableScript(d *plan.Desired) (string, error) {
	st, err := k.steps(d)
	if err != nil {
		return "", err
	}
	if ec, ok := k.NFT.(elementChecker); ok {
		if err := ec.CheckElements(st.spec, st.cur); err != nil {
			return "", err
		}
	}
	return k.tableScript(st.spec, st.cur)
}

// Flows is what apply needs of conntrack: ct.Conntrack in production.
type Flows interface {
	// FlushMark deletes every flow with (ct mark & mask) == mark.
	FlushMark(mark, mask uint32) error
}

var (
	_ Routing = (*rules.Kernel)(nil)
	_ Tables  = (*nft.Conn)(nil)
)

// Kernel bundles the handles on one network namespace.
type Kernel struct {
	Routes Routing
	NFT    Tables
	// Flows, if set, is where the flows of a link that left the config
	// (or lost its mark) are deleted, so they reconnect at once on a
	// link that exists rather than being restored onto a stale mark.
	Flows Flows

	// records are the pre-flowpin sysctl values last written to the table.
	records map[string]string
	writes  int
}

// New returns a Kernel on the given adapters.
func New(r Routing, t Tables) *Kernel { return &Kernel{Routes: r, NFT: t} }

// Writes is the number of kernel writes made so far.
func (k *Kernel) Writes() int { return k.writes }

func (k *Kernel) do(op rules.Op) error {
	k.writes++
	return k.Routes.Do(op)
}

func (k *Kernel) writeSysctl(s rules.Sysctl) error {
	k.writes++
	return k.Routes.WriteSysctl(s)
}

func (k *Kernel) applyTable(s nft.Spec) (bool, error) {
	wrote, err := k.NFT.Apply(s)
	if wrote || err != nil {
		k.writes++
	}
	return wrote, err
}

func (k *Kernel) record(records nft.Records) (bool, error) {
	wrote, err := k.NFT.Record(records)
	if wrote || err != nil {
		k.writes++
	}
	return wrote, err
}

func (k *Kernel) removeTable() (bool, error) {
	removed, err := k.NFT.Remove()
	if removed || err != nil {
		k.writes++
	}
	return removed, err
}

// CheckPrivileges says plainly when the process cannot change networking.
func CheckPrivileges() error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil // cannot tell; let the kernel answer
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err == nil && caps&(1<<12) == 0 { // CAP_NET_ADMIN
				return errors.New("flowpin needs CAP_NET_ADMIN to read and change routing and nftables: run it as root (or with that capability)")
			}
		}
	}
	return nil
}

// Prepare loads the interfaces, plans, and checks the plan against state
// flowpin does not own. Nothing is written.
func (k *Kernel) Prepare(c *config.Config) (*plan.Desired, error) {
	// dns: auto's servers as their leases say now, read as the daemon
	// reads them, so apply, verify and the daemon plan the same routes.
	servers, from, errs := dnslease.Read(c)
	d, err := k.PrepareWith(c, plan.Options{DNS: servers})
	if err != nil {
		return nil, err
	}
	d.Warnings = append(d.Warnings, dnslease.Warnings(c, from, errs)...)
	return d, nil
}

// PrepareWith is Prepare with the daemon's plan options.
func (k *Kernel) PrepareWith(c *config.Config, o plan.Options) (*plan.Desired, error) {
	ifaces, err := k.Routes.Interfaces()
	if err != nil {
		return nil, err
	}
	d, err := plan.With(c, ifaces, o)
	if err != nil {
		return nil, err
	}
	if err := k.checkCollisions(c, d); err != nil {
		return nil, err
	}
	d.Warnings = append(d.Warnings, k.raWarnings(c, d)...)
	return d, nil
}

// raWarnings: with IPv6 forwarding on, the kernel ignores router
// advertisements on an interface unless its accept_ra is 2
// (Documentation/networking/ip-sysctl.rst, accept_ra), and gateway6: auto
// would never learn a next hop there.
// A point-to-point link needs no learned next hop.
func (k *Kernel) raWarnings(c *config.Config, d *plan.Desired) []string {
	var out []string
	for i, l := range c.Links {
		if !l.Gateway6Auto || i < len(d.Links) && d.Links[i].PointToPoint {
			continue
		}
		fwd, err1 := k.Routes.ReadSysctl("net/ipv6/conf/" + l.Interface + "/forwarding")
		ra, err2 := k.Routes.ReadSysctl("net/ipv6/conf/" + l.Interface + "/accept_ra")
		if err1 == nil && err2 == nil && fwd == "1" && ra != "2" {
			out = append(out, fmt.Sprintf("link %s: IPv6 forwarding is on and net.ipv6.conf.%s.accept_ra is %s, so the kernel ignores router advertisements there and gateway6: auto learns no gateway; set it to 2", l.Name, strings.ReplaceAll(l.Interface, ".", "/"), ra))
		}
	}
	return out
}

// checkCollisions refuses table ids and marks that someone else uses.
func (k *Kernel) checkCollisions(c *config.Config, d *plan.Desired) error {
	foreign, err := k.Routes.ForeignRules()
	if err != nil {
		return err
	}
	tables := d.Tables()
	tableErr := func(o plan.Table, format string, args ...any) error {
		if o.Link < 0 {
			// The balance table, or a policy's: the next free id above it.
			return c.FieldError("balance_table", format, args...)
		}
		return c.LinkError(o.Link, "table", format, args...)
	}
	// The field names a link's table and the balance table; a policy's
	// is named by its owner.
	name := func(o plan.Table) string {
		if o.Link < 0 && o.ID != c.BalanceTable {
			return o.String()
		}
		return fmt.Sprintf("table %d", o.ID)
	}
	ids := make([]int, len(tables))
	for i, o := range tables {
		ids[i] = o.ID
	}
	foreignRoutes, err := k.Routes.ForeignRoutes(ids)
	if err != nil {
		return err
	}
	for _, o := range tables {
		for _, fr := range foreign {
			if fr.Table == o.ID {
				return tableErr(o, "%s is already used by ip rule %q, which flowpin does not own", name(o), fr.Text)
			}
		}
		if routes := foreignRoutes[o.ID]; len(routes) > 0 {
			return tableErr(o, "%s already holds routes flowpin does not own (%s)", name(o), routes[0])
		}
	}
	for _, fr := range foreign {
		if fr.Mask&c.MarkMask == 0 {
			continue
		}
		if fr.Mark&fr.Mask&^c.MarkMask != 0 {
			// The rule wants mark bits outside flowpin's mask (WireGuard's
			// `not fwmark 0xca6c` with a full mask): it matches only
			// packets another program marked, and flowpin leaves their
			// marks alone.
			continue
		}
		for i, l := range c.Links {
			if (l.Mark^fr.Mark)&fr.Mask&c.MarkMask == 0 {
				return c.LinkError(i, "mark", "%#x collides with ip rule %q, which flowpin does not own", l.Mark, fr.Text)
			}
		}
		return c.FieldError("mark_mask", "%#x overlaps the mark bits of ip rule %q, which flowpin does not own", c.MarkMask, fr.Text)
	}
	return nil
}

// Change is one planned change, as the command that does it by hand.
type Change struct {
	Command string
	// script, if set, is the whole change for plan (Command is its
	// one-line summary for apply -v).
	script string
	undo   func() error
	do     func() error
}

// sysctlPlan works out the sysctl writes and the records of original
// values that go into the nft table.
type sysctlPlan struct {
	changes []Change
	records map[string]string // key -> value before flowpin
}

func (k *Kernel) planSysctls(d *plan.Desired, cur *nft.Current) (*sysctlPlan, error) {
	p := &sysctlPlan{records: map[string]string{}}
	for _, s := range cur.Records.Sysctls {
		p.records[s.Key] = s.Value
	}
	// Someone deleted the table, records and all (or a dump racing with
	// that returned a partial table): a long-lived Kernel (the daemon's)
	// still knows the values from before flowpin. What it knows is never
	// newer than the truth, so it fills every gap.
	for key, val := range k.records {
		if _, ok := p.records[key]; !ok {
			p.records[key] = val
		}
	}
	wanted := map[string]bool{}
	for _, s := range slices.Concat(d.Sysctls, d.LateSysctls) {
		wanted[s.Key] = true
	}
	// A value flowpin no longer wants (a link left the config) goes back
	// to what it was.
	for _, key := range slices.Sorted(maps.Keys(p.records)) {
		if wanted[key] {
			continue
		}
		orig := p.records[key]
		delete(p.records, key)
		now, err := k.Routes.ReadSysctl(key)
		if err != nil {
			continue // the interface is gone, and its settings with it
		}
		if now != orig {
			p.changes = append(p.changes, k.sysctlChange(key, orig, now))
		}
	}
	for _, s := range d.Sysctls {
		now, err := k.Routes.ReadSysctl(s.Key)
		if err != nil {
			return nil, err
		}
		if _, ok := p.records[s.Key]; !ok {
			p.records[s.Key] = now
		}
		if now != s.Value {
			p.changes = append(p.changes, k.sysctlChange(s.Key, s.Value, now))
		}
	}
	for _, s := range d.LateSysctls {
		if _, ok := p.records[s.Key]; ok {
			continue
		}
		now, err := k.Routes.ReadSysctl(s.Key)
		if err != nil {
			now = "0" // not loaded yet: the kernel default
		}
		p.records[s.Key] = now
	}
	return p, nil
}

func (k *Kernel) sysctlChange(key, to, from string) Change {
	s := rules.Sysctl{Key: key, Value: to}
	return Change{
		Command: s.Command(),
		do:      func() error { return k.writeSysctl(s) },
		undo:    func() error { return k.writeSysctl(rules.Sysctl{Key: key, Value: from}) },
	}
}

func (p *sysctlPlan) recordList() []nft.SysctlRecord {
	var out []nft.SysctlRecord
	for _, key := range slices.Sorted(maps.Keys(p.records)) {
		out = append(out, nft.SysctlRecord{Key: key, Value: p.records[key]})
	}
	return out
}

// Changes lists what Apply would do, in order, as commands.
func (k *Kernel) Changes(d *plan.Desired) ([]string, error) {
	st, err := k.steps(d)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range st.changes {
		if s.script != "" {
			out = append(out, s.script)
			continue
		}
		out = append(out, s.Command)
	}
	if ec, ok := k.NFT.(elementChecker); ok && !st.early {
		if err := ec.CheckElements(st.spec, st.cur); err != nil {
			return nil, err
		}
	}
	if !st.early && !st.spec.UpToDate(st.cur) {
		script, err := k.tableScript(st.spec, st.cur)
		if err != nil {
			return nil, err
		}
		out = append(out, nft.Script(script))
	}
	for _, s := range d.LateSysctls {
		if now, err := k.Routes.ReadSysctl(s.Key); err != nil || now != s.Value {
			out = append(out, s.Command())
		}
	}
	for _, m := range st.flush {
		out = append(out, flushCommand(m, d.NFT.Mask))
	}
	return out, nil
}

func flushCommand(mark, mask uint32) string {
	return fmt.Sprintf("conntrack -D --mark %#x/%#x", mark, mask)
}

// applySteps is everything Apply does, worked out before it writes.
type applySteps struct {
	cur *nft.Current
	// changes run in order and are undone newest first.
	changes []Change
	// spec is the table to write after them.
	spec nft.Spec
	// early: the table is written before the routing (a first apply).
	early bool
	// flush: marks of links that left the config or whose mark changed;
	// their flows are deleted once everything else is in place.
	flush []uint32
	// warnings go into the Result.
	warnings []string
}

// movedLayout says which links of d have a mark or table other than the
// one recorded. With ha they come from the config alone (turning ha on
// can move them) and no flow is deleted, so the live flows of a moved
// mark now route by whichever link has it: the operator must know.
func movedLayout(records []nft.LinkRecord, d *plan.Desired) []string {
	recs := map[string]nft.LinkRecord{}
	for _, r := range records {
		recs[r.Name] = r
	}
	var moved []string
	for _, l := range d.Links {
		r, ok := recs[l.Name]
		if !ok || r.Mark == l.Mark && r.Table == l.Table {
			continue
		}
		moved = append(moved, fmt.Sprintf("%s mark %#x -> %#x table %d -> %d", l.Name, r.Mark, l.Mark, r.Table, l.Table))
	}
	if len(moved) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("ha: links moved to the marks and tables of the config alone (%s); with ha no flow is deleted, so the flows that carry a moved mark now route by the link that has it, with their old NAT address, and break: restart them, or give the links explicit mark: and table: the same on both nodes", strings.Join(moved, ", "))}
}

func (k *Kernel) steps(d *plan.Desired) (*applySteps, error) {
	st := &applySteps{spec: d.NFT}
	cur, err := k.NFT.Read()
	if err != nil {
		return nil, err
	}
	st.cur = cur
	sp, err := k.planSysctls(d, cur)
	if err != nil {
		return nil, err
	}
	k.records = sp.records
	st.spec.Records = nft.Records{Sysctls: sp.recordList()}
	for _, l := range d.Links {
		st.spec.Records.Links = append(st.spec.Records.Links, nft.LinkRecord{Name: l.Name, Mark: l.Mark, Table: l.Table})
	}
	// An HA pair's flows come and go between the nodes through
	// conntrackd: a node deletes none of them on its own, or a takeover
	// could delete the flows it was meant to keep (README, "HA pair").
	if !d.HA {
		st.flush = staleMarks(cur.Records.Links, d)
	} else {
		st.warnings = movedLayout(cur.Records.Links, d)
	}
	owned, err := k.Routes.Owned()
	if err != nil {
		return nil, err
	}
	// The values from before flowpin go into the table before the first
	// sysctl changes: a process killed between the two must not lose
	// them, and a later apply must not take flowpin's own values for them.
	// The table keeps every record it has until the end of the apply (a
	// value flowpin no longer wants is put back only below).
	if len(sp.changes) > 0 {
		if early := earlyRecords(cur.Records, st.spec.Records); !cur.Exists || !early.Equal(cur.Records) {
			st.changes = append(st.changes, Change{
				Command: "nft -f - # records in table inet " + nft.TableName + " chain state",
				script:  nft.Script(nft.RenderRecords(early)),
				do: func() error {
					_, err := k.record(early)
					return err
				},
				undo: func() error {
					if !cur.Exists {
						_, err := k.removeTable()
						return err
					}
					_, err := k.record(cur.Records)
					return err
				},
			})
		}
	}
	st.changes = append(st.changes, sp.changes...)
	// The first apply writes the table before the routing: until its
	// chains mark them for main, the packets of flows from before apply
	// would take the balance route as soon as its rules exist, and a flow
	// moved to another link dies (its NAT binding, or a modem's, is on the
	// old one). The table's marks route nothing before the rules exist,
	// and the rules are added in priority order, main's before the
	// balance route's, so no packet is ever between the two.
	if !cur.Exists && d.NFT.Main != 0 {
		st.early = true
		st.changes = append(st.changes, Change{
			Command: "nft -f - # table inet " + nft.TableName,
			script:  nft.Script(st.spec.Render()),
			do: func() error {
				_, err := k.applyTable(st.spec)
				return err
			},
			undo: func() error {
				_, err := k.removeTable()
				return err
			},
		})
	}
	for _, op := range rules.Diff(owned, d.Routing) {
		op := op
		st.changes = append(st.changes, Change{
			Command: op.Command(),
			do:      func() error { return k.do(op) },
			undo:    func() error { return k.do(op.Inverse()) },
		})
	}
	return st, nil
}

// earlyRecords is the table's records plus every sysctl record of want
// that it lacks: what must be saved before any sysctl is written.
func earlyRecords(have, want nft.Records) nft.Records {
	keys := map[string]bool{}
	for _, s := range have.Sysctls {
		keys[s.Key] = true
	}
	out := have.Clone()
	for _, s := range want.Sysctls {
		if !keys[s.Key] {
			out.Sysctls = append(out.Sysctls, s)
		}
	}
	return out
}

// staleMarks lists the recorded marks that no link of d carries under
// the same name any more: the link left the config, or its mark changed.
func staleMarks(records []nft.LinkRecord, d *plan.Desired) []uint32 {
	now := map[string]uint32{}
	for _, l := range d.Links {
		now[l.Name] = l.Mark
	}
	var out []uint32
	// By name, the last record of a name counting, as for Assign.
	recs := map[string]nft.LinkRecord{}
	for _, r := range records {
		recs[r.Name] = r
	}
	for _, name := range slices.Sorted(maps.Keys(recs)) {
		m := recs[name].Mark
		if cur, ok := now[name]; ok && cur == m {
			continue
		}
		if m != 0 && m&^d.NFT.Mask == 0 && !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// Result is what Apply or Down did.
type Result struct {
	Commands []string
	Writes   int
	Warnings []string
	// Table: the nft table was written, so its rules' counters started
	// again from zero.
	Table bool
}

// Apply makes the kernel match d: sysctls, then routes and rules, then the
// nft table in one transaction. If any step fails, every step before it is
// undone, newest first, and the kernel is as it was.
func (k *Kernel) Apply(d *plan.Desired) (*Result, error) {
	start := k.Writes()
	res := &Result{Warnings: slices.Clone(d.Warnings)}
	st, err := k.steps(d)
	if err != nil {
		return nil, err
	}
	res.Warnings = append(res.Warnings, st.warnings...)
	var done []Change
	rollback := func(cause error) error {
		errs := []error{cause}
		for i := len(done) - 1; i >= 0; i-- {
			if err := done[i].undo(); err != nil {
				errs = append(errs, fmt.Errorf("roll back %q: %w", done[i].Command, err))
			}
		}
		return errors.Join(errs...)
	}
	for _, s := range st.changes {
		if err := s.do(); err != nil {
			return nil, rollback(err)
		}
		done = append(done, s)
		res.Commands = append(res.Commands, s.Command)
	}
	wrote, err := k.applyTable(st.spec)
	if err != nil {
		return nil, rollback(err)
	}
	if wrote {
		res.Commands = append(res.Commands, "nft -f - # table inet "+nft.TableName)
	}
	res.Table = wrote || st.early
	for _, s := range d.LateSysctls {
		now, err := k.Routes.ReadSysctl(s.Key)
		if err == nil && now == s.Value {
			continue
		}
		if err := k.writeSysctl(s); err != nil {
			res.Warnings = append(res.Warnings, err.Error())
			continue
		}
		res.Commands = append(res.Commands, s.Command())
	}
	// Only now that the new marks route: the flows of a link that is gone
	// would otherwise be restored onto a mark no rule (or the wrong one)
	// routes. Every other flow is left alone. Unlike a link judged down,
	// whose flows the daemon keeps when no other link can take them, a
	// link that left the config is gone for good: its flows cannot go on,
	// so they go even when nothing else is up, and fail at once rather
	// than hang. A failure here undoes nothing: the routing is right, and
	// the flows time out.
	for _, m := range st.flush {
		if k.Flows == nil {
			break
		}
		k.writes++
		if err := k.Flows.FlushMark(m, d.NFT.Mask); err != nil {
			res.Warnings = append(res.Warnings, err.Error())
			continue
		}
		res.Commands = append(res.Commands, flushCommand(m, d.NFT.Mask))
	}
	res.Writes = k.Writes() - start
	return res, nil
}

// Summary is apply's last line: how many links are in the multipath
// route that new flows take, per family, and the kernel writes. A link
// of a lower tier that is up is on standby, not in that route.
func Summary(d *plan.Desired, writes int) string {
	var has4, has6 int
	var standby []string
	in4, in6 := d.Multipath(false), d.Multipath(true)
	for i, l := range d.Links {
		if l.HasV4() {
			has4++
		}
		if l.HasV6() {
			has6++
		}
		if (l.InRoute && !slices.Contains(in4, i)) || (l.V6.InRoute && !slices.Contains(in6, i)) {
			standby = append(standby, l.Name)
		}
	}
	var counts string
	switch {
	case has6 == 0:
		counts = fmt.Sprintf("%d of %d links", len(in4), len(d.Links))
	case has4 == 0:
		counts = fmt.Sprintf("IPv6 %d of %d links", len(in6), has6)
	default:
		counts = fmt.Sprintf("IPv4 %d of %d links, IPv6 %d of %d links", len(in4), has4, len(in6), has6)
	}
	if len(standby) > 0 {
		return fmt.Sprintf("applied: %s in the multipath route (on standby in a lower tier: %s), %d kernel writes", counts, strings.Join(standby, ", "), writes)
	}
	return fmt.Sprintf("applied: %s in the multipath route, %d kernel writes", counts, writes)
}

// Down removes every rule, route and the table flowpin added, and puts the
// sysctls it changed back. Nothing found is not an error.
func (k *Kernel) Down() (*Result, error) {
	start := k.Writes()
	res := &Result{}
	var errs []error
	cur, err := k.NFT.Read()
	if err != nil {
		return nil, err
	}
	owned, err := k.Routes.Owned()
	if err != nil {
		return nil, err
	}
	// Rules first, so nothing points at a table while it empties.
	for _, op := range rules.Diff(owned, rules.State{}) {
		if err := k.do(op); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Commands = append(res.Commands, op.Command())
	}
	// Sysctls next, and the table with their records last: a down killed
	// half way must leave the records for the next down.
	sysctlErrs := len(errs)
	for _, rec := range cur.Records.Sysctls {
		now, err := k.Routes.ReadSysctl(rec.Key)
		if err != nil || now == rec.Value {
			continue
		}
		s := rules.Sysctl{Key: rec.Key, Value: rec.Value}
		if err := k.writeSysctl(s); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Commands = append(res.Commands, s.Command())
	}
	if len(errs) > sysctlErrs {
		// Keep the table, and the values still to put back, for a retry.
		res.Writes = k.Writes() - start
		return res, errors.Join(errs...)
	}
	removed, err := k.removeTable()
	if err != nil {
		errs = append(errs, err)
	} else if removed {
		res.Commands = append(res.Commands, "nft delete table inet "+nft.TableName)
	}
	res.Writes = k.Writes() - start
	return res, errors.Join(errs...)
}
