package diagnose

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/config"
	"flowpin/lb/plan"
	"flowpin/nft"
	"flowpin/nft/ct"
	"flowpin/rules"
)

// Packet is what `flowpin explain` is asked about. Src, Iif, Mark, Proto
// and the ports are optional; without Iif the packet is locally generated.
type Packet struct {
	Dst          netip.Addr
	Src          netip.Addr
	Iif          string
	Mark         uint32
	Proto        uint8
	Sport, Dport uint16
}

// Step is one stage of a packet's path.
type Step struct {
	Stage string `json:"stage"` // "conntrack", "nft prerouting", "ip rule", ...
	Text  string `json:"text"`
}

// Explanation is the path of one packet, stage by stage, and where it ends.
type Explanation struct {
	Steps []Step `json:"steps"`
	// Dev and Gw: where the packet leaves; Link: the flowpin link that is
	// ("" when it leaves by something else or not at all).
	Dev  string     `json:"dev,omitempty"`
	Gw   netip.Addr `json:"gateway,omitzero"`
	Link string     `json:"link,omitempty"`
	// Source: the source address the packet carries when it leaves
	// (after NAT).
	Source netip.Addr `json:"source,omitzero"`
	// Pinned: an existing flow whose link is decided by its conntrack mark;
	// HashPick: a new flow whose link the multipath hash chose.
	Pinned   bool `json:"pinned"`
	HashPick bool `json:"hash_pick"`
	// Rule: the traffic rule that decided the new flow's policy ("" for
	// none: the default policy); Policy and Tier (1-based; 0: no tier up)
	// where it went; StuckTo: the link a sticky rule keeps its source on.
	Rule    string `json:"rule,omitempty"`
	Policy  string `json:"policy,omitempty"`
	Tier    int    `json:"tier,omitempty"`
	StuckTo string `json:"stuck_to,omitempty"`
	// Sets: the config's sets that hold the destination or the source
	// ("destination in video").
	Sets []string `json:"sets,omitempty"`
	// Notes: caveats that make the answer less certain.
	Notes []string `json:"notes,omitempty"`
	// Error: the kernel would not route the packet, and why.
	Error string `json:"error,omitempty"`
}

func (e *Explanation) add(stage, format string, args ...any) {
	e.Steps = append(e.Steps, Step{Stage: stage, Text: fmt.Sprintf(format, args...)})
}

// Summary is the one-line answer.
func (e *Explanation) Summary() string {
	if e.Error != "" {
		return "not routed: " + e.Error
	}
	var b strings.Builder
	fmt.Fprintf(&b, "leaves by %s", e.Dev)
	if e.Gw.IsValid() {
		fmt.Fprintf(&b, " via %s", e.Gw)
	}
	if e.Link != "" {
		fmt.Fprintf(&b, " (link %s)", e.Link)
	} else {
		b.WriteString(" (not a flowpin link)")
	}
	if e.Source.IsValid() {
		fmt.Fprintf(&b, " with source %s", e.Source)
	}
	switch {
	case e.Pinned:
		b.WriteString(", pinned by its conntrack mark")
	case e.HashPick:
		b.WriteString(", picked by the multipath hash")
	}
	return b.String()
}

// Explain follows p through flowpin's nft chains, the ip rules and the
// routing tables. Every routing answer is the kernel's own (RTM_GETROUTE
// with the packet's source, input interface, mark and 5-tuple, which is
// what the multipath hash reads), so it cannot drift from what the kernel
// does; flowpin only supplies the mark its nft chains would set, from the
// config and the flow's conntrack entry.
func (k *Kernel) Explain(c *config.Config, p Packet) (*Explanation, error) {
	if !p.Dst.IsValid() {
		return nil, errors.New("explain: no destination address")
	}
	ifaces, err := k.Routes.Interfaces()
	if err != nil {
		return nil, err
	}
	d, err := plan.Plan(c, ifaces)
	if err != nil {
		return nil, err
	}
	if p.Iif != "" {
		if _, ok := ifaces[p.Iif]; !ok {
			return nil, fmt.Errorf("explain: interface %s does not exist in this network namespace", p.Iif)
		}
	}
	if familyOf(p.Dst) == rules.V6 {
		// The links' IPv6 sides: their addresses, gateways and tiers.
		d = asV6(d, false)
	}
	x := &explainer{k: k, c: c, d: d, p: p, e: &Explanation{}, mark: p.Mark}
	k.describe(x.e, p)
	x.conntrack()
	x.restore()
	x.sets()
	x.classify()
	routed, err := x.route()
	if err != nil {
		return nil, err
	}
	if !routed || x.nexthop() {
		return x.e, nil
	}
	x.save()
	x.nat()
	return x.e, nil
}

// explainer carries one packet through Explain's stages, in the order the
// kernel runs them; each stage adds its steps and what later ones need.
type explainer struct {
	k *Kernel
	c *config.Config
	d *plan.Desired
	p Packet
	e *Explanation

	flow     *ct.Flow       // the packet's conntrack entry; nil: a new flow
	pinnedTo *plan.LinkPlan // the link the flow's ct mark names
	inLink   *plan.LinkPlan // the link the packet arrives on
	mark     uint32         // meta mark after flowpin's chains
	ans      rules.Answer   // the kernel's route for the packet
	entry    rules.Answer   // the route entry behind ans (fibmatch)
	out      *plan.LinkPlan // the link the packet leaves by
	policy   *plan.PolicyPlan
	bypass   bool // the flow's ct mark is the bypass mark
}

// linkWhere is the planned link for which f holds, or nil.
func (x *explainer) linkWhere(f func(l *plan.LinkPlan) bool) *plan.LinkPlan {
	var found *plan.LinkPlan
	for i := range x.d.Links {
		if f(&x.d.Links[i]) {
			found = &x.d.Links[i]
		}
	}
	return found
}

// conntrack looks up the packet's flow (only a full 5-tuple names one)
// and the link its ct mark pins it to.
func (x *explainer) conntrack() {
	p, e := x.p, x.e
	if !p.Src.IsValid() || p.Proto == 0 || p.Sport == 0 || p.Dport == 0 {
		e.add("conntrack", "not looked up (needs --from, --proto, --sport and --dport): treated as the first packet of a new flow")
		return
	}
	flow, err := x.k.CT.Lookup(ct.Tuple{Proto: p.Proto, Src: p.Src, Dst: p.Dst, Sport: p.Sport, Dport: p.Dport})
	if err != nil {
		e.Notes = append(e.Notes, fmt.Sprintf("conntrack lookup failed (%v): treated as a new flow", err))
	}
	if flow == nil {
		e.add("conntrack", "no entry for %s %s:%d -> %s:%d: this is the first packet of a new flow", rules.ProtoName(p.Proto), p.Src, p.Sport, p.Dst, p.Dport)
		return
	}
	x.flow = flow
	dir := "original"
	if flow.IsReply {
		dir = "reply"
	}
	x.pinnedTo = x.linkWhere(func(l *plan.LinkPlan) bool { return flow.Mark&x.c.MarkMask == l.Mark })
	switch {
	case x.pinnedTo != nil:
		e.add("conntrack", "existing flow (%s direction of %s:%d -> %s:%d), ct mark %#x: pinned to link %s (%s)",
			dir, flow.Orig.Src, flow.Orig.Sport, flow.Orig.Dst, flow.Orig.Dport, flow.Mark, x.pinnedTo.Name, x.pinnedTo.Interface)
	case x.d.NFT.Bypass != 0 && flow.Mark&x.c.MarkMask == x.d.NFT.Bypass:
		x.bypass = true
		e.add("conntrack", "existing flow (%s direction), ct mark %#x: a traffic rule with policy main sent it to the main table; it is not pinned to a link", dir, flow.Mark)
	case flow.Mark&x.c.MarkMask != 0:
		e.add("conntrack", "existing flow (%s direction), ct mark %#x: bits %#x match no link of this config (a link was removed?)",
			dir, flow.Mark, flow.Mark&x.c.MarkMask)
	default:
		e.add("conntrack", "existing flow (%s direction), ct mark %#x: not pinned to a link yet (it has not left by a link, nor arrived on one)", dir, flow.Mark)
	}
}

// restore is flowpin's prerouting chain (arriving packets) or output chain
// (local ones), as built in nft.Spec: the mark the packet is routed with.
func (x *explainer) restore() {
	p, e := x.p, x.e
	x.inLink = x.linkWhere(func(l *plan.LinkPlan) bool { return l.Interface == p.Iif })
	chain := "nft output"
	if p.Iif != "" {
		chain = "nft prerouting"
	}
	switch {
	case x.inLink != nil && x.pinnedTo == nil:
		e.add(chain, "arrives on %s, link %s: the flow is pinned to %s here (ct mark set to %#x); the mark is not restored onto the packet, so main routes it (replies from a link go to the LAN)",
			p.Iif, x.inLink.Name, x.inLink.Name, x.inLink.Mark)
	case x.inLink != nil:
		e.add(chain, "arrives on %s, link %s: the flow is already pinned to %s; the mark is not restored onto packets from a link, so main routes it", p.Iif, x.inLink.Name, x.pinnedTo.Name)
	case x.bypass && x.inLink == nil:
		x.mark = x.mark&^x.c.MarkMask | x.d.NFT.Bypass
		e.add(chain, "restore: ct mark & %#x == %#x, so meta mark set to %#x: routed by the main table", x.c.MarkMask, x.d.NFT.Bypass, x.mark)
	case x.pinnedTo == nil && x.flow != nil && x.flow.Mark&x.c.MarkMask == 0 && p.Iif != "" && x.d.NFT.Main != 0:
		x.mark = x.mark&^x.c.MarkMask | x.d.NFT.Main
		e.add(chain, "an established flow without a link (from before apply): meta mark set to %#x, routed by the main table as before flowpin; its first reply from a link pins it there", x.mark)
	case x.pinnedTo != nil:
		x.mark = x.mark&^x.c.MarkMask | x.pinnedTo.Mark
		e.add(chain, "restore: ct mark & %#x == %#x, so meta mark set to %#x: the fwmark rule of link %s routes it", x.c.MarkMask, x.pinnedTo.Mark, x.mark, x.pinnedTo.Name)
	default:
		e.add(chain, "no restore (the flow has no link yet): meta mark stays %#x", x.mark)
	}
}

// route asks the kernel for the packet's route and the entry behind it,
// and names the ip rule that led there. false: the kernel refused, and
// the explanation says why.
func (x *explainer) route() (bool, error) {
	p, e := x.p, x.e
	q := rules.Query{Dst: p.Dst, Src: p.Src, Iif: p.Iif, Mark: x.mark, Proto: p.Proto, Sport: p.Sport, Dport: p.Dport}
	ans, err := x.k.Routes.RouteGet(q)
	if err != nil {
		x.k.routeError(e, q, err)
		return false, nil
	}
	fq := q
	fq.FIBMatch = true
	entry, ferr := x.k.Routes.RouteGet(fq)
	if ferr != nil {
		// Should not happen when the plain lookup worked; keep going with
		// what we have.
		entry = ans
		e.Notes = append(e.Notes, ferr.Error())
	}
	// A point-to-point link's IPv6 multipath leg names a placeholder next
	// hop the kernel never resolves (plan.P2PLeg6): the packet leaves by
	// the device alone, so say that.
	p2p := func(dev string) bool {
		return x.linkWhere(func(l *plan.LinkPlan) bool { return l.Interface == dev && l.PointToPoint }) != nil
	}
	if p2p(ans.Dev) {
		ans.Gw = netip.Addr{}
	}
	entry.Nexthops = slices.Clone(entry.Nexthops)
	for i, nh := range entry.Nexthops {
		if p2p(nh.Dev) {
			entry.Nexthops[i].Gw = netip.Addr{}
		}
	}
	if p2p(entry.Dev) {
		entry.Gw = netip.Addr{}
	}
	x.ans, x.entry = ans, entry

	all, err := x.k.Routes.ListRules(familyOf(p.Dst))
	if err != nil {
		return false, err
	}
	if r, ok := MatchedRule(all, packetOf(q), ans.Table, entry.Dst.Bits()); ok {
		owner := "not flowpin's"
		if r.Owned() {
			owner = "flowpin's: " + x.k.ruleRole(x.c, r)
		}
		e.add("ip rule", "%s  (%s)", strings.ReplaceAll(r.String(), "\t", " "), owner)
	} else {
		e.add("ip rule", "the kernel answered from table %s; no rule here explains it (a rule type this tool does not model?)", rules.TableName(ans.Table))
	}
	e.add("route", "%s", entry.String())

	e.Dev, e.Gw = ans.Dev, ans.Gw
	x.out = x.linkWhere(func(l *plan.LinkPlan) bool { return l.Interface == ans.Dev })
	if x.out != nil {
		e.Link = x.out.Name
	}
	x.tier()
	return true, nil
}

// classify is the classify chain: the first packet of a new flow that no
// link has yet gets the mark of its traffic rule's policy.
func (x *explainer) classify() {
	p, e, mask := x.p, x.e, x.c.MarkMask
	if x.pinnedTo != nil || x.inLink != nil {
		return
	}
	if x.mark&mask != 0 {
		e.add("nft classify", "the packet already carries mark %#x inside flowpin's mask %#x (set by another program, e.g. a VPN socket's SO_MARK): flowpin leaves it alone", x.mark, mask)
		return
	}
	if x.flow != nil {
		e.add("nft classify", "an existing flow: only the packets of a new one (ct state new) are classified by the traffic rules")
		return
	}
	if pp := x.prefixOf(p.Src); pp != nil {
		e.add("nft classify", "source %s is in %s, link %s's own prefix (prefixes6): no traffic rule applies, its link's prefix rule routes it", p.Src, pp.Prefix, x.d.Links[pp.Link].Name)
		return
	}
	i, unsure := plan.Match(x.c.Rules, plan.Flow{Src: p.Src, Dst: p.Dst, Proto: p.Proto, Sport: p.Sport, Dport: p.Dport, Iif: p.Iif, InSet: x.inSet})
	if unsure != "" {
		e.Notes = append(e.Notes, unsure+": the answer assumes it does not match")
	}
	if i < 0 {
		pol := x.d.Policies[x.c.Unmatched]
		x.policy = &pol
		e.Policy = pol.Name
		x.mark = x.mark&^mask | pol.Mark
		if len(x.c.Rules) == 0 {
			e.add("nft classify", "no traffic rules: policy %s", pol.Name)
		} else {
			e.add("nft classify", "no traffic rule matches: policy %s (meta mark %#x)", pol.Name, x.mark)
		}
		return
	}
	r, rp := x.c.Rules[i], x.d.Rules[i]
	e.Rule = r.Name
	if r.Bypass() {
		x.mark = x.mark&^mask | rp.Mark
		e.Policy = config.BypassPolicy
		e.add("nft classify", "rule %s (rules[%d]) matches: policy main, routed by the main table and never pinned (meta and ct mark %#x)", r.Name, i, rp.Mark)
		return
	}
	pol := x.d.Policies[r.Target]
	x.policy = &pol
	e.Policy = pol.Name
	if r.Sticky > 0 && p.Src.IsValid() {
		m := nft.StickyMap(r.Name, p.Src)
		mark, left, err := x.k.NFT.StuckTo(m, p.Src)
		if err != nil {
			e.Notes = append(e.Notes, err.Error())
		}
		for _, li := range pol.ActiveLinks(x.d.Links) {
			l := x.d.Links[li]
			if mark != 0 && l.Mark == mark {
				x.mark = x.mark&^mask | l.Mark
				e.StuckTo = l.Name
				e.add("nft classify", "rule %s (rules[%d]) matches: policy %s; source %s is stuck to link %s for %v more (map %s): meta mark %#x", r.Name, i, pol.Name, p.Src, l.Name, left.Round(time.Second), m, x.mark)
				return
			}
		}
	}
	x.mark = x.mark&^mask | rp.Mark
	sticky := ""
	if r.Sticky > 0 {
		sticky = fmt.Sprintf("; its source is not stuck to a link yet, and will stick to the one it leaves by for %v", r.Sticky)
	}
	e.add("nft classify", "rule %s (rules[%d]) matches: policy %s (meta mark %#x)%s", r.Name, i, pol.Name, x.mark, sticky)
}

// tier names the tier of the policy the link it leaves by belongs to.
func (x *explainer) tier() {
	if x.policy == nil {
		return
	}
	e, pol := x.e, x.policy
	if pol.Active < 0 {
		e.add("policy", "policy %s: no link of any tier is up, last resort %s", pol.Name, pol.LastResort)
		return
	}
	for t, tier := range pol.Tiers {
		for _, li := range tier {
			if x.out != nil && x.d.Links[li].Name == x.out.Name {
				e.Tier = t + 1
				e.add("policy", "policy %s: link %s is in tier %d; the active tier is %d", pol.Name, x.out.Name, t+1, pol.Active+1)
				return
			}
		}
	}
}

// packetOf is q as the rule selectors see it: a locally generated packet
// comes from "lo".
func packetOf(q rules.Query) rules.Packet {
	pkt := rules.Packet{Src: q.Src, Dst: q.Dst, Iif: q.Iif, Mark: q.Mark, Proto: q.Proto, Sport: q.Sport, Dport: q.Dport}
	if pkt.Iif == "" {
		pkt.Iif = "lo"
	}
	return pkt
}

// nexthop says which leg of the route the packet takes and why. true: it
// is delivered to this host and goes no further.
func (x *explainer) nexthop() (local bool) {
	p, e, ans := x.p, x.e, x.ans
	switch {
	case ans.Type == unix.RTN_LOCAL:
		e.add("nexthop", "%s is a local address: the packet is delivered to this host", p.Dst)
		e.Dev, e.Link = "lo", ""
		return true
	case len(x.entry.Nexthops) > 1:
		legs := make([]string, 0, len(x.entry.Nexthops))
		for _, nh := range x.entry.Nexthops {
			legs = append(legs, fmt.Sprintf("%s weight %d", nh.Dev, nh.Weight))
		}
		how := "the multipath hash of this packet's addresses"
		if p.Proto != 0 && p.Sport != 0 && p.Dport != 0 {
			src := "(any source)"
			if p.Src.IsValid() {
				src = p.Src.String()
			}
			how = fmt.Sprintf("the multipath hash of %s %s -> %s", rules.ProtoName(p.Proto), joinHostPort(src, p.Sport), joinHostPort(p.Dst.String(), p.Dport))
		}
		e.HashPick = x.pinnedTo == nil
		pick := "dev " + ans.Dev
		if ans.Gw.IsValid() {
			pick = fmt.Sprintf("via %s dev %s", ans.Gw, ans.Dev)
		}
		e.add("nexthop", "%s picks %s out of %s", how, pick, strings.Join(legs, ", "))
		x.k.hashNotes(e, p)
	case ans.Gw.IsValid():
		e.add("nexthop", "via %s dev %s", ans.Gw, ans.Dev)
	default:
		e.add("nexthop", "directly connected on %s", ans.Dev)
	}
	e.Pinned = x.pinnedTo != nil && x.inLink == nil
	return false
}

// save is flowpin's postrouting chain: the link a new flow leaves by
// becomes its ct mark.
func (x *explainer) save() {
	e, flow := x.e, x.flow
	switch {
	case x.out == nil:
		e.add("nft postrouting", "%s is not a flowpin link: no save, no NAT by flowpin", x.ans.Dev)
	case flow != nil && flow.Mark&x.c.MarkMask != 0:
		e.add("nft postrouting", "ct mark already holds a link (%#x): unchanged", flow.Mark&x.c.MarkMask)
	case x.inLink != nil:
		e.add("nft postrouting", "ct mark was set to %#x (link %s) in prerouting: unchanged", x.inLink.Mark, x.inLink.Name)
	default:
		e.add("nft postrouting", "save: ct mark set to %#x: every later packet of this flow is pinned to link %s", x.out.Mark, x.out.Name)
	}
}

// nat is the source address the packet leaves with.
func (x *explainer) nat() {
	e, flow, out := x.e, x.flow, x.out
	e.Source = x.p.Src
	if !e.Source.IsValid() {
		e.Source = x.ans.PrefSrc
	}
	switch {
	case flow != nil && !flow.IsReply && flow.Reply.Dst != flow.Orig.Src:
		// The reply tuple of a NATed flow is addressed to the NAT source.
		e.Source = flow.Reply.Dst
		e.add("nat", "the flow is already translated: source %s", e.Source)
	case out != nil && x.inLink == nil && flow == nil && x.prefixOf(e.Source) != nil:
		x.natPrefix(e.Source)
	case out != nil && out.NAT && x.inLink == nil && (flow == nil || !flow.IsReply) &&
		x.p.Iif != "" && out.NATSource.IsValid() && out.NATSource.Is4() == x.p.Dst.Is4():
		// A forwarded flow; the router's own keep their source.
		e.Source = out.NATSource
		e.add("nat", "snat on %s to its nat_source: source becomes %s", out.Interface, e.Source)
	case out != nil && out.NAT && x.inLink == nil && (flow == nil || !flow.IsReply):
		if out.Addr.IsValid() {
			e.Source = out.Addr.Addr()
		}
		e.add("nat", "masquerade on %s: source becomes %s", out.Interface, e.Source)
	case out != nil && out.NAT:
		e.add("nat", "part of a flow that came in on a link: conntrack reverses its translation, no new masquerade")
	}
}

// joinHostPort writes an endpoint as nft and ss do: [2001:db8::1]:443 for
// IPv6.
func joinHostPort(host string, port uint16) string {
	if strings.Contains(host, ":") {
		return fmt.Sprintf("[%s]:%d", host, port)
	}
	return fmt.Sprintf("%s:%d", host, port)
}

func familyOf(a netip.Addr) int {
	if a.Is6() && !a.Is4In6() {
		return rules.V6
	}
	return rules.V4
}

func (k *Kernel) describe(e *Explanation, p Packet) {
	var b strings.Builder
	if p.Proto != 0 {
		b.WriteString(rules.ProtoName(p.Proto) + " ")
	}
	src := "(source not chosen yet)"
	if p.Src.IsValid() {
		src = p.Src.String()
	}
	b.WriteString(src)
	if p.Sport != 0 {
		fmt.Fprintf(&b, ":%d", p.Sport)
	}
	fmt.Fprintf(&b, " -> %s", p.Dst)
	if p.Dport != 0 {
		fmt.Fprintf(&b, ":%d", p.Dport)
	}
	if p.Iif != "" {
		fmt.Fprintf(&b, ", arriving on %s (forwarded)", p.Iif)
	} else {
		b.WriteString(", sent by this host")
	}
	if p.Mark != 0 {
		fmt.Fprintf(&b, ", mark %#x", p.Mark)
	}
	e.add("packet", "%s", b.String())
}

// hashNotes warns when the kernel's hash for a real packet can differ from
// the one `ip route get` computes.
func (k *Kernel) hashNotes(e *Explanation, p Packet) {
	key := "net/ipv4/fib_multipath_hash_policy"
	if familyOf(p.Dst) == rules.V6 {
		key = "net/ipv6/fib_multipath_hash_policy"
	}
	policy, err := k.Routes.ReadSysctl(key)
	if err != nil {
		return
	}
	switch {
	case policy == "0":
		e.Notes = append(e.Notes, "fib_multipath_hash_policy is 0: the hash reads addresses only, so every flow between the same two hosts takes the same link")
	case policy == "1" && p.Iif != "":
		// fib_multipath_hash: policy 1 returns skb->hash when the packet
		// already carries an L4 hash (a NIC's RSS hash, or the sending
		// socket's random hash over a veth), which route get cannot know.
		e.Notes = append(e.Notes, "fib_multipath_hash_policy is 1: for a forwarded packet that already carries an L4 hash (NIC RSS, veth from a local socket) the kernel uses that hash instead, and the real pick can differ; policy 3 with fib_multipath_hash_fields=0x37 hashes the same 5-tuple from the headers and makes this prediction exact")
	}
	if p.Proto == 0 || p.Sport == 0 || p.Dport == 0 {
		e.Notes = append(e.Notes, "no --proto/--sport/--dport: the pick shown is for port 0; a real flow's ports change it")
	}
}

// routeError turns the kernel's refusal into an explanation.
func (k *Kernel) routeError(e *Explanation, q rules.Query, err error) {
	var why string
	switch {
	case q.Iif != "" && errors.Is(err, unix.EHOSTUNREACH):
		fwd, _ := k.Routes.ReadSysctl("net/ipv4/ip_forward")
		if fwd == "0" {
			why = fmt.Sprintf("net.ipv4.ip_forward is 0 in this namespace, so the kernel does not forward packets arriving on %s (and `ip route get ... iif` cannot answer); enable it with `sysctl -w net.ipv4.ip_forward=1` on a router", q.Iif)
		} else {
			why = fmt.Sprintf("no route for a packet arriving on %s (%v)", q.Iif, err)
		}
	case errors.Is(err, unix.EXDEV):
		why = fmt.Sprintf("reverse-path filter: the kernel would not expect source %s on %s (rp_filter); check net.ipv4.conf.%s.rp_filter", q.Src, q.Iif, q.Iif)
	case q.Iif != "" && errors.Is(err, unix.EINVAL):
		why = fmt.Sprintf("the kernel rejects source %s on %s as martian (a local, broadcast or invalid address arriving from outside)", q.Src, q.Iif)
	case q.Iif == "" && q.Src.IsValid() && !k.isLocal(q.Src):
		why = fmt.Sprintf("%s is not an address of this host: a packet this host sends cannot carry it (use --iif for a forwarded one)", q.Src)
	case errors.Is(err, unix.ENETUNREACH):
		why = "no route: every table the rules lead to is empty for this destination, or a rule says unreachable"
	case errors.Is(err, unix.EACCES):
		why = "a prohibit rule or route rejects it"
	case errors.Is(err, unix.ENODEV):
		why = "an interface involved is down or gone"
	default:
		why = err.Error()
	}
	e.Error = why
	e.add("route", "ip route get %s: %v", q.Args(), err)
	if all, lerr := k.Routes.ListRules(familyOf(q.Dst)); lerr == nil {
		pkt := packetOf(q)
		for _, r := range all {
			if r.Terminal() && r.Matches(pkt) {
				e.add("ip rule", "%s  (drops or rejects it)", strings.ReplaceAll(r.String(), "\t", " "))
				break
			}
		}
	}
}

func (k *Kernel) isLocal(a netip.Addr) bool {
	ifaces, err := k.Routes.Interfaces()
	if err != nil {
		return true // cannot tell: do not claim otherwise
	}
	for _, ifc := range ifaces {
		for _, p := range ifc.Addrs {
			if p.Addr() == a {
				return true
			}
		}
	}
	return false
}

// ruleRole names what a flowpin rule is for, from the priority layout in
// plan.go.
func (k *Kernel) ruleRole(c *config.Config, r rules.RuleInfo) string {
	off := r.Priority - c.PriorityBase
	name := func(i int) string {
		if i >= 0 && i < len(c.Links) {
			return c.Links[i].Name
		}
		return fmt.Sprintf("link #%d", i)
	}
	switch {
	case off == plan.OffForwarded || off == plan.OffSkipSource:
		return "forwarded packets skip the source rules of this host's own traffic"
	case off == plan.OffUnmarked:
		return "packets without a link mark skip the links' fwmark rules"
	case off >= plan.OffSourceLocal && off < plan.OffUnmarked:
		return "a link's own subnet from its own address (" + name(off-plan.OffSourceLocal) + ")"
	case off >= plan.OffMark && off < plan.OffMain && r.Action == rules.ActionGoto:
		return fmt.Sprintf("pinned flows: a branch of the mark tree on bit %#x", r.Mask)
	case off >= plan.OffMark && off < plan.OffMain:
		// The tree places a link's rule by its mark, not its position.
		for _, l := range c.Links {
			if l.Table == r.Table && l.Mark == r.Mark {
				return "pinned flows of link " + l.Name
			}
		}
		return fmt.Sprintf("pinned flows of fwmark %#x", r.Mark)
	case off == plan.OffMain:
		return "connected and more specific routes in main, before the balance table"
	case off == plan.OffPolicy:
		return "flows from before apply, routed by main until pinned, and new flows a traffic rule sends to main (policy main, never pinned)"
	case off == plan.OffPrefix && r.Src.IsValid():
		for _, l := range c.Links {
			if l.Table == r.Table {
				return fmt.Sprintf("flows from link %s's own prefix %s (prefixes6) leave by it", l.Name, r.Src)
			}
		}
		return fmt.Sprintf("flows from prefix %s (prefixes6) leave by its link", r.Src)
	case off > plan.OffPolicy && off < plan.OffSkipSource:
		return fmt.Sprintf("new flows a traffic rule sent to a policy (fwmark %#x)", r.Mark)
	case off >= plan.OffSource && off < plan.OffBalance:
		return "traffic from link " + name(off-plan.OffSource) + "'s address"
	case off == plan.OffBalance:
		return "new flows: the weighted multipath route"
	}
	return "outside flowpin's layout"
}

// MatchedRule names the rule behind a route answer the kernel gave: the
// first rule, in priority order, whose selectors match p and whose lookup
// could have produced an entry of prefix length plen in table. It follows
// goto and skips nop; a suppress_prefixlength rule whose answer would have
// been suppressed is passed over, as fib4_rule_suppress does.
func MatchedRule(all []rules.RuleInfo, p rules.Packet, table, plen int) (rules.RuleInfo, bool) {
	for i := 0; i < len(all); i++ {
		r := all[i]
		if !r.Matches(p) {
			continue
		}
		switch r.Action {
		case rules.ActionGoto:
			j := i + 1
			for j < len(all) && all[j].Priority < r.Goto {
				j++
			}
			i = j - 1
		case rules.ActionToTable:
			if r.Table != table {
				continue
			}
			if r.SuppressPrefixlen >= 0 && plen <= r.SuppressPrefixlen {
				continue
			}
			return r, true
		case rules.ActionNop:
		default:
			if r.Terminal() {
				return r, false
			}
		}
	}
	return rules.RuleInfo{}, false
}
