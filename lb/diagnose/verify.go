// Package diagnose is `flowpin verify` and `flowpin explain`: it checks
// the kernel against the plan, and walks one packet through conntrack, the
// nft table, the ip rules and the routes, asking the kernel at each step.
package diagnose

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/clock"
	"flowpin/lb/config"
	"flowpin/lb/dnslease"
	"flowpin/lb/plan"
	"flowpin/lb/status"
	"flowpin/nft"
	"flowpin/nft/ct"
	"flowpin/rules"
)

// Routing is what verify and explain read of netlink and /proc/sys.
type Routing interface {
	Interfaces() (map[string]rules.Iface, error)
	Owned() (rules.State, error)
	ForeignRoutes(tables []int) (map[int][]string, error)
	ListRules(family int) ([]rules.RuleInfo, error)
	RouteGet(rules.Query) (rules.Answer, error)
	Neighbour(dev string, ip netip.Addr) (rules.Neighbour, error)
	ReadSysctl(key string) (string, error)
}

// Tables is what they read of nftables.
type Tables interface {
	Read() (*nft.Current, error)
	ForeignMarkWriters(mask uint32) ([]nft.MarkWriter, error)
	// StuckTo says the mark of the link a sticky map holds for an
	// address (0: none), and for how much longer.
	StuckTo(m string, a netip.Addr) (uint32, time.Duration, error)
}

// Flows is what explain asks of conntrack.
type Flows interface {
	Lookup(ct.Tuple) (*ct.Flow, error)
}

var (
	_ Routing = (*rules.Kernel)(nil)
	_ Tables  = (*nft.Conn)(nil)
	_ Flows   = (*ct.Conntrack)(nil)
)

// Kernel is the namespace verify and explain look at.
type Kernel struct {
	Routes Routing
	NFT    Tables
	CT     Flows
	// ProbeGateway sends one packet towards gw out of dev, so that the
	// kernel resolves its neighbour entry. Nil: a UDP datagram to gw's
	// discard port (9).
	ProbeGateway func(dev string, gw netip.Addr) error
	// Clock times the wait for a probed gateway's answer. Nil: the wall
	// clock.
	Clock clock.Clock
	// SyncDaemons are the pids of the conntrackd processes in this
	// network namespace (ct.SyncDaemons). Nil: not checked.
	SyncDaemons func() ([]int, error)
}

func (k *Kernel) clock() clock.Clock {
	if k.Clock == nil {
		return clock.Real{}
	}
	return k.Clock
}

// VerifyCheck is one line of `flowpin verify`.
type VerifyCheck struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Skip   bool   `json:"skipped,omitempty"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// VerifyReport is every check verify ran.
type VerifyReport struct {
	Checks []VerifyCheck `json:"checks"`
}

// Failed counts the checks that failed.
func (r *VerifyReport) Failed() int {
	n := 0
	for _, c := range r.Checks {
		if !c.OK && !c.Skip {
			n++
		}
	}
	return n
}

func (r *VerifyReport) pass(name, format string, args ...any) {
	r.Checks = append(r.Checks, VerifyCheck{Name: name, OK: true, Detail: fmt.Sprintf(format, args...)})
}

func (r *VerifyReport) fail(name, fix, format string, args ...any) {
	r.Checks = append(r.Checks, VerifyCheck{Name: name, Detail: fmt.Sprintf(format, args...), Fix: fix})
}

func (r *VerifyReport) skip(name, format string, args ...any) {
	r.Checks = append(r.Checks, VerifyCheck{Name: name, Skip: true, Detail: fmt.Sprintf(format, args...)})
}

// VerifyOptions tune verify. The zero value is fine.
type VerifyOptions struct {
	// Probe is the destination the route lookups ask about: some address
	// beyond the uplinks. Nothing is sent to it. Default 198.18.0.1
	// (RFC 2544 benchmarking range, unlikely to have a route of its own).
	Probe netip.Addr
	// Probe6 is Probe for IPv6. Default 2001:2::1 (RFC 5180 benchmarking
	// range).
	Probe6 netip.Addr
	// Samples: how many source ports the spread check tries at most.
	Samples int
	// NoProbe: do not send a packet to a gateway without a neighbour entry.
	NoProbe bool
	// ProbeWait: how long to wait for a probed gateway's ARP answer.
	// Default 1.5 s.
	ProbeWait time.Duration
	// Peer, if set, reads the status of the other node of an HA pair
	// (ha.go).
	Peer func() (*status.Status, error)
	// Daemon is what `flowpin run` of this namespace last applied beyond
	// the config; nil: no daemon runs here. Verify then plans as the
	// daemon did: a link its checks, an operator or a quota took out of a
	// multipath route is no drift, and neither are the IPv6 prefixes it
	// holds for a link that is down.
	Daemon *DaemonIntent
}

// DaemonIntent is what the daemon planned with beyond the config: the
// links out of the IPv4 and IPv6 multipath routes, with why, and the
// prefixes held for a link that is down (plan.Options).
type DaemonIntent struct {
	Down, Down6 map[string]string
	Held6       []netip.Prefix
}

// gatewayChecksAtOnce bounds the gateway checks that run at the same time:
// each may wait ProbeWait for an ARP answer, so 64 dead gateways take four
// waits, not 64, while a host with hundreds of links sends no burst.
const gatewayChecksAtOnce = 16

// DefaultProbe and DefaultProbe6 are the destinations of verify's route
// lookups.
var (
	DefaultProbe  = netip.MustParseAddr("198.18.0.1")
	DefaultProbe6 = netip.MustParseAddr("2001:2::1")
)

const applyFix = "flowpin apply"

// daemonFix replaces applyFix where a daemon runs: apply refuses beside
// it, and a reload makes it plan and apply again at once.
const daemonFix = "flowpin reload"

// Verify compares the kernel with what c asks for and asks the kernel how
// it routes each link's traffic and new flows (route lookups, as `ip route
// get` makes them). It returns an error only when it cannot check at all;
// problems are failed checks.
func (k *Kernel) Verify(c *config.Config, o VerifyOptions) (*VerifyReport, error) {
	if !o.Probe.IsValid() {
		o.Probe = DefaultProbe
	}
	if !o.Probe6.IsValid() {
		o.Probe6 = DefaultProbe6
	}
	if o.Samples <= 0 {
		o.Samples = 1024
	}
	if o.ProbeWait <= 0 {
		o.ProbeWait = 1500 * time.Millisecond
	}
	ifaces, err := k.Routes.Interfaces()
	if err != nil {
		return nil, err
	}
	leases, _, _ := dnslease.Read(c)
	po := plan.Options{DNS: leases}
	if in := o.Daemon; in != nil {
		// As the daemon plans: an interface missing between two PPP
		// sessions leaves its link unusable, not verify failed.
		po.Down, po.Down6, po.Held6, po.MissingOK = in.Down, in.Down6, in.Held6, true
	}
	d, err := plan.With(c, ifaces, po)
	if err != nil {
		return nil, err
	}
	r := &VerifyReport{}
	if o.Daemon != nil {
		r.pass("daemon", "%s", daemonOuts(c, o.Daemon))
	}
	for _, w := range d.Warnings {
		r.skip("plan", "%s", w)
	}
	defer func() {
		if o.Daemon == nil {
			return
		}
		for i, ch := range r.Checks {
			if rest, ok := strings.CutPrefix(ch.Fix, applyFix); ok {
				r.Checks[i].Fix = daemonFix + rest
			}
		}
	}()
	if err := k.verifyRouting(r, c, d); err != nil {
		return nil, err
	}
	if err := k.verifyNFT(r, d); err != nil {
		return nil, err
	}
	if err := k.verifySets(r, c, d.NFT); err != nil {
		return nil, err
	}
	if err := k.verifyHA(r, c, d, o); err != nil {
		return nil, err
	}
	k.verifySysctls(r, d)
	all, err := k.Routes.ListRules(rules.V4)
	if err != nil {
		return nil, err
	}
	r.Checks = append(r.Checks, ShadowChecks(c, d, all)...)
	writers, err := k.NFT.ForeignMarkWriters(c.MarkMask)
	if err != nil {
		return nil, err
	}
	r.Checks = append(r.Checks, MarkWriterChecks(c, writers)...)
	if slices.ContainsFunc(d.Links, func(l plan.LinkPlan) bool { return l.HasV4() }) {
		k.verifyLinks(r, d, all, o)
		k.verifyPolicies(r, d, o)
		k.verifySpread(r, d, o)
	}
	if slices.ContainsFunc(d.Links, func(l plan.LinkPlan) bool { return l.HasV6() }) {
		all6, err := k.Routes.ListRules(rules.V6)
		if err != nil {
			return nil, err
		}
		d6, o6 := asV6(d, true), o
		o6.Probe = o.Probe6
		k.verifyLinks(r, d6, all6, o6)
		k.verifyPolicies(r, d6, o6)
		k.verifySpread(r, d6, o6)
		k.verifyPrefixes6(r, d, ifaces, all6, o)
	}
	return r, nil
}

// daemonOuts says which links the running daemon took out of the
// multipath routes, in config order, so that the report tells the checks
// after it why those links take no new flows.
func daemonOuts(c *config.Config, in *DaemonIntent) string {
	var outs []string
	for _, l := range c.Links {
		if why, ok := in.Down[l.Name]; ok {
			outs = append(outs, fmt.Sprintf("%s out of the IPv4 multipath route (%s)", l.Name, why))
		}
		if why, ok := in.Down6[l.Name]; ok {
			outs = append(outs, fmt.Sprintf("%s out of the IPv6 multipath route (%s)", l.Name, why))
		}
	}
	if len(outs) == 0 {
		return "flowpin run runs here and has every usable link in the multipath routes; checked against its plan"
	}
	return "flowpin run runs here; checked against its plan: " + strings.Join(outs, "; ")
}

// asV6 is d seen through the links' IPv6 sides, so that the per-link,
// per-policy and spread checks (and explain) run on it unchanged; with
// rename, names say IPv6.
func asV6(d *plan.Desired, rename bool) *plan.Desired {
	d6 := *d
	d6.Links = nil
	for _, l := range d.Links {
		if l.HasV6() {
			l.Usable, l.InRoute, l.Addr, l.Gateway, l.Why = l.V6.Usable, l.V6.InRoute, l.V6.Addr, l.V6.Gateway, l.V6.Why
			// A point-to-point link stays one: its IPv6 table's route is
			// device-only as its IPv4 one (Via6), with no neighbour to
			// resolve.
		} else {
			l.Usable, l.InRoute, l.Why = false, false, "no IPv6 on this link (no gateway6)"
		}
		if rename {
			l.Name += " (IPv6)"
		}
		d6.Links = append(d6.Links, l)
	}
	d6.Policies = nil
	for _, p := range d.Policies {
		p.Active = p.Active6
		if rename {
			p.Name += " (IPv6)"
		}
		d6.Policies = append(d6.Policies, p)
	}
	return &d6
}

// verifyPolicies asks the kernel where each policy's new flows go: the
// mark its traffic rules set must route by a link of its active tier, or,
// with no tier up, meet its last resort.
func (k *Kernel) verifyPolicies(r *VerifyReport, d *plan.Desired, o VerifyOptions) {
	if len(d.Policies) == 1 && len(d.Rules) == 0 {
		return // the default policy alone: the spread check covers it
	}
	for _, p := range d.Policies {
		name := "policy " + p.Name
		q := rules.Query{Dst: o.Probe, Mark: p.Mark}
		ans, err := k.Routes.RouteGet(q)
		active := p.ActiveLinks(d.Links)
		if len(active) == 0 {
			switch {
			case p.LastResort == config.LastMain && err == nil:
				r.pass(name, "no link of any tier is up: main routes its flows, by %s (ip route get %s)", orNone(ans.Dev), q.Args())
			case p.LastResort != config.LastMain && err != nil:
				r.pass(name, "no link of any tier is up: last resort %s (ip route get %s: %v)", p.LastResort, q.Args(), err)
			default:
				r.fail(name, applyFix, "no link of any tier is up and the last resort is %s, but ip route get %s gives %s (%v)", p.LastResort, q.Args(), orNone(ans.Dev), err)
			}
			continue
		}
		var devs []string
		for _, i := range active {
			devs = append(devs, d.Links[i].Interface)
		}
		if err != nil {
			r.fail(name, applyFix, "tier %d (%s) is up but ip route get %s fails: %v", p.Active+1, strings.Join(devs, ", "), q.Args(), err)
			continue
		}
		if !slices.Contains(devs, ans.Dev) {
			r.fail(name, applyFix, "new flows leave by %s, want tier %d (%s) (ip route get %s)", orNone(ans.Dev), p.Active+1, strings.Join(devs, ", "), q.Args())
			continue
		}
		r.pass(name, "tier %d is active: new flows leave by %s (ip route get %s)", p.Active+1, ans.Dev, q.Args())
	}
}

// DriftChecks turns the difference between what flowpin owns in the kernel
// and what it plans into checks, in plan's words.
func DriftChecks(owned, want rules.State) []VerifyCheck {
	var out []VerifyCheck
	for _, op := range rules.Diff(owned, want) {
		ch := VerifyCheck{Fix: applyFix}
		switch {
		case op.Kind == rules.AddRule:
			ch.Name = fmt.Sprintf("rule %d", op.Rule.Priority)
			ch.Detail = "missing: " + op.Rule.Command("add")
		case op.Kind == rules.DelRule:
			ch.Name = fmt.Sprintf("rule %d", op.Rule.Priority)
			ch.Detail = "unexpected: " + op.Rule.Command("add") + " (flowpin's tag, not in the plan)"
		case op.Kind == rules.ReplaceRoute && op.Old == nil:
			ch.Name = "route " + op.Route.Key()
			ch.Detail = "missing: " + op.Route.Command("replace")
		case op.Kind == rules.ReplaceRoute:
			ch.Name = "route " + op.Route.Key()
			ch.Detail = fmt.Sprintf("differs: have %s, want %s", op.Old.Command("replace"), op.Route.Command("replace"))
		default:
			ch.Name = "route " + op.Route.Key()
			ch.Detail = "unexpected: " + op.Route.Command("replace") + " (flowpin's tag, not in the plan)"
		}
		out = append(out, ch)
	}
	return out
}

func (k *Kernel) verifyRouting(r *VerifyReport, c *config.Config, d *plan.Desired) error {
	owned, err := k.Routes.Owned()
	if err != nil {
		return err
	}
	drift := DriftChecks(owned, d.Routing)
	if len(drift) == 0 {
		r.pass("routing", "%d ip rules and %d routes as planned", len(d.Routing.Rules), len(d.Routing.Routes))
	}
	r.Checks = append(r.Checks, drift...)
	tables := d.Tables()
	ids := make([]int, len(tables))
	for i, t := range tables {
		ids[i] = t.ID
	}
	foreign, err := k.Routes.ForeignRoutes(ids)
	if err != nil {
		return err
	}
	for _, t := range tables {
		for _, f := range foreign[t.ID] {
			r.fail(t.String(), fmt.Sprintf("ip route del %s, or give flowpin another table id", f),
				"holds a route flowpin does not own: %s", f)
		}
	}
	return nil
}

// NFTChecks compares the table found with the one planned, rule by rule
// (by the comments that name them), in nft's words. The "state" chain
// holds records, not packet rules.
func NFTChecks(s nft.Spec, cur *nft.Current) []VerifyCheck {
	const fix = applyFix
	if !cur.Exists {
		return []VerifyCheck{{Name: "nft table", Detail: "missing: table inet " + nft.TableName, Fix: fix}}
	}
	var out []VerifyCheck
	want := map[string][]nft.PlannedRule{}
	for _, name := range s.ChainNames() {
		want[name] = nil
	}
	for _, r := range s.Planned() {
		want[r.Chain] = append(want[r.Chain], r)
	}
	names := slices.Sorted(maps.Keys(want))
	for _, name := range names {
		if name == "state" {
			continue
		}
		have, ok := cur.Chains[name]
		if !ok {
			out = append(out, VerifyCheck{Name: "nft chain " + name, Detail: fmt.Sprintf("missing: chain inet %s %s", nft.TableName, name), Fix: fix})
			continue
		}
		wantOrder := make([]string, 0, len(want[name]))
		for _, w := range want[name] {
			wantOrder = append(wantOrder, w.Comment)
			if !slices.Contains(have, w.Comment) {
				out = append(out, VerifyCheck{Name: "nft chain " + name,
					Detail: fmt.Sprintf("missing: nft add rule inet %s %s %s comment %q", nft.TableName, name, w.Text, w.Comment), Fix: fix})
			}
		}
		for _, h := range have {
			if !slices.Contains(wantOrder, h) {
				out = append(out, VerifyCheck{Name: "nft chain " + name, Detail: fmt.Sprintf("unexpected: rule with comment %q", h), Fix: fix})
			}
		}
		if len(out) == 0 && !slices.Equal(have, wantOrder) {
			out = append(out, VerifyCheck{Name: "nft chain " + name, Detail: "rules in another order than planned", Fix: fix})
		}
	}
	for name := range cur.Chains {
		if _, ok := want[name]; !ok {
			out = append(out, VerifyCheck{Name: "nft chain " + name, Detail: fmt.Sprintf("unexpected: chain inet %s %s", nft.TableName, name), Fix: fix})
		}
	}
	return out
}

func (k *Kernel) verifyNFT(r *VerifyReport, d *plan.Desired) error {
	cur, err := k.NFT.Read()
	if err != nil {
		return err
	}
	checks := NFTChecks(d.NFT, cur)
	if len(checks) == 0 {
		// Every rule matches: what is left is the chains' types and hooks.
		// Records are bookkeeping (sysctl values before flowpin), not
		// packet rules: take them as found.
		if !d.NFT.UpToDateExceptRecords(cur) {
			checks = append(checks, VerifyCheck{Name: "nft table", Detail: "a chain's type, hook or priority differs from the plan", Fix: applyFix})
		}
	}
	if len(checks) == 0 {
		n := 0
		for name, cm := range cur.Chains {
			if name != "state" {
				n += len(cm)
			}
		}
		r.pass("nft table", "table inet %s as planned (%d rules)", nft.TableName, n)
	}
	r.Checks = append(r.Checks, checks...)
	return nil
}

// sysctlWhy says what goes wrong when a planned value is not there.
func sysctlWhy(key string) string {
	switch {
	case strings.HasSuffix(key, "/rp_filter"):
		return "strict reverse-path filtering drops replies of flows a mark routes by a link main would not pick"
	case strings.HasSuffix(key, "fib_multipath_hash_policy"), strings.HasSuffix(key, "fib_multipath_hash_fields"):
		return "new flows between the same two hosts would not spread over the links by 5-tuple"
	case strings.HasSuffix(key, "fib_multipath_use_neigh"):
		return "new flows would still go to a gateway whose neighbour entry is known dead"
	case strings.HasSuffix(key, "/arp_ignore"), strings.HasSuffix(key, "/arp_announce"):
		return "two interfaces on one subnet answer ARP for each other's address"
	case strings.HasSuffix(key, "nf_conntrack_acct"):
		return "flowpin status cannot count bytes per link"
	case strings.HasSuffix(key, "nf_conntrack_events"):
		return "the daemon's flow counts miss the end of flows that began while no daemon listened"
	}
	return "flowpin plans this value"
}

func (k *Kernel) verifySysctls(r *VerifyReport, d *plan.Desired) {
	for _, s := range slices.Concat(d.Sysctls, d.LateSysctls) {
		name := "sysctl " + s.Name()
		now, err := k.Routes.ReadSysctl(s.Key)
		switch {
		case err != nil:
			r.fail(name, applyFix, "cannot read: %v", err)
		case now != s.Value:
			r.fail(name, applyFix+" (or: "+s.Command()+")", "is %s, want %s: %s", now, s.Value, sysctlWhy(s.Key))
		default:
			r.pass(name, "%s", s.Value)
		}
	}
}

// ShadowChecks finds foreign ip rules placed before flowpin's last rule
// that catch the traffic flowpin's rules are meant to route. A rule with a
// narrow selector (a destination, an interface, a protocol, a uid, another
// program's mark bits) is someone's deliberate exception and passes.
func ShadowChecks(c *config.Config, d *plan.Desired, all []rules.RuleInfo) []VerifyCheck {
	first, last := c.PriorityBase, c.PriorityBase+config.RulePrioritySpan
	var linkAddrs []netip.Addr
	for _, l := range d.Links {
		if l.Addr.IsValid() {
			linkAddrs = append(linkAddrs, l.Addr.Addr())
		}
	}
	var out []VerifyCheck
	var narrow []string
	for _, r := range all {
		if r.Owned() || r.Priority >= last {
			continue
		}
		// The kernel's own rule 0 (lookup local) must come first.
		if r.Priority == 0 && r.Action == rules.ActionToTable && r.Table == unix.RT_TABLE_LOCAL {
			continue
		}
		text := strings.ReplaceAll(r.String(), "\t", " ")
		if r.Mask != 0 && r.Mask&c.MarkMask != 0 {
			out = append(out, VerifyCheck{Name: fmt.Sprintf("foreign rule %d", r.Priority),
				Detail: fmt.Sprintf("%q selects on mark bits %#x that flowpin owns (mark_mask %#x)", text, r.Mask&c.MarkMask, c.MarkMask),
				Fix:    fmt.Sprintf("ip rule del pref %d, or change mark_mask", r.Priority)})
			continue
		}
		broad := !r.Dst.IsValid() || r.Dst.Bits() == 0
		broad = broad && r.Iif == "" && r.Oif == "" && r.UID == nil && r.IPProto == 0 &&
			r.Sport == [2]uint16{} && r.Dport == [2]uint16{} && r.Tos == 0 && !r.L3mdev && r.Mask == 0
		if broad && r.Src.IsValid() && r.Src.Bits() > 0 {
			broad = slices.ContainsFunc(linkAddrs, r.Src.Contains)
		}
		// An inverted selector matches nearly everything; a nop rule
		// does nothing.
		broad = (broad || r.Invert) && r.Action != rules.ActionNop
		if !broad {
			narrow = append(narrow, fmt.Sprint(r.Priority))
			continue
		}
		where := fmt.Sprintf("before flowpin's rules (%d-%d)", first, last)
		if r.Priority > first {
			where = fmt.Sprintf("among flowpin's rules (%d-%d)", first, last)
		}
		what := "catches their traffic"
		if r.Action == rules.ActionToTable && r.SuppressPrefixlen >= 0 {
			what = "catches their traffic to every route more specific than /" + fmt.Sprint(r.SuppressPrefixlen) + " (a link's own subnet then leaves by whichever interface main picks)"
		}
		out = append(out, VerifyCheck{
			Name:   fmt.Sprintf("foreign rule %d", r.Priority),
			Detail: fmt.Sprintf("%q (not flowpin's) comes %s and %s", text, where, what),
			Fix:    fmt.Sprintf("ip rule del pref %d, or narrow its selector, or move it after %d", r.Priority, last),
		})
	}
	if len(out) == 0 {
		detail := fmt.Sprintf("no foreign ip rule before %d catches flowpin's traffic", last)
		if len(narrow) > 0 {
			detail += " (narrow rules left alone: " + strings.Join(narrow, ", ") + ")"
		}
		out = append(out, VerifyCheck{Name: "shadowing", OK: true, Detail: detail})
	}
	return out
}

// MarkWriterChecks reports foreign nft rules that write flowpin's mark bits.
func MarkWriterChecks(c *config.Config, ws []nft.MarkWriter) []VerifyCheck {
	if len(ws) == 0 {
		return []VerifyCheck{{Name: "foreign nft", OK: true, Detail: fmt.Sprintf("no rule outside table inet %s writes mark bits %#x", nft.TableName, c.MarkMask)}}
	}
	var out []VerifyCheck
	for _, w := range ws {
		out = append(out, VerifyCheck{
			Name:   "foreign nft rule",
			Detail: fmt.Sprintf("%s sets %s bits %#x, inside flowpin's mark_mask %#x: pinned flows lose or change their link", w.Where(), w.What, w.Bits&c.MarkMask, c.MarkMask),
			Fix:    fmt.Sprintf("%s, or make it keep bits %#x (e.g. meta mark set meta mark & %#x | VALUE)", w.DeleteCommand(), c.MarkMask, ^c.MarkMask),
		})
	}
	return out
}

// verifyLinks checks each usable link's routes, then its gateway. The
// gateway checks run in parallel (they may wait for ARP); the report keeps
// link order.
func (k *Kernel) verifyLinks(r *VerifyReport, d *plan.Desired, all []rules.RuleInfo, o VerifyOptions) {
	routes := make([]VerifyReport, len(d.Links))
	gateways := make([]VerifyReport, len(d.Links))
	sem := make(chan struct{}, gatewayChecksAtOnce)
	var wg sync.WaitGroup
	for i, l := range d.Links {
		if !l.Usable {
			routes[i].skip("link "+l.Name, "not in use: %s", l.Why)
			continue
		}
		k.verifyLinkRoutes(&routes[i], l, all, o)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			k.verifyGateway(&gateways[i], l, o)
		}()
	}
	wg.Wait()
	for i := range d.Links {
		r.Checks = append(r.Checks, routes[i].Checks...)
		r.Checks = append(r.Checks, gateways[i].Checks...)
	}
}

// verifyLinkRoutes checks that the link's address and its mark both route
// out of the link to its gateway, and names the rule that sends them
// elsewhere when not.
func (k *Kernel) verifyLinkRoutes(r *VerifyReport, l plan.LinkPlan, all []rules.RuleInfo, o VerifyOptions) {
	name := "link " + l.Name
	src := l.Addr.Addr()
	for _, q := range []struct {
		what string
		q    rules.Query
	}{
		{fmt.Sprintf("from %s", src), rules.Query{Dst: o.Probe, Src: src}},
		{fmt.Sprintf("fwmark %#x", l.Mark), rules.Query{Dst: o.Probe, Mark: l.Mark}},
	} {
		check := fmt.Sprintf("%s: %s", name, q.what)
		ans, err := k.Routes.RouteGet(q.q)
		if err != nil {
			r.fail(check, applyFix, "%v", err)
			continue
		}
		if ans.Dev == l.Interface && ans.Gw == l.Via() {
			r.pass(check, "leaves by %s (ip route get %s)", hop(ans.Dev, ans.Gw), q.q.Args())
			continue
		}
		fq := q.q
		fq.FIBMatch = true
		plen := 0
		if e, err := k.Routes.RouteGet(fq); err == nil {
			plen = e.Dst.Bits()
		}
		by := "no rule found"
		fix := applyFix
		if mr, ok := MatchedRule(all, packetOf(q.q), ans.Table, plen); ok {
			by = "rule " + strings.ReplaceAll(mr.String(), "\t", " ")
			if !mr.Owned() {
				by += " (not flowpin's)"
				fix = fmt.Sprintf("ip rule del pref %d, or move it after flowpin's rules", mr.Priority)
			}
		}
		r.fail(check, fix, "leaves by %s, want %s: table %s, %s (ip route get %s)",
			hop(orNone(ans.Dev), ans.Gw), hop(l.Interface, l.Via()), rules.TableName(ans.Table), by, q.q.Args())
	}
}

// hop is where a packet leaves: "wan1 via 192.0.2.1", or "ppp0" out of a
// point-to-point interface.
func hop(dev string, gw netip.Addr) string {
	if !gw.IsValid() {
		return dev
	}
	return dev + " via " + gw.String()
}

func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}

// verifyGateway looks for a neighbour entry of the gateway; without one it
// sends a single UDP datagram to the gateway's discard port, which makes
// the kernel resolve it, and looks again.
func (k *Kernel) verifyGateway(r *VerifyReport, l plan.LinkPlan, o VerifyOptions) {
	if l.PointToPoint {
		// No link-layer address to resolve: the probes tell whether the
		// peer answers.
		r.pass(fmt.Sprintf("link %s: point-to-point", l.Name), "%s is point-to-point: no neighbour to resolve", l.Interface)
		return
	}
	name := fmt.Sprintf("link %s: gateway %s", l.Name, l.Gateway)
	n, err := k.Routes.Neighbour(l.Interface, l.Gateway)
	if err != nil {
		r.fail(name, "", "%v", err)
		return
	}
	if n.Usable() {
		r.pass(name, "neighbour %s on %s (%s)", n.MAC, l.Interface, n.State)
		return
	}
	if o.NoProbe {
		r.fail(name, "ping -I "+l.Interface+" "+l.Gateway.String(), "no usable neighbour entry on %s (%s); not probed (--no-probe)", l.Interface, n.State)
		return
	}
	before := n.State
	probe := k.ProbeGateway
	if probe == nil {
		probe = probeGateway
	}
	probeErr := probe(l.Interface, l.Gateway)
	clk := k.clock()
	deadline := clk.Now().Add(o.ProbeWait)
	for clk.Now().Before(deadline) {
		clock.Sleep(clk, 50*time.Millisecond)
		if n, err = k.Routes.Neighbour(l.Interface, l.Gateway); err == nil && n.Usable() {
			r.pass(name, "answered ARP/ND on %s: %s (neighbour entry was %s before the probe)", l.Interface, n.MAC, before)
			return
		}
	}
	detail := fmt.Sprintf("no ARP/ND answer on %s (neighbour %s)", l.Interface, n.State)
	if probeErr != nil {
		detail += fmt.Sprintf("; probe: %v", probeErr)
	}
	r.fail(name, "check the cable and the gateway address in the config", "%s", detail)
}

func probeGateway(dev string, gw netip.Addr) error {
	dl := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), dev) }); err != nil {
			return err
		}
		return serr
	}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if gw.Is6() && gw.IsLinkLocalUnicast() {
		gw = gw.WithZone(dev) // a link-local address means something on one link only
	}
	conn, err := dl.DialContext(ctx, "udp", netip.AddrPortFrom(gw, 9).String())
	if err != nil {
		return fmt.Errorf("udp to %s:9 on %s: %w", gw, dev, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("flowpin verify")); err != nil {
		return fmt.Errorf("udp to %s:9 on %s: %w", gw, dev, err)
	}
	return nil
}

// verifySpread checks that the wildcard source is routable and that new
// flows reach every link in the multipath route, the default policy's
// active tier, and no other: route get for one destination over a range
// of source ports, as the multipath hash sees them. A usable link of a
// lower tier is on standby and takes none.
func (k *Kernel) verifySpread(r *VerifyReport, d *plan.Desired, o VerifyOptions) {
	usable := map[string]string{} // dev -> link
	for _, l := range d.Links {
		if l.Usable {
			usable[l.Interface] = l.Name
		}
	}
	inRoute := map[string]bool{} // dev
	var want []string
	for _, i := range d.Policies[0].ActiveLinks(d.Links) {
		inRoute[d.Links[i].Interface] = true
		want = append(want, d.Links[i].Interface)
	}
	if len(want) == 0 && o.Daemon != nil {
		// Not drift: the daemon's plan (an operator's down of every
		// link, quotas). The wildcard source has nowhere to go either.
		r.fail("new flows", "flowpin link NAME auto, for a link flowpin run took out (the daemon line above)",
			"flowpin run has every link out of the multipath route: new flows have no link of flowpin's")
		return
	}
	standby := func(dev string) string {
		return fmt.Sprintf("%s (link %s), which is on standby in a lower tier than tier %d", dev, usable[dev], d.Policies[0].Active+1)
	}
	q := rules.Query{Dst: o.Probe}
	ans, err := k.Routes.RouteGet(q)
	switch {
	case err != nil:
		r.fail("wildcard source", applyFix, "%v", err)
		return
	case usable[ans.Dev] == "":
		r.fail("wildcard source", applyFix, "ip route get %s: leaves by %s, which is no usable flowpin link", q.Args(), orNone(ans.Dev))
	case !inRoute[ans.Dev]:
		r.fail("wildcard source", applyFix, "ip route get %s: leaves by %s", q.Args(), standby(ans.Dev))
	default:
		r.pass("wildcard source", "ip route get %s: leaves by %s (link %s)", q.Args(), ans.Dev, usable[ans.Dev])
	}
	if len(want) == 0 {
		r.fail("new flows", applyFix, "no link is usable: new flows use main's default route")
		return
	}
	seen := map[string]int{}
	n := 0
	for i := 0; i < o.Samples; i++ {
		q := rules.Query{Dst: o.Probe, Proto: unix.IPPROTO_TCP, Sport: uint16(32768 + i), Dport: 443}
		ans, err := k.Routes.RouteGet(q)
		if err != nil {
			r.fail("new flows", applyFix, "%v", err)
			return
		}
		seen[ans.Dev]++
		n++
		if i >= 63 && len(seen) >= len(want) {
			break
		}
	}
	var parts []string
	var missing []string
	for _, dev := range want {
		parts = append(parts, fmt.Sprintf("%s %d", usable[dev], seen[dev]))
		if seen[dev] == 0 {
			missing = append(missing, usable[dev])
		}
	}
	for _, dev := range slices.Sorted(maps.Keys(seen)) {
		switch {
		case usable[dev] == "":
			parts = append(parts, fmt.Sprintf("%s (not a link) %d", orNone(dev), seen[dev]))
			missing = append(missing, "(traffic leaves by "+orNone(dev)+")")
		case !inRoute[dev]:
			parts = append(parts, fmt.Sprintf("%s (standby) %d", usable[dev], seen[dev]))
			missing = append(missing, "(traffic leaves by "+standby(dev)+")")
		}
	}
	detail := fmt.Sprintf("tcp to %s:443 from %d source ports: %s", o.Probe, n, strings.Join(parts, ", "))
	if len(missing) > 0 {
		r.fail("new flows", applyFix+"; if a foreign rule is reported above, remove it", "%s; never: %s", detail, strings.Join(missing, ", "))
		return
	}
	r.pass("new flows", "%s", detail)
}
