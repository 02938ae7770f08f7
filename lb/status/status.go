// Package status counts flows per link from conntrack, lists them, and
// renders the `flowpin status` answer. Collect assembles it, for the CLI
// and for the daemon alike; it reads a daemon's counts and link health
// through interfaces (FlowCounts, LinkHealth) and knows nothing of the
// daemon itself.
package status

import (
	"cmp"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/config"
	"flowpin/lb/health"
	"flowpin/nft"
	"flowpin/nft/ct"
	"flowpin/rules"
)

// StatusSchema is the version of the JSON that `flowpin status --json`
// prints. Fields may be added within a version (the daemon's health fields
// will be); none is removed or changes meaning without a new version.
const StatusSchema = 1

// Counters are what conntrack says about a set of flows. "Out" is
// conntrack's original direction: from the side that opened the flow. On a
// NAT box, where flows are opened from the LAN, that is upload.
type Counters struct {
	Flows int64 `json:"flows"`
	// FlowsIPv6 of the Flows are IPv6 flows.
	FlowsIPv6  int64  `json:"flows_ipv6"`
	BytesOut   uint64 `json:"bytes_out"`
	BytesIn    uint64 `json:"bytes_in"`
	PacketsOut uint64 `json:"packets_out"`
	PacketsIn  uint64 `json:"packets_in"`
	// FlowsWithoutCounters began while nf_conntrack_acct was off: the
	// kernel only gives counters to flows created after it is set.
	FlowsWithoutCounters int64 `json:"flows_without_counters"`
}

func (c *Counters) add(r *ct.FlowRecord) {
	c.Flows++
	if r.Family == unix.AF_INET6 {
		c.FlowsIPv6++
	}
	if !r.Counted {
		c.FlowsWithoutCounters++
		return
	}
	c.BytesOut += r.Orig.Bytes
	c.BytesIn += r.Reply.Bytes
	c.PacketsOut += r.Orig.Packets
	c.PacketsIn += r.Reply.Packets
}

func (c *Counters) plus(o Counters) {
	c.Flows += o.Flows
	c.FlowsIPv6 += o.FlowsIPv6
	c.BytesOut += o.BytesOut
	c.BytesIn += o.BytesIn
	c.PacketsOut += o.PacketsOut
	c.PacketsIn += o.PacketsIn
	c.FlowsWithoutCounters += o.FlowsWithoutCounters
}

// Rates are per-second changes between two watch frames. They are computed
// from the counters of the flows alive at each frame, so a flow that ended
// in between takes its bytes with it; negative differences count as zero.
type Rates struct {
	BytesOutPerSec   float64 `json:"bytes_out_per_sec"`
	BytesInPerSec    float64 `json:"bytes_in_per_sec"`
	PacketsOutPerSec float64 `json:"packets_out_per_sec"`
	PacketsInPerSec  float64 `json:"packets_in_per_sec"`
}

// LinkStatus is one link's row.
type LinkStatus struct {
	Name      string `json:"name"`
	Interface string `json:"interface"`
	// Gateway is the next hop's address. With "gateway: auto"
	// (GatewayAuto) it is the one in the link's table as applied, or
	// empty while the interface has no default route yet.
	Gateway     string           `json:"gateway"`
	GatewayAuto bool             `json:"gateway_auto,omitempty"`
	Weight      int              `json:"weight"`
	Mark        uint32           `json:"mark"`
	Table       int              `json:"table"`
	State       health.LinkState `json:"state"`
	// From the daemon (absent without one): when the state last changed
	// and why, and the probes' round-trip time and loss.
	StateSince *time.Time `json:"state_since,omitempty"`
	// State6 and Reason6: the link's IPv6 side, judged on its own (absent
	// for a link without IPv6, or without a daemon).
	State6  health.LinkState `json:"state6,omitempty"`
	Reason6 string           `json:"reason6,omitempty"`
	Reason  string           `json:"reason,omitempty"`
	// FlowsKept (FlowsKept6: its IPv6 side), from the daemon while the
	// link is down: its flows were left in place rather than deleted,
	// since when, and why (no other link could take them). They go on
	// when the link is back.
	FlowsKept      string     `json:"flows_kept,omitempty"`
	FlowsKeptSince *time.Time `json:"flows_kept_since,omitempty"`
	FlowsKept6     string     `json:"flows_kept6,omitempty"`
	// Operator, from the daemon: the mode flowpin link set (drain, down,
	// up; absent: auto) and since when. Quota: the link's data cap.
	Operator      string             `json:"operator,omitempty"`
	OperatorSince *time.Time         `json:"operator_since,omitempty"`
	Quota         *health.QuotaUsage `json:"quota,omitempty"`
	// QuotaWarning, once the link used QuotaWarnShare of its quota.
	QuotaWarning string `json:"quota_warning,omitempty"`
	// Over the probes' last Window rounds: median rtt, jitter (mean
	// absolute difference of consecutive rounds' rtts) and the share of
	// probes lost.
	RTTMillis    *float64 `json:"rtt_ms,omitempty"`
	JitterMillis *float64 `json:"jitter_ms,omitempty"`
	Loss         *float64 `json:"loss,omitempty"`
	Window       int      `json:"window,omitempty"`
	Counters
	// InMultipath: the link is a nexthop of the applied multipath route,
	// so it takes new flows.
	InMultipath bool `json:"in_multipath"`
	// FlowShare is this link's part of the pinned flows (0..1);
	// WeightShare is its part of the applied multipath weights, which
	// FlowShare should approach as flows accumulate.
	FlowShare   float64 `json:"flow_share"`
	WeightShare float64 `json:"weight_share"`
	Rate        *Rates  `json:"rate,omitempty"` // --watch only
	// Prefixes6 are the link's ISP prefixes as applied (prefixes6).
	Prefixes6 []Prefix6Status `json:"prefixes6,omitempty"`
	// DNS are the link's DNS servers (dns.go); DNSAuto: they come from
	// its lease (dns: auto), which only the daemon reads.
	DNS     []DNSStatus `json:"dns,omitempty"`
	DNSAuto bool        `json:"dns_auto,omitempty"`
}

// MarkCount is flows whose mark is under flowpin's mask but belongs to no
// configured link (a link since removed from the config, or another
// program writing those bits).
type MarkCount struct {
	Mark uint32 `json:"mark"`
	Counters
}

// Status is the whole `flowpin status` answer.
type Status struct {
	Schema int       `json:"schema"`
	Time   time.Time `json:"time"`
	// Daemon: a flowpin daemon is tracking link health. Until one exists
	// this is false and every state is "unknown".
	Daemon   bool         `json:"daemon"`
	MarkMask uint32       `json:"mark_mask"`
	Acct     bool         `json:"acct"` // net.netfilter.nf_conntrack_acct
	Links    []LinkStatus `json:"links"`
	// Policies and Rules: the traffic policies with their active tiers,
	// and the traffic rules with their hit counts (absent without rules
	// or policies).
	Policies []PolicyStatus `json:"policies,omitempty"`
	Rules    []RuleStatus   `json:"rules,omitempty"`
	// Sets: the named address sets, with their element counts.
	Sets []SetStatus `json:"sets,omitempty"`
	// Unpinned flows carry no flowpin mark: they started before apply,
	// or never crossed a link (the box's own LAN traffic).
	Unpinned   Counters    `json:"unpinned"`
	OtherMarks []MarkCount `json:"other_marks"`
	Total      Counters    `json:"total"`
	// Seconds since the previous frame (--watch only).
	Interval float64  `json:"interval,omitempty"`
	Warnings []string `json:"warnings"`
	// BytesFrom says what the byte and packet counts are: absent (or
	// "flows"), those of the flows alive now, from conntrack; "rules", the
	// links' traffic counted by flowpin's nft rules, carried over the
	// rewrites of its table while the daemon runs (a daemon's status).
	BytesFrom string `json:"bytes_from,omitempty"`
	// HA: the role of this node of an HA pair (config ha), or where the
	// links' nat_source addresses are (absent without either).
	HA *HAStatus `json:"ha,omitempty"`
}

// BytesFromRules: see Status.BytesFrom.
const BytesFromRules = "rules"

// Tally counts flows per mark value (the ct mark under mask).
type Tally map[uint32]*Counters

// TallyFlows dumps the conntrack table once and counts it per mark, in
// parallel dumps of disjoint parts, one per core.
func TallyFlows(conn Conntrack, c *config.Config) (Tally, error) {
	parts := Partition(c, runtime.GOMAXPROCS(0))
	var t Tally
	err := ct.RetryInterrupted(func() error {
		tallies := make([]Tally, len(parts))
		for i := range tallies {
			tallies[i] = Tally{}
		}
		err := conn.WalkParallel(parts, ct.DetailCounters, func(i int, r *ct.FlowRecord) {
			m := r.Mark & c.MarkMask
			cnt := tallies[i][m]
			if cnt == nil {
				cnt = &Counters{}
				tallies[i][m] = cnt
			}
			cnt.add(r)
		})
		t = Tally{}
		for _, pt := range tallies {
			for m, cnt := range pt {
				if t[m] == nil {
					t[m] = &Counters{}
				}
				t[m].plus(*cnt)
			}
		}
		return err
	})
	return t, err
}

// Routing is what status reads of netlink and /proc/sys.
type Routing interface {
	Owned() (rules.State, error)
	ReadSysctl(key string) (string, error)
}

// Tables is what status reads of nftables.
type Tables interface {
	Read() (*nft.Current, error)
}

// Applied is what flowpin finds of itself in the namespace.
type Applied struct {
	Table  bool         // nft table inet flowpin
	Rules  []rules.Rule // ip rules with protocol 201
	Routes []rules.Route
	Acct   bool
	// Prefixes6: the links' ISP prefixes and their translations, as the
	// nft table holds them.
	Prefixes6 []nft.AppliedPrefix6
}

// ErrNotApplied: nothing of flowpin is in this network namespace.
var ErrNotApplied = errors.New("not applied in this network namespace: there is no nft table inet flowpin and no ip rule with protocol 201 (run `flowpin apply` first; under `ip netns exec NS`, in that namespace)")

// ReadApplied reads flowpin's table, rules and routes, and whether the
// kernel counts bytes per flow. It returns ErrNotApplied when there is
// neither a table nor a rule.
func ReadApplied(r Routing, t Tables) (*Applied, error) {
	cur, err := t.Read()
	if err != nil {
		return nil, err
	}
	owned, err := r.Owned()
	if err != nil {
		return nil, err
	}
	if !cur.Exists && len(owned.Rules) == 0 {
		return nil, ErrNotApplied
	}
	a := &Applied{Table: cur.Exists, Rules: owned.Rules, Routes: owned.Routes, Prefixes6: cur.Prefixes6()}
	// A missing key means nf_conntrack is not loaded: nothing counts.
	v, err := r.ReadSysctl("net/netfilter/nf_conntrack_acct")
	a.Acct = err == nil && v == "1"
	return a, nil
}

// BuildStatus puts the config, what was applied and the flow counts
// together. It is pure.
func BuildStatus(c *config.Config, a *Applied, t Tally, now time.Time) *Status {
	s := &Status{
		Schema:     StatusSchema,
		Time:       now,
		MarkMask:   c.MarkMask,
		Acct:       a.Acct,
		OtherMarks: []MarkCount{},
		Warnings:   []string{},
	}
	if !a.Table {
		s.Warnings = append(s.Warnings, "nft table inet flowpin is missing: new flows are not being pinned (run flowpin apply)")
	}
	if len(a.Rules) == 0 {
		s.Warnings = append(s.Warnings, "no ip rules with protocol 201: pinned flows are not routed by their link (run flowpin apply)")
	}
	if !a.Acct {
		s.Warnings = append(s.Warnings, "net.netfilter.nf_conntrack_acct is off: bytes and packets are not counted (flowpin apply turns it on; flows that started before stay uncounted)")
	}
	weights := appliedWeights(c, a.Routes)
	var weightSum int
	for _, w := range weights {
		weightSum += w
	}
	seen := map[uint32]bool{0: true}
	var pinned int64
	for _, l := range c.Links {
		ls := LinkStatus{
			Name: l.Name, Interface: l.Interface, Gateway: l.Gateway.String(),
			Weight: l.Weight, Mark: l.Mark, Table: l.Table, State: health.StateUnknown,
		}
		if l.GatewayAuto {
			ls.GatewayAuto = true
			ls.Gateway = appliedGateway(l.Table, a.Routes)
		}
		if cnt := t[l.Mark]; cnt != nil {
			ls.Counters = *cnt
		}
		seen[l.Mark] = true
		if w, ok := weights[l.Name]; ok {
			ls.InMultipath = true
			if weightSum > 0 {
				ls.WeightShare = float64(w) / float64(weightSum)
			}
		}
		if len(a.Rules) > 0 && !hasMarkRule(a.Rules, l.Mark, c.MarkMask) {
			s.Warnings = append(s.Warnings, fmt.Sprintf("link %s: no ip rule for fwmark %#x/%#x: the config differs from what was applied (run flowpin apply)", l.Name, l.Mark, c.MarkMask))
		}
		ls.Prefixes6 = prefixes6Of(l.Name, a)
		ls.DNS, ls.DNSAuto = dnsOf(l), l.DNSAuto
		pinned += ls.Flows
		s.Links = append(s.Links, ls)
	}
	for i := range s.Links {
		if pinned > 0 {
			s.Links[i].FlowShare = float64(s.Links[i].Flows) / float64(pinned)
		}
		s.Total.plus(s.Links[i].Counters)
	}
	if cnt := t[0]; cnt != nil {
		s.Unpinned = *cnt
		s.Total.plus(*cnt)
	}
	for m, cnt := range t {
		if !seen[m] {
			s.OtherMarks = append(s.OtherMarks, MarkCount{Mark: m, Counters: *cnt})
			s.Total.plus(*cnt)
		}
	}
	slices.SortFunc(s.OtherMarks, func(a, b MarkCount) int { return cmp.Compare(a.Mark, b.Mark) })
	if len(s.OtherMarks) > 0 {
		s.Warnings = append(s.Warnings, fmt.Sprintf("%d flows carry a mark under mask %#x that no configured link has", otherFlows(s.OtherMarks), c.MarkMask))
	}
	return s
}

func otherFlows(ms []MarkCount) int64 {
	var n int64
	for _, m := range ms {
		n += m.Flows
	}
	return n
}

func hasMarkRule(rs []rules.Rule, mark, mask uint32) bool {
	for _, r := range rs {
		if r.Mark == mark && r.Mask == mask {
			return true
		}
	}
	return false
}

// appliedGateway is the next hop of the default route in a link's own
// table as applied ("dev ppp0" out of a point-to-point interface), or ""
// when there is none.
func appliedGateway(table int, routes []rules.Route) string {
	for _, r := range routes {
		if r.Table != table || r.Family != rules.V4 || r.Dst.Bits() != 0 || r.Type != "" {
			continue
		}
		if r.Gw.IsValid() {
			return r.Gw.String()
		}
		if r.Dev != "" {
			return "dev " + r.Dev
		}
	}
	return ""
}

// appliedWeights reads the weights of the multipath route in the balance
// table as applied, by link name: those, not the config's, decide where new
// flows go (a link that was down at apply is not in the route).
func appliedWeights(c *config.Config, routes []rules.Route) map[string]int {
	byIface := map[string]string{}
	for _, l := range c.Links {
		byIface[l.Interface] = l.Name
	}
	out := map[string]int{}
	for _, r := range routes {
		if r.Table != c.BalanceTable || r.Dst.Bits() != 0 || r.Family != rules.V4 {
			continue
		}
		if len(r.Nexthops) == 0 && r.Dev != "" {
			// The kernel stores a one-nexthop multipath route as a plain one.
			if name, ok := byIface[r.Dev]; ok {
				out[name] = 1
			}
		}
		for _, nh := range r.Nexthops {
			if name, ok := byIface[nh.Dev]; ok {
				out[name] += nh.Weight
			}
		}
	}
	return out
}

// SetRates fills in per-second rates against the previous frame.
func (s *Status) SetRates(prev *Status) {
	if prev == nil {
		return
	}
	dt := s.Time.Sub(prev.Time).Seconds()
	if dt <= 0 {
		return
	}
	s.Interval = dt
	old := map[string]Counters{}
	for _, l := range prev.Links {
		old[l.Name] = l.Counters
	}
	for i := range s.Links {
		if o, ok := old[s.Links[i].Name]; ok {
			r := rates(o, s.Links[i].Counters, dt)
			s.Links[i].Rate = &r
		}
	}
}

func rates(a, b Counters, dt float64) Rates {
	d := func(x, y uint64) float64 {
		if y < x {
			return 0
		}
		return float64(y-x) / dt
	}
	return Rates{
		BytesOutPerSec:   d(a.BytesOut, b.BytesOut),
		BytesInPerSec:    d(a.BytesIn, b.BytesIn),
		PacketsOutPerSec: d(a.PacketsOut, b.PacketsOut),
		PacketsInPerSec:  d(a.PacketsIn, b.PacketsIn),
	}
}

// Partition splits the conntrack table into up to n disjoint parts by
// the bits of c's mark mask, balanced by the links' weights.
func Partition(c *config.Config, n int) []*ct.MarkFilter {
	links := make([]ct.WeightedMark, len(c.Links))
	for i, l := range c.Links {
		links[i] = ct.WeightedMark{Mark: l.Mark, Weight: l.Weight}
	}
	return ct.Partition(c.MarkMask, links, n)
}
