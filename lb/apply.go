package lb

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"flowpin/nft"
	"flowpin/rules"
)

// Kernel bundles the two handles on the network namespace flowpin runs in.
type Kernel struct {
	Routes *rules.Kernel
	NFT    *nft.Conn
	// Fault, when set, makes Apply fail at that step ("routes" after its
	// first routing change, "nft" before the table is written). It exists
	// so tests can prove the rollback on the real kernel; the CLI sets it
	// from FLOWPIN_INJECT_FAULT.
	Fault string

	// records are the pre-flowpin sysctl values last written to the table.
	records map[string]string
}

// OpenKernel opens handles on the caller's network namespace.
func OpenKernel() (*Kernel, error) {
	rk, err := rules.Open()
	if err != nil {
		return nil, err
	}
	return &Kernel{Routes: rk, NFT: &nft.Conn{}, Fault: os.Getenv("FLOWPIN_INJECT_FAULT")}, nil
}

// Close releases the handles.
func (k *Kernel) Close() { k.Routes.Close() }

// Writes is the number of kernel writes made so far.
func (k *Kernel) Writes() int { return k.Routes.Writes + k.NFT.Writes }

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
func (k *Kernel) Prepare(c *Config) (*Desired, error) {
	return k.PrepareWith(c, PlanOptions{})
}

// PrepareWith is Prepare with the daemon's plan options.
func (k *Kernel) PrepareWith(c *Config, o PlanOptions) (*Desired, error) {
	ifaces, err := k.Routes.Interfaces()
	if err != nil {
		return nil, err
	}
	d, err := PlanWith(c, ifaces, o)
	if err != nil {
		return nil, err
	}
	if err := k.checkCollisions(c, d); err != nil {
		return nil, err
	}
	return d, nil
}

// checkCollisions refuses table ids and marks that someone else uses.
func (k *Kernel) checkCollisions(c *Config, d *Desired) error {
	_, foreign, err := k.Routes.ReadRules()
	if err != nil {
		return err
	}
	type owner struct {
		link  int // -1: balance table
		table int
	}
	tables := []owner{{-1, c.BalanceTable}}
	for i, l := range c.Links {
		tables = append(tables, owner{i, l.Table})
	}
	tableErr := func(o owner, format string, args ...any) error {
		if o.link < 0 {
			return c.FieldError("balance_table", format, args...)
		}
		return c.LinkError(o.link, "table", format, args...)
	}
	ids := make([]int, len(tables))
	for i, o := range tables {
		ids[i] = o.table
	}
	foreignRoutes, err := k.Routes.ForeignRoutes(ids)
	if err != nil {
		return err
	}
	for _, o := range tables {
		for _, fr := range foreign {
			if fr.Table == o.table {
				return tableErr(o, "table %d is already used by ip rule %q, which flowpin does not own", o.table, fr.Text)
			}
		}
		if routes := foreignRoutes[o.table]; len(routes) > 0 {
			return tableErr(o, "table %d already holds routes flowpin does not own (%s)", o.table, routes[0])
		}
	}
	for _, fr := range foreign {
		if fr.Mask&c.MarkMask == 0 {
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
	undo    func() error
	do      func() error
}

// sysctlPlan works out the sysctl writes and the records of original
// values that go into the nft table.
type sysctlPlan struct {
	changes []Change
	records map[string]string // key -> value before flowpin
}

func (k *Kernel) planSysctls(d *Desired, cur *nft.Current) (*sysctlPlan, error) {
	p := &sysctlPlan{records: map[string]string{}}
	for _, rec := range cur.Records {
		kv, ok := strings.CutPrefix(rec, nft.RecordPrefix)
		if !ok {
			continue
		}
		if key, val, ok := strings.Cut(kv, "="); ok {
			p.records[key] = val
		}
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
		do:      func() error { return k.Routes.WriteSysctl(s) },
		undo:    func() error { return k.Routes.WriteSysctl(rules.Sysctl{Key: key, Value: from}) },
	}
}

func (p *sysctlPlan) recordList() []string {
	var out []string
	for _, key := range slices.Sorted(maps.Keys(p.records)) {
		out = append(out, fmt.Sprintf("%s%s=%s", nft.RecordPrefix, key, p.records[key]))
	}
	return out
}

// Changes lists what Apply would do, in order, as commands.
func (k *Kernel) Changes(d *Desired) ([]string, error) {
	steps, spec, err := k.steps(d)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range steps {
		out = append(out, s.Command)
	}
	cur, err := k.NFT.Read()
	if err != nil {
		return nil, err
	}
	if !spec.UpToDate(cur) {
		out = append(out, "nft -f - <<'EOF'\n"+spec.Render()+"EOF")
	}
	for _, s := range d.LateSysctls {
		if now, err := k.Routes.ReadSysctl(s.Key); err != nil || now != s.Value {
			out = append(out, s.Command())
		}
	}
	return out, nil
}

// FullScript is the whole desired state as commands for an empty
// namespace: what an operator would type by hand.
func FullScript(d *Desired) []string {
	var out []string
	for _, s := range d.Sysctls {
		out = append(out, s.Command())
	}
	for _, op := range rules.Diff(rules.State{}, d.Routing) {
		out = append(out, op.Command())
	}
	out = append(out, "nft -f - <<'EOF'\n"+d.NFT.Render()+"EOF")
	for _, s := range d.LateSysctls {
		out = append(out, s.Command())
	}
	return out
}

func (k *Kernel) steps(d *Desired) ([]Change, nft.Spec, error) {
	spec := d.NFT
	cur, err := k.NFT.Read()
	if err != nil {
		return nil, spec, err
	}
	sp, err := k.planSysctls(d, cur)
	if err != nil {
		return nil, spec, err
	}
	spec.Records = sp.recordList()
	k.records = sp.records
	owned, err := k.Routes.Owned()
	if err != nil {
		return nil, spec, err
	}
	steps := sp.changes
	for _, op := range rules.Diff(owned, d.Routing) {
		op := op
		steps = append(steps, Change{
			Command: op.Command(),
			do:      func() error { return k.Routes.Do(op) },
			undo:    func() error { return k.Routes.Do(op.Inverse()) },
		})
	}
	return steps, spec, nil
}

// Result is what Apply or Down did.
type Result struct {
	Commands []string
	Writes   int
	Warnings []string
}

// Apply makes the kernel match d: sysctls, then routes and rules, then the
// nft table in one transaction. If any step fails, every step before it is
// undone, newest first, and the kernel is as it was.
func (k *Kernel) Apply(d *Desired) (*Result, error) {
	start := k.Writes()
	res := &Result{Warnings: slices.Clone(d.Warnings)}
	steps, spec, err := k.steps(d)
	if err != nil {
		return nil, err
	}
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
	for i, s := range steps {
		if err := s.do(); err != nil {
			return nil, rollback(err)
		}
		done = append(done, s)
		res.Commands = append(res.Commands, s.Command)
		if k.Fault == "routes" && i == len(steps)-1 {
			return nil, rollback(errors.New("injected fault after the routing changes"))
		}
	}
	if k.Fault == "nft" {
		return nil, rollback(errors.New("injected fault before the nft table"))
	}
	wrote, err := k.NFT.Apply(spec)
	if err != nil {
		return nil, rollback(err)
	}
	if wrote {
		res.Commands = append(res.Commands, "nft -f - # table inet "+nft.TableName)
	}
	for _, s := range d.LateSysctls {
		now, err := k.Routes.ReadSysctl(s.Key)
		if err == nil && now == s.Value {
			continue
		}
		if err := k.Routes.WriteSysctl(s); err != nil {
			res.Warnings = append(res.Warnings, err.Error())
			continue
		}
		res.Commands = append(res.Commands, s.Command())
	}
	res.Writes = k.Writes() - start
	return res, nil
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
		if err := k.Routes.Do(op); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Commands = append(res.Commands, op.Command())
	}
	removed, err := k.NFT.Remove()
	if err != nil {
		errs = append(errs, err)
	} else if removed {
		res.Commands = append(res.Commands, "nft delete table inet "+nft.TableName)
	}
	for _, rec := range cur.Records {
		kv, ok := strings.CutPrefix(rec, nft.RecordPrefix)
		if !ok {
			continue
		}
		key, val, _ := strings.Cut(kv, "=")
		now, err := k.Routes.ReadSysctl(key)
		if err != nil || now == val {
			continue
		}
		s := rules.Sysctl{Key: key, Value: val}
		if err := k.Routes.WriteSysctl(s); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Commands = append(res.Commands, s.Command())
	}
	res.Writes = k.Writes() - start
	return res, errors.Join(errs...)
}
