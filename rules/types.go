// Package rules is flowpin's netlink side: per-link routing tables, ip
// rules, the weighted multipath route and the sysctls they need. It reads
// what the kernel has, diffs it against what is wanted and changes only the
// difference. Everything it writes carries Protocol, and it never touches a
// rule or route that does not.
package rules

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"al.essio.dev/pkg/shellescape"
	"golang.org/x/sys/unix"
)

// Protocol tags every rule and route flowpin writes (FRA_PROTOCOL /
// rtm_protocol). 201 is unassigned in /etc/iproute2/rt_protos (99 is openr,
// 186-188 are bird/babel/bgp...), so `down` can find exactly what it added.
const Protocol = 201

// Family values, the kernel's own.
const (
	V4 = unix.AF_INET
	V6 = unix.AF_INET6
)

// Rule is one ip rule. Zero-valued selectors match everything.
type Rule struct {
	Family   int
	Priority int
	Src      netip.Prefix // invalid: from all
	Mark     uint32
	Mask     uint32 // 0: no fwmark selector
	// Iif: only packets that came in on this interface ("lo": generated
	// by this host). "": any.
	Iif string
	// Invert: the rule applies to packets its selectors do NOT match.
	Invert bool
	Table  int
	// Goto, if not 0, is the priority a matching packet jumps to instead
	// of looking up Table (which is then 0).
	Goto int
	// SuppressPrefixlen hides routes with a prefix this short or shorter
	// (0: the default route). -1: no suppressor.
	SuppressPrefixlen int
}

// Nexthop is one leg of a multipath route.
type Nexthop struct {
	Dev    string
	Gw     netip.Addr
	Weight int // 1..256
}

// Spec renders the leg as `ip route` arguments after "nexthop". A leg
// without Gw is a point-to-point interface's: everything sent out of it
// reaches the peer, with no link-layer next hop to resolve.
func (nh Nexthop) Spec() string {
	via := ""
	if nh.Gw.IsValid() {
		via = fmt.Sprintf("via %s ", nh.Gw)
	}
	return fmt.Sprintf("%sdev %s weight %d", via, shellescape.Quote(nh.Dev), nh.Weight)
}

// Scope of a route, as the kernel has it.
type Scope uint8

const (
	ScopeUniverse Scope = unix.RT_SCOPE_UNIVERSE
	ScopeLink     Scope = unix.RT_SCOPE_LINK
)

// Route is one route in one of flowpin's tables. A route with Nexthops is
// multipath and has no Dev/Gw of its own.
type Route struct {
	Family   int
	Table    int
	Dst      netip.Prefix
	Dev      string
	Gw       netip.Addr
	Src      netip.Addr
	Scope    Scope
	Nexthops []Nexthop
	// Type is "" for a unicast route, or "unreachable" or "blackhole":
	// a route that answers with an error (ICMP unreachable) or drops.
	Type string
}

// Key identifies a route within the kernel: one route per table and prefix
// (flowpin never writes metrics or TOS).
func (r Route) Key() string { return fmt.Sprintf("%d/%d/%s", r.Family, r.Table, r.Dst) }

// Equal compares every attribute flowpin sets.
func (r Route) Equal(o Route) bool {
	return r.Family == o.Family && r.Table == o.Table && r.Dst == o.Dst && r.Dev == o.Dev &&
		r.Gw == o.Gw && r.Src == o.Src && r.Scope == o.Scope && slices.Equal(r.Nexthops, o.Nexthops) && r.Type == o.Type
}

// State is the routing part of what flowpin wants, or of what it finds.
type State struct {
	Rules  []Rule
	Routes []Route
}

func ipCmd(family int) string {
	if family == V6 {
		return "ip -6"
	}
	return "ip"
}

// Selector renders the rule the way `ip rule` prints it, after the priority.
func (r Rule) Selector() string {
	var b strings.Builder
	if r.Invert {
		b.WriteString("not ")
	}
	if r.Src.IsValid() {
		fmt.Fprintf(&b, "from %s", r.Src.Masked())
		if r.Src.IsSingleIP() {
			b.Reset()
			fmt.Fprintf(&b, "from %s", r.Src.Addr())
		}
	} else {
		b.WriteString("from all")
	}
	if r.Mask != 0 {
		fmt.Fprintf(&b, " fwmark %#x/%#x", r.Mark, r.Mask)
	}
	if r.Iif != "" {
		fmt.Fprintf(&b, " iif %s", shellescape.Quote(r.Iif))
	}
	if r.Goto != 0 {
		fmt.Fprintf(&b, " goto %d", r.Goto)
		return b.String()
	}
	fmt.Fprintf(&b, " lookup %s", TableName(r.Table))
	if r.SuppressPrefixlen >= 0 {
		fmt.Fprintf(&b, " suppress_prefixlength %d", r.SuppressPrefixlen)
	}
	return b.String()
}

// Command is the `ip rule` command that adds (verb "add") or deletes the rule.
func (r Rule) Command(verb string) string {
	return fmt.Sprintf("%s rule %s pref %d %s proto %d", ipCmd(r.Family), verb, r.Priority, r.Selector(), Protocol)
}

// TableName is a table as `ip` names it.
func TableName(t int) string {
	switch t {
	case unix.RT_TABLE_MAIN:
		return "main"
	case unix.RT_TABLE_LOCAL:
		return "local"
	case unix.RT_TABLE_DEFAULT:
		return "default"
	}
	return fmt.Sprint(t)
}

// Spec renders the route as `ip route` arguments (without the verb).
func (r Route) Spec() string {
	var b strings.Builder
	if r.Type != "" {
		b.WriteString(r.Type + " ")
	}
	if r.Dst.Bits() == 0 {
		b.WriteString("default")
	} else {
		b.WriteString(r.Dst.String())
	}
	if r.Gw.IsValid() {
		fmt.Fprintf(&b, " via %s", r.Gw)
	}
	if r.Dev != "" {
		fmt.Fprintf(&b, " dev %s", shellescape.Quote(r.Dev))
	}
	fmt.Fprintf(&b, " table %s proto %d", TableName(r.Table), Protocol)
	if r.Scope == ScopeLink {
		b.WriteString(" scope link")
	}
	if r.Src.IsValid() {
		fmt.Fprintf(&b, " src %s", r.Src)
	}
	for _, nh := range r.Nexthops {
		b.WriteString(" nexthop " + nh.Spec())
	}
	return b.String()
}

// Command is the `ip route` command for verb ("replace", "del").
func (r Route) Command(verb string) string {
	if verb == "del" {
		// A delete needs only the key and the tag.
		dst := "default"
		if r.Dst.Bits() != 0 {
			dst = r.Dst.String()
		}
		return fmt.Sprintf("%s route del %s table %s proto %d", ipCmd(r.Family), dst, TableName(r.Table), Protocol)
	}
	return fmt.Sprintf("%s route %s %s", ipCmd(r.Family), verb, r.Spec())
}

// Sysctl is one /proc/sys value. Key is the path below /proc/sys with
// slashes ("net/ipv4/conf/eth0.100/rp_filter"), so interface names with dots
// stay unambiguous.
type Sysctl struct {
	Key   string
	Value string
}

// Name is the dotted form sysctl(8) takes: dots separate path elements, and
// a dot inside an element (a VLAN interface) becomes a slash.
func (s Sysctl) Name() string {
	parts := strings.Split(s.Key, "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, ".", "/")
	}
	return strings.Join(parts, ".")
}

// Command is the sysctl(8) command that sets it, one shell word per
// argument: an interface name may hold any character but '/', ':' and
// white space (dev_valid_name, net/core/dev.c), ';' and '$(' included.
// sysctl(8) splits its argument at the first '=', so a key with one in
// it is written through /proc/sys instead.
func (s Sysctl) Command() string {
	if strings.Contains(s.Key, "=") {
		return fmt.Sprintf("echo %s | tee %s", shellescape.Quote(s.Value), shellescape.Quote("/proc/sys/"+s.Key))
	}
	return "sysctl -w " + shellescape.Quote(s.Name()+"="+s.Value)
}
