package rules

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Kernel is a netlink handle on the network namespace flowpin runs in,
// plus /proc/sys as that namespace sees it.
type Kernel struct {
	h       *netlink.Handle
	sysRoot string
	// Writes counts every change sent to the kernel, for the
	// "a second apply writes nothing" check.
	Writes int
}

// Open returns a handle on the caller's network namespace.
func Open() (*Kernel, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return &Kernel{h: h, sysRoot: "/proc/sys"}, nil
}

// Close releases the netlink socket.
func (k *Kernel) Close() { k.h.Close() }

// Iface is what the planner needs to know about an interface.
type Iface struct {
	Name  string
	Index int
	Up    bool // administratively up and with carrier
	Addrs []netip.Prefix
	// Gateways are the next hops of main's default routes through this
	// interface, as a DHCP or PPP client installs them (gateway: auto).
	Gateways []netip.Addr
}

// retry reruns a dump that the kernel interrupted (a change raced it), so
// callers never work from partial data.
func retry[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range 10 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// Interfaces lists every interface with its global IPv4 and IPv6 addresses.
func (k *Kernel) Interfaces() (map[string]Iface, error) {
	links, err := retry(k.h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := make(map[string]Iface, len(links))
	byIndex := map[int]string{}
	for _, l := range links {
		a := l.Attrs()
		up := a.Flags&net.FlagUp != 0 && a.OperState != netlink.OperDown && a.OperState != netlink.OperLowerLayerDown
		out[a.Name] = Iface{Name: a.Name, Index: a.Index, Up: up}
		byIndex[a.Index] = a.Name
	}
	addrs, err := retry(func() ([]netlink.Addr, error) { return k.h.AddrList(nil, unix.AF_UNSPEC) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		name, ok := byIndex[a.LinkIndex]
		if !ok || a.IPNet == nil || a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		i := out[name]
		i.Addrs = append(i.Addrs, netip.PrefixFrom(ip.Unmap(), ones))
		out[name] = i
	}
	mainRoutes, err := retry(func() ([]netlink.Route, error) {
		return k.h.RouteListFiltered(V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range mainRoutes {
		if r.Protocol == Protocol || (r.Dst != nil && prefixOf(r.Dst).Bits() != 0) {
			continue
		}
		add := func(idx int, gw net.IP) {
			if name, ok := byIndex[idx]; ok && gw != nil {
				i := out[name]
				i.Gateways = append(i.Gateways, addrOf(gw))
				out[name] = i
			}
		}
		add(r.LinkIndex, r.Gw)
		for _, nh := range r.MultiPath {
			add(nh.LinkIndex, nh.Gw)
		}
	}
	return out, nil
}

// Owned reads back every rule and route that carries flowpin's tag.
func (k *Kernel) Owned() (State, error) {
	var s State
	owned, _, err := k.ReadRules()
	if err != nil {
		return s, err
	}
	s.Rules = owned
	names, err := k.ifaceNames()
	if err != nil {
		return s, err
	}
	for _, fam := range []int{V4, V6} {
		filter := &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: Protocol}
		rs, err := retry(func() ([]netlink.Route, error) {
			return k.h.RouteListFiltered(fam, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		})
		if err != nil {
			return s, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range rs {
			s.Routes = append(s.Routes, fromNetlinkRoute(r, names))
		}
	}
	return s, nil
}

// ForeignRule is an ip rule flowpin does not own, as `ip rule` prints it.
type ForeignRule struct {
	Rule
	Text string
}

// ForeignRules lists the ip rules flowpin does not own.
func (k *Kernel) ForeignRules() ([]ForeignRule, error) {
	_, foreign, err := k.ReadRules()
	return foreign, err
}

// ReadRules returns flowpin's rules and everyone else's.
func (k *Kernel) ReadRules() (owned []Rule, foreign []ForeignRule, err error) {
	for _, fam := range []int{V4, V6} {
		rs, err := retry(func() ([]netlink.Rule, error) { return k.h.RuleList(fam) })
		if err != nil {
			return nil, nil, fmt.Errorf("list rules: %w", err)
		}
		for _, r := range rs {
			fr := fromNetlinkRule(r, fam)
			if r.Protocol == Protocol {
				owned = append(owned, fr)
				continue
			}
			foreign = append(foreign, ForeignRule{Rule: fr, Text: foreignText(r, fr)})
		}
	}
	return owned, foreign, nil
}

func foreignText(r netlink.Rule, fr Rule) string {
	text := fmt.Sprintf("%d: %s", fr.Priority, fr.Selector())
	if r.IifName != "" {
		text += " iif " + r.IifName
	}
	if r.OifName != "" {
		text += " oif " + r.OifName
	}
	if r.Dst != nil {
		text += " to " + r.Dst.String()
	}
	if r.Goto >= 0 {
		text += fmt.Sprintf(" goto %d", r.Goto)
	}
	return text
}

// ForeignRoutes lists, for each of tables that holds any, the routes
// flowpin does not own, as `ip route` would print them. One dump of every
// table, whatever the number of links.
func (k *Kernel) ForeignRoutes(tables []int) (map[int][]string, error) {
	names, err := k.ifaceNames()
	if err != nil {
		return nil, err
	}
	want := map[int]bool{}
	for _, t := range tables {
		want[t] = true
	}
	out := map[int][]string{}
	for _, fam := range []int{V4, V6} {
		filter := &netlink.Route{Table: unix.RT_TABLE_UNSPEC}
		rs, err := retry(func() ([]netlink.Route, error) {
			return k.h.RouteListFiltered(fam, filter, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range rs {
			if r.Protocol == Protocol || !want[r.Table] {
				continue
			}
			fr := fromNetlinkRoute(r, names)
			text := strings.TrimSuffix(fr.Spec(), fmt.Sprintf(" proto %d", Protocol)) + fmt.Sprintf(" proto %d", r.Protocol)
			out[r.Table] = append(out[r.Table], text)
		}
	}
	return out, nil
}

func (k *Kernel) ifaceNames() (map[int]string, error) {
	links, err := retry(k.h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	m := make(map[int]string, len(links))
	for _, l := range links {
		m[l.Attrs().Index] = l.Attrs().Name
	}
	return m, nil
}

func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones)
}

func addrOf(ip net.IP) netip.Addr {
	if ip == nil {
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func ipNet(p netip.Prefix) *net.IPNet {
	if !p.IsValid() {
		return nil
	}
	return &net.IPNet{IP: p.Masked().Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipOf(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return a.AsSlice()
}

func fromNetlinkRule(r netlink.Rule, fam int) Rule {
	out := Rule{Family: fam, Priority: r.Priority, Table: r.Table, SuppressPrefixlen: r.SuppressPrefixlen, Src: prefixOf(r.Src)}
	if r.Mask != nil {
		out.Mark, out.Mask = r.Mark, *r.Mask
	} else if r.Mark != 0 {
		out.Mark, out.Mask = r.Mark, 0xffffffff
	}
	return out
}

func toNetlinkRule(r Rule) *netlink.Rule {
	nr := netlink.NewRule()
	nr.Family = r.Family
	nr.Priority = r.Priority
	nr.Table = r.Table
	nr.Protocol = Protocol
	nr.Src = ipNet(r.Src)
	if r.Mask != 0 {
		nr.Mark = r.Mark
		m := r.Mask
		nr.Mask = &m
	}
	nr.SuppressPrefixlen = r.SuppressPrefixlen
	return nr
}

func fromNetlinkRoute(r netlink.Route, names map[int]string) Route {
	out := Route{
		Family: r.Family,
		Table:  r.Table,
		Dst:    prefixOf(r.Dst),
		Gw:     addrOf(r.Gw),
		Src:    addrOf(r.Src),
		Scope:  Scope(r.Scope),
	}
	if !out.Dst.IsValid() {
		// The kernel reports the default route with no RTA_DST.
		if r.Family == V6 {
			out.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		} else {
			out.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		}
	}
	if r.LinkIndex != 0 {
		out.Dev = names[r.LinkIndex]
	}
	for _, nh := range r.MultiPath {
		out.Nexthops = append(out.Nexthops, Nexthop{Dev: names[nh.LinkIndex], Gw: addrOf(nh.Gw), Weight: nh.Hops + 1})
	}
	return out
}

func (k *Kernel) toNetlinkRoute(r Route) (*netlink.Route, error) {
	nr := &netlink.Route{
		Family:   r.Family,
		Table:    r.Table,
		Dst:      ipNet(r.Dst),
		Gw:       ipOf(r.Gw),
		Src:      ipOf(r.Src),
		Scope:    netlink.Scope(r.Scope),
		Protocol: Protocol,
	}
	if r.Dev != "" {
		l, err := k.h.LinkByName(r.Dev)
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", r.Dev, err)
		}
		nr.LinkIndex = l.Attrs().Index
	}
	for _, nh := range r.Nexthops {
		l, err := k.h.LinkByName(nh.Dev)
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", nh.Dev, err)
		}
		nr.MultiPath = append(nr.MultiPath, &netlink.NexthopInfo{LinkIndex: l.Attrs().Index, Gw: ipOf(nh.Gw), Hops: nh.Weight - 1})
	}
	return nr, nil
}

// OpKind says what an Op does.
type OpKind int

const (
	AddRule OpKind = iota
	DelRule
	ReplaceRoute
	DelRoute
)

// Op is one change to the kernel.
type Op struct {
	Kind  OpKind
	Rule  Rule
	Route Route
	// Old is the route a ReplaceRoute overwrites, to undo it.
	Old *Route
}

// Command renders the op as the `ip` command that does the same.
func (o Op) Command() string {
	switch o.Kind {
	case AddRule:
		return o.Rule.Command("add")
	case DelRule:
		return o.Rule.Command("del")
	case ReplaceRoute:
		return o.Route.Command("replace")
	default:
		return o.Route.Command("del")
	}
}

// Inverse is the op that undoes o.
func (o Op) Inverse() Op {
	switch o.Kind {
	case AddRule:
		return Op{Kind: DelRule, Rule: o.Rule}
	case DelRule:
		return Op{Kind: AddRule, Rule: o.Rule}
	case ReplaceRoute:
		if o.Old != nil {
			return Op{Kind: ReplaceRoute, Route: *o.Old, Old: &o.Route}
		}
		return Op{Kind: DelRoute, Route: o.Route}
	default:
		return Op{Kind: ReplaceRoute, Route: o.Route}
	}
}

// Diff lists the ops that turn cur into want, in a safe order: routes
// first (a table is filled before a rule points at it), new rules before
// old ones go (nothing is briefly unrouted), stale routes last.
func Diff(cur, want State) []Op {
	var ops []Op
	curRoutes := map[string]Route{}
	for _, r := range cur.Routes {
		curRoutes[r.Key()] = r
	}
	wantRoutes := map[string]bool{}
	for _, r := range want.Routes {
		wantRoutes[r.Key()] = true
		old, ok := curRoutes[r.Key()]
		switch {
		case !ok:
			ops = append(ops, Op{Kind: ReplaceRoute, Route: r})
		case !old.Equal(r):
			o := old
			ops = append(ops, Op{Kind: ReplaceRoute, Route: r, Old: &o})
		}
	}
	for _, r := range want.Rules {
		if !slices.Contains(cur.Rules, r) {
			ops = append(ops, Op{Kind: AddRule, Rule: r})
		}
	}
	for _, r := range cur.Rules {
		if !slices.Contains(want.Rules, r) {
			ops = append(ops, Op{Kind: DelRule, Rule: r})
		}
	}
	for _, r := range cur.Routes {
		if !wantRoutes[r.Key()] {
			ops = append(ops, Op{Kind: DelRoute, Route: r})
		}
	}
	return ops
}

// Do sends one op. An add of something already there and a delete of
// something already gone are not errors.
func (k *Kernel) Do(o Op) error {
	k.Writes++
	switch o.Kind {
	case AddRule:
		err := k.h.RuleAdd(toNetlinkRule(o.Rule))
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return wrap(o, err)
	case DelRule:
		err := k.h.RuleDel(toNetlinkRule(o.Rule))
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return wrap(o, err)
	case ReplaceRoute:
		nr, err := k.toNetlinkRoute(o.Route)
		if err != nil {
			return wrap(o, err)
		}
		return wrap(o, k.h.RouteReplace(nr))
	default:
		// RT_SCOPE_NOWHERE matches any scope, as `ip route del` sends.
		nr := &netlink.Route{Family: o.Route.Family, Table: o.Route.Table, Dst: ipNet(o.Route.Dst), Protocol: Protocol, Scope: unix.RT_SCOPE_NOWHERE}
		err := k.h.RouteDel(nr)
		if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return wrap(o, err)
	}
}

func wrap(o Op, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", o.Command(), err)
}

// ReadSysctl returns the value of s.Key, trimmed.
func (k *Kernel) ReadSysctl(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join(k.sysRoot, key))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// WriteSysctl sets s.
func (k *Kernel) WriteSysctl(s Sysctl) error {
	k.Writes++
	if err := os.WriteFile(filepath.Join(k.sysRoot, s.Key), []byte(s.Value), 0o644); err != nil {
		return fmt.Errorf("%s: %w", s.Command(), err)
	}
	return nil
}
