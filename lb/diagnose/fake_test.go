package diagnose

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
	"flowpin/lb/plan"
	"flowpin/nft"
	"flowpin/nft/ct"
	"flowpin/rules"
)

// fakeRoute is one route of the model; Owned: it carries flowpin's tag.
type fakeRoute struct {
	rules.Route
	Type  uint8 // 0: unicast
	Owned bool
}

// fakeKernel is a small model of one network namespace: interfaces, ip
// rules, routing tables, sysctls, neighbours, flowpin's nft table and
// conntrack. RouteGet walks the rules in priority order as the kernel's
// fib rules do (goto, suppress_prefixlength, blackhole/unreachable/
// prohibit) and takes the longest prefix in a table; a multipath route
// picks a leg by a hash of the 5-tuple. It is safe for concurrent use.
type fakeKernel struct {
	mu      sync.Mutex
	ifaces  map[string]rules.Iface
	rules   []rules.RuleInfo
	routes  []fakeRoute
	sysctls map[string]string
	neigh   map[string]rules.Neighbour // "dev ip"
	nft     *nft.Current
	writers []nft.MarkWriter
	flows   []ct.Flow
	// sticky: "map addr" -> the link's mark and the time left.
	sticky map[string]stuck

	// neighDelay makes every Neighbour call take that long; inNeigh and
	// peakNeigh count the calls under way at once.
	neighDelay         time.Duration
	inNeigh, peakNeigh int
	probes             int
}

var (
	_ Routing = (*fakeKernel)(nil)
	_ Tables  = (*fakeKernel)(nil)
	_ Flows   = (*fakeKernel)(nil)
)

func (f *fakeKernel) kernel() *Kernel {
	return &Kernel{Routes: f, NFT: f, CT: f, ProbeGateway: f.probe}
}

func (f *fakeKernel) Interfaces() (map[string]rules.Iface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]rules.Iface, len(f.ifaces))
	for k, v := range f.ifaces {
		out[k] = v
	}
	return out, nil
}

func (f *fakeKernel) Owned() (rules.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s rules.State
	for _, r := range f.rules {
		if r.Owned() {
			s.Rules = append(s.Rules, r.Rule())
		}
	}
	for _, r := range f.routes {
		if r.Owned {
			s.Routes = append(s.Routes, r.Route)
		}
	}
	return s, nil
}

func (f *fakeKernel) ForeignRoutes(tables []int) (map[int][]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int][]string{}
	for _, r := range f.routes {
		if !r.Owned && slices.Contains(tables, r.Table) {
			out[r.Table] = append(out[r.Table], r.Spec())
		}
	}
	return out, nil
}

func (f *fakeKernel) ListRules(family int) ([]rules.RuleInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []rules.RuleInfo
	for _, r := range f.rules {
		if r.Family == family {
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(a, b rules.RuleInfo) int { return a.Priority - b.Priority })
	return out, nil
}

func (f *fakeKernel) ReadSysctl(key string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.sysctls[key]
	if !ok {
		return "", fmt.Errorf("read sysctl %s: %w", key, unix.ENOENT)
	}
	return v, nil
}

func (f *fakeKernel) Neighbour(dev string, ip netip.Addr) (rules.Neighbour, error) {
	f.mu.Lock()
	f.inNeigh++
	f.peakNeigh = max(f.peakNeigh, f.inNeigh)
	n, ok := f.neigh[dev+" "+ip.String()]
	delay := f.neighDelay
	f.mu.Unlock()
	time.Sleep(delay)
	f.mu.Lock()
	f.inNeigh--
	f.mu.Unlock()
	if !ok {
		return rules.Neighbour{State: "none"}, nil
	}
	return n, nil
}

// probe stands in for the UDP datagram: it counts, and nothing answers.
func (f *fakeKernel) probe(string, netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probes++
	return nil
}

func (f *fakeKernel) Read() (*nft.Current, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nft, nil
}

type stuck struct {
	mark uint32
	left time.Duration
}

func (f *fakeKernel) StuckTo(m string, a netip.Addr) (uint32, time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sticky[m+" "+a.String()]
	return s.mark, s.left, nil
}

func (f *fakeKernel) ForeignMarkWriters(mask uint32) ([]nft.MarkWriter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []nft.MarkWriter
	for _, w := range f.writers {
		if w.Bits&mask != 0 {
			out = append(out, w)
		}
	}
	return out, nil
}

// Lookup finds the flow whose original or reply tuple is t, as the kernel
// does for a packet of either direction.
func (f *fakeKernel) Lookup(t ct.Tuple) (*ct.Flow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fl := range f.flows {
		switch t {
		case fl.Orig:
			fl.IsReply = false
			return &fl, nil
		case fl.Reply:
			fl.IsReply = true
			return &fl, nil
		}
	}
	return nil, nil
}

func (f *fakeKernel) RouteGet(q rules.Query) (rules.Answer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, err := f.routeGet(q)
	if err != nil {
		return a, fmt.Errorf("ip route get %s: %w", q.Args(), err)
	}
	return a, nil
}

func (f *fakeKernel) isLocal(a netip.Addr) bool {
	for _, ifc := range f.ifaces {
		for _, p := range ifc.Addrs {
			if p.Addr() == a {
				return true
			}
		}
	}
	return false
}

func (f *fakeKernel) routeGet(q rules.Query) (rules.Answer, error) {
	if q.Iif != "" && f.sysctls["net/ipv4/ip_forward"] != "1" {
		return rules.Answer{}, unix.EHOSTUNREACH
	}
	if q.Iif == "" && q.Src.IsValid() && !f.isLocal(q.Src) {
		return rules.Answer{}, unix.ENETUNREACH
	}
	all := slices.Clone(f.rules)
	slices.SortStableFunc(all, func(a, b rules.RuleInfo) int { return a.Priority - b.Priority })
	pkt := packetOf(q)
	for i := 0; i < len(all); i++ {
		r := all[i]
		if r.Family != familyOf(q.Dst) || !r.Matches(pkt) {
			continue
		}
		switch r.Action {
		case rules.ActionGoto:
			for i+1 < len(all) && all[i+1].Priority < r.Goto {
				i++
			}
		case rules.ActionBlackhole:
			return rules.Answer{}, unix.EINVAL
		case rules.ActionUnreachable:
			return rules.Answer{}, unix.EHOSTUNREACH
		case rules.ActionProhibit:
			return rules.Answer{}, unix.EACCES
		case rules.ActionToTable:
			rt, ok := f.lookup(r.Table, q.Dst)
			if !ok || (r.SuppressPrefixlen >= 0 && rt.Dst.Bits() <= r.SuppressPrefixlen) {
				continue
			}
			return f.answer(rt, q), nil
		}
	}
	return rules.Answer{}, unix.ENETUNREACH
}

// lookup is the longest prefix in table that holds dst.
func (f *fakeKernel) lookup(table int, dst netip.Addr) (fakeRoute, bool) {
	var best fakeRoute
	found := false
	for _, r := range f.routes {
		if r.Table == table && r.Dst.Contains(dst) && (!found || r.Dst.Bits() > best.Dst.Bits()) {
			best, found = r, true
		}
	}
	return best, found
}

func (f *fakeKernel) answer(rt fakeRoute, q rules.Query) rules.Answer {
	a := rules.Answer{Type: unix.RTN_UNICAST, Table: rt.Table, Dev: rt.Dev, Gw: rt.Gw, PrefSrc: rt.Src, Protocol: unix.RTPROT_BOOT}
	if rt.Type != 0 {
		a.Type = rt.Type
	}
	if rt.Owned {
		a.Protocol = rules.Protocol
	}
	if q.FIBMatch {
		a.Dst = rt.Dst
		a.Nexthops = rt.Nexthops
		if len(rt.Nexthops) > 0 {
			a.Dev, a.Gw = "", netip.Addr{}
		}
		return a
	}
	a.Dst = netip.PrefixFrom(q.Dst, q.Dst.BitLen())
	if len(rt.Nexthops) > 0 {
		h := fnv.New32a()
		fmt.Fprintf(h, "%s %s %d %d %d", q.Src, q.Dst, q.Proto, q.Sport, q.Dport)
		total := 0
		for _, nh := range rt.Nexthops {
			total += nh.Weight
		}
		pick := int(h.Sum32() % uint32(total))
		for _, nh := range rt.Nexthops {
			if pick < nh.Weight {
				a.Dev, a.Gw = nh.Dev, nh.Gw
				break
			}
			pick -= nh.Weight
		}
	}
	if !a.PrefSrc.IsValid() {
		if ifc, ok := f.ifaces[a.Dev]; ok && len(ifc.Addrs) > 0 {
			a.PrefSrc = ifc.Addrs[0].Addr()
		}
	}
	return a
}

// setRule replaces the rule of that family and priority, or adds it.
func (f *fakeKernel) setRule(r rules.RuleInfo) {
	f.delRule(r.Priority)
	f.rules = append(f.rules, r)
}

func (f *fakeKernel) delRule(prio int) {
	f.rules = slices.DeleteFunc(f.rules, func(x rules.RuleInfo) bool { return x.Priority == prio && x.Family == rules.V4 })
}

// route returns the route of table and dst, for a test to change.
func (f *fakeKernel) route(t *testing.T, table int, dst string) *fakeRoute {
	t.Helper()
	for i := range f.routes {
		if f.routes[i].Table == table && f.routes[i].Dst == netip.MustParsePrefix(dst) {
			return &f.routes[i]
		}
	}
	t.Fatalf("no route %s in table %d", dst, table)
	return nil
}

// lookupRule is an ip rule `[from src] lookup table`, not flowpin's.
func lookupRule(prio, table int) rules.RuleInfo {
	return rules.RuleInfo{Family: rules.V4, Priority: prio, Action: rules.ActionToTable, Table: table, Goto: -1, SuppressPrefixlen: -1, Protocol: unix.RTPROT_BOOT}
}

// ownedRule is a planned rule as the kernel reads it back.
func ownedRule(r rules.Rule) rules.RuleInfo {
	ri := rules.RuleInfo{Family: r.Family, Priority: r.Priority, Action: rules.ActionToTable, Table: r.Table, Goto: -1,
		Src: r.Src, Mark: r.Mark, Mask: r.Mask, Iif: r.Iif, Invert: r.Invert, SuppressPrefixlen: r.SuppressPrefixlen, Protocol: rules.Protocol}
	if r.Goto != 0 {
		ri.Action, ri.Goto = rules.ActionGoto, r.Goto
	}
	return ri
}

// applied is the namespace after `flowpin apply` of c: a router with a LAN
// (lan, 10.0.0.1/24) and one uplink per link (linkNet(i): .2 is the
// router, .1 the gateway), main's default via the first gateway, every
// gateway's neighbour reachable, flowpin's rules, routes, sysctls and nft
// table as planned.
func applied(t testing.TB, c *config.Config, ifaces map[string]rules.Iface) (*fakeKernel, *plan.Desired) {
	t.Helper()
	d, err := plan.Plan(c, ifaces)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeKernel{
		ifaces:  ifaces,
		sysctls: map[string]string{"net/ipv4/ip_forward": "1"},
		neigh:   map[string]rules.Neighbour{},
		nft:     d.NFT.Current(),
	}
	f.rules = []rules.RuleInfo{lookupRule(0, unix.RT_TABLE_LOCAL), lookupRule(32766, unix.RT_TABLE_MAIN), lookupRule(32767, unix.RT_TABLE_DEFAULT)}
	for _, r := range d.Routing.Rules {
		f.rules = append(f.rules, ownedRule(r))
	}
	for _, r := range d.Routing.Routes {
		f.routes = append(f.routes, fakeRoute{Route: r, Owned: true})
	}
	names := make([]string, 0, len(ifaces))
	for name := range ifaces {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, p := range ifaces[name].Addrs {
			f.routes = append(f.routes,
				fakeRoute{Route: rules.Route{Family: familyOf(p.Addr()), Table: unix.RT_TABLE_MAIN, Dst: p.Masked(), Dev: name, Src: p.Addr(), Scope: rules.ScopeLink}},
				fakeRoute{Route: rules.Route{Family: familyOf(p.Addr()), Table: unix.RT_TABLE_LOCAL, Dst: netip.PrefixFrom(p.Addr(), p.Addr().BitLen()), Dev: name, Src: p.Addr()}, Type: unix.RTN_LOCAL})
		}
	}
	for i, l := range d.Links {
		if i == 0 {
			f.routes = append(f.routes, fakeRoute{Route: rules.Route{Family: rules.V4, Table: unix.RT_TABLE_MAIN,
				Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: l.Interface, Gw: l.Gateway}})
		}
		f.neigh[l.Interface+" "+l.Gateway.String()] = rules.Neighbour{State: "reachable", MAC: fmt.Sprintf("02:00:00:00:00:%02x", i+1)}
	}
	for _, s := range slices.Concat(d.Sysctls, d.LateSysctls) {
		f.sysctls[s.Key] = s.Value
	}
	return f, d
}

// dualWAN is configtest.TwoLinks applied: isp1 on wan1 (192.0.2.2/24, gateway
// .1, weight 3), isp2 on wan2 (198.51.100.2/24, gateway .1), both NATed.
func dualWAN(t testing.TB) (*fakeKernel, *config.Config, *plan.Desired) {
	t.Helper()
	c := configtest.MustParse(t, configtest.TwoLinks)
	f, d := applied(t, c, map[string]rules.Iface{
		"lan":  {Name: "lan", Index: 2, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}},
		"wan1": {Name: "wan1", Index: 3, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24")}},
		"wan2": {Name: "wan2", Index: 4, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24")}},
	})
	return f, c, d
}

// manyLinks is n links, link i on wan<i> (10.<i+1>.0.2/24, gateway .1).
func manyLinks(t testing.TB, n int) (*fakeKernel, *config.Config) {
	t.Helper()
	y := "links:\n"
	ifaces := map[string]rules.Iface{"lan": {Name: "lan", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}}}
	for i := range n {
		dev := fmt.Sprintf("wan%d", i)
		y += fmt.Sprintf("  - name: l%d\n    interface: %s\n    gateway: 10.%d.0.1\n", i, dev, i+1)
		ifaces[dev] = rules.Iface{Name: dev, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.%d.0.2/24", i+1))}}
	}
	c := configtest.MustParse(t, y)
	f, _ := applied(t, c, ifaces)
	return f, c
}
