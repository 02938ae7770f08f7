package rules

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel is a netlink handle on one network namespace, plus /proc/sys as
// that namespace sees it. Every request, the ones netlink.Handle has no
// method for included, goes out on a socket opened in that namespace, so a
// Kernel works the same from any thread.
type Kernel struct {
	h  *netlink.Handle
	ns netns.NsHandle
	// route is a NETLINK_ROUTE socket in ns for the requests built here
	// (the full rule dump, RTM_GETROUTE with ports).
	route   *nl.SocketHandle
	sysRoot string
	// Writes counts every change sent to the kernel, for the
	// "a second apply writes nothing" check.
	Writes int
}

// Open returns a handle on the network namespace of the calling thread.
func Open() (*Kernel, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	defer ns.Close()
	return OpenAt(ns)
}

// OpenAt returns a handle on network namespace ns, whichever namespace the
// calling thread is in. The caller may close ns afterwards.
func OpenAt(ns netns.NsHandle) (*Kernel, error) {
	fd, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	own := netns.NsHandle(fd)
	h, err := netlink.NewHandleAt(own, unix.NETLINK_ROUTE)
	if err != nil {
		own.Close()
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	s, err := nl.GetNetlinkSocketAt(own, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		own.Close()
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	// Same limits as netlink's own one-shot sockets: a kernel that never
	// answers is an error, not a hang.
	if err := errors.Join(s.SetSendTimeout(&nl.SocketTimeoutTv), s.SetReceiveTimeout(&nl.SocketTimeoutTv)); err != nil {
		s.Close()
		h.Close()
		own.Close()
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return &Kernel{h: h, ns: own, route: &nl.SocketHandle{Socket: s}, sysRoot: "/proc/sys"}, nil
}

// Close releases the netlink sockets and the namespace.
func (k *Kernel) Close() {
	k.h.Close()
	k.route.Close()
	k.ns.Close()
}

// request is a netlink request that goes out on k's own socket.
func (k *Kernel) request(proto, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(proto, flags)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: k.route}
	return req
}

// Iface is what the planner needs to know about an interface.
type Iface struct {
	Name  string
	Index int
	Up    bool // administratively up and with carrier
	Addrs []netip.Prefix
	// Gateways are the next hops of main's default routes through this
	// interface, as a DHCP or PPP client or router advertisements install
	// them (gateway: auto, gateway6: auto), IPv4 and IPv6.
	Gateways []netip.Addr
	// PointToPoint: IFF_POINTOPOINT (ppp, WireGuard, tun). Such a link has
	// no link-layer next hop: anything routed out of it reaches the peer,
	// and its default route is `default dev IF`.
	PointToPoint bool
	// Peers are the peer prefixes of its point-to-point IPv4 addresses
	// (`inet 100.64.0.2 peer 100.64.0.1/32`), by local address.
	Peers map[netip.Addr]netip.Prefix
	// Neighbours are the link-layer addresses of its resolved neighbours
	// (both families), as `ip neigh` prints them: a link that shares the
	// interface with another knows its gateway's packets by them.
	Neighbours map[netip.Addr]string
	// Delegated are the IPv6 prefixes a DHCPv6-PD client holds for the
	// site, by the route it installs for each in main: `unreachable P
	// proto dhcp`, on lo (dhcpcd, systemd-networkd), so that the parts
	// not assigned to a LAN are not routed back upstream.
	Delegated []netip.Prefix
	// Tentative are the IPv6 addresses of Addrs in duplicate address
	// detection (IFA_F_TENTATIVE, for about a second after they are
	// added), and DADFailed those that failed it (IFA_F_DADFAILED:
	// another host on the link has the address). The kernel sends from
	// neither (ipv6_dev_get_saddr skips them, and a failed one stays
	// tentative for good).
	Tentative, DADFailed []netip.Addr
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
		out[a.Name] = Iface{Name: a.Name, Index: a.Index, Up: up, PointToPoint: a.Flags&net.FlagPointToPoint != 0}
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
		switch {
		case a.Flags&unix.IFA_F_DADFAILED != 0:
			i.DADFailed = append(i.DADFailed, ip.Unmap())
		case a.Flags&unix.IFA_F_TENTATIVE != 0:
			i.Tentative = append(i.Tentative, ip.Unmap())
		}
		if peer := prefixOf(a.Peer); peer.IsValid() && peer.Addr().Is4() {
			if i.Peers == nil {
				i.Peers = map[netip.Addr]netip.Prefix{}
			}
			i.Peers[ip.Unmap()] = peer
		}
		out[name] = i
	}
	var mainRoutes []netlink.Route
	for _, fam := range []int{V4, V6} {
		rs, err := retry(func() ([]netlink.Route, error) {
			return k.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		mainRoutes = append(mainRoutes, rs...)
	}
	for _, r := range mainRoutes {
		if p := prefixOf(r.Dst); r.Type == unix.RTN_UNREACHABLE && r.Protocol == unix.RTPROT_DHCP && p.IsValid() && p.Addr().Is6() {
			if name, ok := byIndex[r.LinkIndex]; ok {
				i := out[name]
				i.Delegated = append(i.Delegated, p)
				out[name] = i
			}
			continue
		}
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
	for _, fam := range []int{V4, V6} {
		ns, err := retry(func() ([]netlink.Neigh, error) { return k.h.NeighList(0, fam) })
		if err != nil {
			return nil, fmt.Errorf("list neighbours: %w", err)
		}
		for _, n := range ns {
			name, ok := byIndex[n.LinkIndex]
			if !ok || len(n.HardwareAddr) == 0 || !addrOf(n.IP).IsValid() || !(Neighbour{State: neighState(n.State)}).Usable() {
				continue
			}
			i := out[name]
			if i.Neighbours == nil {
				i.Neighbours = map[netip.Addr]string{}
			}
			i.Neighbours[addrOf(n.IP)] = n.HardwareAddr.String()
			out[name] = i
		}
	}
	return out, nil
}

// Owned reads back every rule and route that carries flowpin's tag.
func (k *Kernel) Owned() (State, error) {
	var s State
	all, err := k.allRules()
	if err != nil {
		return s, err
	}
	for _, r := range all {
		if r.Owned() {
			s.Rules = append(s.Rules, r.Rule())
		}
	}
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

// ForeignRule is an ip rule flowpin does not own. Rule holds its
// priority, source, mark and table (0 for a goto or a blackhole: it looks
// up no table); Info all of it.
type ForeignRule struct {
	Rule
	Info RuleInfo
	// Text is the rule as `ip rule` prints it, on one line.
	Text string
}

// ForeignRules lists the ip rules flowpin does not own, IPv4 then IPv6.
func (k *Kernel) ForeignRules() ([]ForeignRule, error) {
	all, err := k.allRules()
	if err != nil {
		return nil, err
	}
	var out []ForeignRule
	for _, r := range all {
		if !r.Owned() {
			out = append(out, ForeignRule{Rule: r.Rule(), Info: r, Text: strings.Replace(r.String(), ":\t", ": ", 1)})
		}
	}
	return out, nil
}

// allRules is every ip rule, IPv4 then IPv6, each sorted by priority.
func (k *Kernel) allRules() ([]RuleInfo, error) {
	var all []RuleInfo
	for _, fam := range []int{V4, V6} {
		rs, err := k.ListRules(fam)
		if err != nil {
			return nil, err
		}
		all = append(all, rs...)
	}
	return all, nil
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
	nr.IifName = r.Iif
	nr.Invert = r.Invert
	if r.Goto != 0 {
		nr.Goto = r.Goto
	}
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
	switch r.Type {
	case unix.RTN_UNREACHABLE:
		out.Type = "unreachable"
	case unix.RTN_BLACKHOLE:
		out.Type = "blackhole"
	}
	if out.Type != "" {
		// IPv6 hangs reject routes on the loopback device; they have none.
		r.LinkIndex = 0
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
	switch r.Type {
	case "unreachable":
		nr.Type = unix.RTN_UNREACHABLE
	case "blackhole":
		nr.Type = unix.RTN_BLACKHOLE
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

// ReadSysctl returns the value of key (a path below /proc/sys), trimmed,
// as k's namespace has it.
func (k *Kernel) ReadSysctl(key string) (string, error) {
	var b []byte
	err := k.inNS(func() (err error) {
		b, err = os.ReadFile(filepath.Join(k.sysRoot, key))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// WriteSysctl sets s in k's namespace.
func (k *Kernel) WriteSysctl(s Sysctl) error {
	k.Writes++
	err := k.inNS(func() error { return os.WriteFile(filepath.Join(k.sysRoot, s.Key), []byte(s.Value), 0o644) })
	if err != nil {
		return fmt.Errorf("%s: %w", s.Command(), err)
	}
	return nil
}

// inNS runs fn where /proc/sys/net shows k's namespace. /proc/sys/net
// belongs to the namespace of the thread that opens a file in it
// (Documentation/admin-guide/sysctl/net.rst), so when the calling thread is
// elsewhere fn runs on a thread moved into k's namespace and thrown away
// afterwards.
func (k *Kernel) inNS(fn func() error) error {
	if here, err := netns.Get(); err == nil {
		same := here.Equal(k.ns)
		here.Close()
		if same {
			return fn()
		}
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime ends the thread with the goroutine,
		// so nothing else ever runs in k's namespace by accident.
		runtime.LockOSThread()
		if err := netns.Set(k.ns); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
