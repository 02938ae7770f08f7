package plan

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"flowpin/lb/config/configtest"
	"flowpin/rules"
)

var update = flag.Bool("update", false, "rewrite golden files")

func iface(name string, up bool, addrs ...string) rules.Iface {
	i := rules.Iface{Name: name, Up: up}
	for _, a := range addrs {
		i.Addrs = append(i.Addrs, netip.MustParsePrefix(a))
	}
	return i
}

func ifaces(list ...rules.Iface) map[string]rules.Iface {
	m := map[string]rules.Iface{}
	for _, i := range list {
		m[i.Name] = i
	}
	return m
}

var mustParse = configtest.MustParse

const twoLinks = configtest.TwoLinks

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, d)
	}
}

const serverConfig = `links:
  - {name: eth0, interface: eth0, gateway: 10.88.0.1}
  - {name: eth1, interface: eth1, gateway: 10.88.0.1}
`

// dualStack: isp1 with a global IPv6 gateway, isp2 with a link-local one
// (router advertisements) and two global addresses.
const dualStack = `links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, gateway6: '2001:db8:1::1', weight: 3, nat: true}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, gateway6: 'fe80::1', nat: true}
`

func dualStackIfaces() map[string]rules.Iface {
	return ifaces(iface("wan1", true, "192.0.2.2/24", "2001:db8:1::2/64"), iface("wan2", true, "198.51.100.2/24", "2001:db8:2::2/64", "2001:db8:2::99/64"), iface("lan", true, "10.77.0.1/24", "fd00::1/64"))
}

// pppoe: isp1 on Ethernet, isp2 a PPP session (`inet 100.64.0.2 peer
// 100.64.0.1/32`) with gateway: auto and no default route in main.
const pppoe = `links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, weight: 3, nat: true}
  - {name: isp2, interface: ppp0, gateway: auto, nat: true}
`

// pppoe6: pppoe with IPv6 on both links; the session's gateway6 is auto,
// which on a point-to-point link needs no next hop.
const pppoe6 = `links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, gateway6: '2001:db8:1::1', weight: 3, nat: true}
  - {name: isp2, interface: ppp0, gateway: auto, gateway6: auto, nat: true}
`

func pppoe6Ifaces(wan1Up bool) map[string]rules.Iface {
	ppp := p2p("ppp0", "100.64.0.2 100.64.0.1/32")
	// A session's IPv6: a random link-local address and a global one (DHCPv6-PD or SLAAC on the LAN side gives the rest).
	ppp.Addrs = append(ppp.Addrs, netip.MustParsePrefix("fe80::8d2:11ff:fe3a:5/64"), netip.MustParsePrefix("2001:db8:2::2/64"))
	return ifaces(iface("wan1", wan1Up, "192.0.2.2/24", "2001:db8:1::2/64"), ppp)
}

// p2p is a point-to-point interface with a peer for each of addrs
// ("100.64.0.2 100.64.0.1/32"; a lone prefix has none).
func p2p(name string, addrs ...string) rules.Iface {
	i := rules.Iface{Name: name, Up: true, PointToPoint: true, Peers: map[netip.Addr]netip.Prefix{}}
	for _, a := range addrs {
		local, peer, ok := strings.Cut(a, " ")
		if !ok {
			i.Addrs = append(i.Addrs, netip.MustParsePrefix(local))
			continue
		}
		i.Addrs = append(i.Addrs, netip.PrefixFrom(netip.MustParseAddr(local), 32))
		i.Peers[netip.MustParseAddr(local)] = netip.MustParsePrefix(peer)
	}
	return i
}

// twoModems: two ISP modems on one switch behind wan0, each doing its own
// NAT; both modems answer IPv6 too.
const twoModems = `links:
  - {name: modem1, interface: wan0, gateway: 192.168.1.1, gateway6: 'fe80::1', weight: 2, nat: true}
  - {name: modem2, interface: wan0, gateway: 192.168.1.254, gateway6: 'fe80::fe', nat: true}
  - {name: isp3, interface: wan3, gateway: 198.51.100.1, nat: true}
`

// twoModemsIfaces: wan0 with both modems resolved (modem1 answers IPv6
// from the same MAC), wan3 an ordinary link.
func twoModemsIfaces(resolved bool) map[string]rules.Iface {
	wan0 := iface("wan0", true, "192.168.1.2/24", "2001:db8:1::2/64")
	if resolved {
		wan0.Neighbours = map[netip.Addr]string{
			netip.MustParseAddr("192.168.1.1"):   "02:00:00:00:00:01",
			netip.MustParseAddr("fe80::1"):       "02:00:00:00:00:01",
			netip.MustParseAddr("192.168.1.254"): "02:00:00:00:00:fe",
			netip.MustParseAddr("fe80::fe"):      "02:00:00:00:00:ff",
			netip.MustParseAddr("192.168.1.77"):  "02:00:00:00:00:77",
		}
	}
	return ifaces(wan0, iface("wan3", true, "198.51.100.2/24"), iface("lan", true, "10.77.0.1/24"))
}

const server6Config = `links:
  - {name: eth0, interface: eth0, gateway6: '2001:db8:88::1'}
  - {name: eth1, interface: eth1, gateway6: '2001:db8:88::1'}
`

func TestPlanGolden(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config string
		ifaces map[string]rules.Iface
		warn   []string
	}{
		{"dualwan", twoLinks, ifaces(iface("wan1", true, "192.0.2.2/24", "2001:db8::2/64"), iface("wan2", true, "198.51.100.2/24"), iface("lan", true, "10.77.0.1/24")), nil},
		{"dualwan-isp2-down", twoLinks, ifaces(iface("wan1", true, "192.0.2.2/24"), iface("wan2", false, "198.51.100.2/24")),
			[]string{"link isp2 left out of the multipath route: interface wan2 is down"}},
		{"dualwan-no-address", twoLinks, ifaces(iface("wan1", false), iface("wan2", true)),
			[]string{"link isp1 left out of the multipath route: interface wan1 has no IPv4 address yet", "link isp2 left out of the multipath route: interface wan2 has no IPv4 address yet"}},
		{"server-one-subnet", serverConfig, ifaces(iface("eth0", true, "10.88.0.10/24"), iface("eth1", true, "10.88.0.11/24")), nil},
		{"dualstack", dualStack, dualStackIfaces(), nil},
		{"pppoe-auto", pppoe, ifaces(iface("wan1", true, "192.0.2.2/24"), p2p("ppp0", "100.64.0.2 100.64.0.1/32")), nil},
		// A tunnel with a subnet and no peer, and no default route in main.
		{"p2p-subnet-auto", pppoe, ifaces(iface("wan1", true, "192.0.2.2/24"), p2p("ppp0", "10.8.0.6/30")), nil},
		{"pppoe-peer-gateway", strings.Replace(pppoe, "gateway: auto", "gateway: 100.64.0.1", 1), ifaces(iface("wan1", true, "192.0.2.2/24"), p2p("ppp0", "100.64.0.2 100.64.0.1/32")), nil},
		// IPv6 over the session: `default dev ppp0` in its table and a
		// placeholder link-local next hop in the multipath route. No IPv6
		// check target: nothing to probe on ppp0, said in a warning.
		{"pppoe6", pppoe6, pppoe6Ifaces(true), []string{"link isp2: IPv6 on point-to-point ppp0 has no next hop to probe: flowpin run judges it down until links[1].check.targets has an IPv6 address"}},
		// The session alone: the lone IPv6 balance route is device-only.
		{"pppoe6-alone", pppoe6, pppoe6Ifaces(false), []string{"link isp1 left out of the multipath route: interface wan1 is down", "link isp1 left out of the IPv6 multipath route: interface wan1 is down", "link isp2: IPv6 on point-to-point ppp0 has no next hop to probe: flowpin run judges it down until links[1].check.targets has an IPv6 address"}},
		{"server6", server6Config, ifaces(iface("eth0", true, "2001:db8:88::10/64"), iface("eth1", true, "2001:db8:88::11/64")), nil},
		{"two-modems", twoModems, twoModemsIfaces(true), nil},
		// modem2 routes the router's public addresses: NAT by link, not by
		// interface, on wan0; wan3 keeps its interface in nat_oif.
		{"two-modems-mixed-nat", strings.Replace(twoModems, "'fe80::fe', nat: true", "'fe80::fe', nat: false", 1), twoModemsIfaces(true), nil},
		// Before the modems answer ARP/ND, no packet from wan0 is theirs.
		{"two-modems-unresolved", twoModems, twoModemsIfaces(false), []string{
			"link modem1: its gateway is not in the neighbour table of wan0 yet, so flows arriving from it (port forwards) are not pinned to it until it is (flowpin run follows the neighbour table; a one-off apply must be run again)",
			"link modem2: its gateway is not in the neighbour table of wan0 yet, so flows arriving from it (port forwards) are not pinned to it until it is (flowpin run follows the neighbour table; a one-off apply must be run again)",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Plan(mustParse(t, tc.config), tc.ifaces)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.warn, d.Warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			golden(t, tc.name+".golden", strings.Join(FullScript(d), "\n")+"\n")
		})
	}
}

// The order of the rules is the design; pin it independently of the
// golden text.
func TestPlanRuleOrder(t *testing.T) {
	d, err := Plan(mustParse(t, serverConfig), ifaces(iface("eth0", true, "10.88.0.10/24"), iface("eth1", true, "10.88.0.11/24")))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range d.Routing.Rules {
		got = append(got, r.Command("add"))
	}
	want := []string{
		"ip rule add pref 1000 not from all iif lo goto 1100 proto 201",
		"ip rule add pref 1001 from 10.88.0.10 lookup 101 suppress_prefixlength 0 proto 201",
		"ip rule add pref 1002 from 10.88.0.11 lookup 102 suppress_prefixlength 0 proto 201",
		"ip rule add pref 1100 from all fwmark 0x0/0xff00 goto 1300 proto 201",
		"ip rule add pref 1101 from all fwmark 0x100/0xff00 lookup 101 proto 201",
		"ip rule add pref 1102 from all fwmark 0x200/0xff00 lookup 102 proto 201",
		"ip rule add pref 1300 from all lookup main suppress_prefixlength 0 proto 201",
		"ip rule add pref 1301 from all fwmark 0xff00/0xff00 lookup main proto 201",
		"ip rule add pref 1400 not from all iif lo goto 1500 proto 201",
		"ip rule add pref 1401 from 10.88.0.10 lookup 101 proto 201",
		"ip rule add pref 1402 from 10.88.0.11 lookup 102 proto 201",
		"ip rule add pref 1500 from all lookup 100 proto 201",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
}

func TestPlanErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config string
		ifaces map[string]rules.Iface
		want   string
	}{
		{"missing interface", twoLinks, ifaces(iface("wan1", true, "192.0.2.2/24")), `f.yaml:8: links[1].interface: "wan2" does not exist`},
		{"gateway off-link", twoLinks, ifaces(iface("wan1", true, "192.0.2.2/24"), iface("wan2", true, "203.0.113.2/24")),
			"f.yaml:9: links[1].gateway: 198.51.100.1 is neither on a subnet of wan2 (its addresses: [203.0.113.2/24]) nor its peer (it is not point-to-point)"},
		{"gateway neither on a subnet nor the peer", strings.Replace(pppoe, "gateway: auto", "gateway: 100.64.0.9", 1), ifaces(iface("wan1", true, "192.0.2.2/24"), p2p("ppp0", "100.64.0.2 100.64.0.1/32")),
			"f.yaml:3: links[1].gateway: 100.64.0.9 is neither on a subnet of ppp0 (its addresses: [100.64.0.2/32]) nor its peer (100.64.0.1/32)"},
		{"shared interface, gateway neither on a subnet nor the peer", strings.Replace(twoModems, "192.168.1.254", "192.168.2.254", 1), twoModemsIfaces(true),
			"f.yaml:3: links[1].gateway: 192.168.2.254 is neither on a subnet of wan0 (its addresses: [192.168.1.2/24]) nor its peer (it is not point-to-point)"},
		{"two links on a point-to-point interface", strings.Replace(strings.Replace(twoModems, "wan0", "ppp0", 2), "gateway6: 'fe80::1', ", "", 1), ifaces(p2p("ppp0", "192.168.1.2/24"), iface("wan3", true, "198.51.100.2/24")),
			"f.yaml:2: links[0].interface: ppp0 is point-to-point: it has one peer, so it cannot carry two links told apart by their next hops"},
		{"gateway is own address", twoLinks, ifaces(iface("wan1", true, "192.0.2.1/24"), iface("wan2", true, "198.51.100.2/24")),
			"f.yaml:4: links[0].gateway: 192.0.2.1 is wan1's own address, not a next hop"},
		{"gateway is the broadcast address", strings.Replace(twoLinks, "198.51.100.1", "198.51.100.255", 1), ifaces(iface("wan1", true, "192.0.2.2/24"), iface("wan2", true, "198.51.100.2/24")),
			"f.yaml:9: links[1].gateway: 198.51.100.255 is the broadcast address of 198.51.100.0/24 on wan2, not a next hop"},
		{"gateway is the network address", strings.Replace(twoLinks, "192.0.2.1", "192.0.2.0", 1), ifaces(iface("wan1", true, "192.0.2.2/24"), iface("wan2", true, "198.51.100.2/24")),
			"f.yaml:4: links[0].gateway: 192.0.2.0 is the network address of 192.0.2.0/24 on wan1, not a next hop"},
		{"gateway is the broadcast address of a /30", strings.Replace(twoLinks, "192.0.2.1", "192.0.2.7", 1), ifaces(iface("wan1", true, "192.0.2.5/30"), iface("wan2", true, "198.51.100.2/24")),
			"f.yaml:4: links[0].gateway: 192.0.2.7 is the broadcast address of 192.0.2.4/30 on wan1, not a next hop"},
		{"gateway is the network address of a /25", strings.Replace(twoLinks, "192.0.2.1", "192.0.2.128", 1), ifaces(iface("wan1", true, "192.0.2.130/25"), iface("wan2", true, "198.51.100.2/24")),
			"f.yaml:4: links[0].gateway: 192.0.2.128 is the network address of 192.0.2.128/25 on wan1, not a next hop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Plan(mustParse(t, tc.config), tc.ifaces)
			if err == nil || err.Error() != tc.want {
				t.Errorf("error\n got: %v\nwant: %s", err, tc.want)
			}
		})
	}
}

// On a /31 both addresses are hosts (RFC 3021), so the "network" and
// "broadcast" addresses are next hops; on a /24 the .0 and .255 are not.
func TestPlanGatewayHostAddresses(t *testing.T) {
	for _, tc := range []struct {
		prefix, gw string
		ok         bool
	}{
		{"192.0.2.1/31", "192.0.2.0", true},
		{"192.0.2.0/31", "192.0.2.1", true},
		{"192.0.2.2/30", "192.0.2.1", true},
		{"192.0.2.2/30", "192.0.2.3", false},
		{"192.0.2.2/30", "192.0.2.0", false},
		{"10.0.0.2/8", "10.255.255.255", false},
		{"10.0.0.2/8", "10.255.255.254", true},
	} {
		y := strings.Replace(strings.Replace(twoLinks, "192.0.2.1", tc.gw, 1), "198.51.100.1", "198.51.100.2", 1)
		_, err := Plan(mustParse(t, y), ifaces(iface("wan1", true, tc.prefix), iface("wan2", true, "198.51.100.1/24")))
		if (err == nil) != tc.ok {
			t.Errorf("gateway %s on %s: error %v, want ok=%v", tc.gw, tc.prefix, err, tc.ok)
		}
	}
}

func TestPlanWeightsAndMultipath(t *testing.T) {
	d, err := Plan(mustParse(t, twoLinks), ifaces(iface("wan1", true, "192.0.2.2/24"), iface("wan2", true, "198.51.100.2/24")))
	if err != nil {
		t.Fatal(err)
	}
	var bal *rules.Route
	for i, r := range d.Routing.Routes {
		if r.Table == 100 {
			bal = &d.Routing.Routes[i]
		}
	}
	if bal == nil {
		t.Fatal("no route in the balance table")
	}
	want := []rules.Nexthop{
		{Dev: "wan1", Gw: netip.MustParseAddr("192.0.2.1"), Weight: 3},
		{Dev: "wan2", Gw: netip.MustParseAddr("198.51.100.1"), Weight: 1},
	}
	if diff := cmp.Diff(want, bal.Nexthops, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("nexthops (-want +got):\n%s", diff)
	}
}

// An interface that does not exist (a ppp0 between sessions) has no
// /proc/sys/net/ipv4/conf entry either: planning one of its sysctls
// would fail every sync until it is back.
func TestPlanMissingInterfaceHasNoSysctls(t *testing.T) {
	c := mustParse(t, twoLinks)
	d, err := With(c, ifaces(iface("wan1", true, "192.0.2.2/24")), Options{MissingOK: true})
	if err != nil {
		t.Fatal(err)
	}
	if l := d.Links[1]; l.Usable || !l.Missing || l.Why != "interface wan2 does not exist" {
		t.Errorf("wan2 planned as %+v", l)
	}
	var keys []string
	for _, s := range d.Sysctls {
		keys = append(keys, s.Key)
	}
	got := strings.Join(keys, " ")
	if strings.Contains(got, "wan2") || !strings.Contains(got, "conf/wan1/rp_filter") {
		t.Errorf("sysctls: %s", got)
	}
}

// Tables lists every table flowpin's routes go into, and Multipath the
// links of the balance table's route: the active tier's only.
func TestPlanTablesAndMultipath(t *testing.T) {
	c := mustParse(t, twoLinks+"    tier: 2\n"+`policies:
  - {name: isp2-first, tiers: [[isp2], [isp1]]}
rules:
  - {name: s, proto: udp, policy: isp2, sticky: 10m}
  - {name: w, proto: tcp, policy: isp2-first}
`)
	d, err := Plan(c, ifaces(iface("wan1", true, "192.0.2.2/24"), iface("wan2", true, "198.51.100.2/24")))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tb := range d.Tables() {
		got = append(got, tb.String())
	}
	want := []string{"table 100 (balance_table)", "table 101 (link isp1)", "table 102 (link isp2)", "table 103 (policy isp2-first)", "table 104 (policy isp2)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tables (-want +got):\n%s", diff)
	}
	routed := map[int]bool{}
	for _, r := range d.Routing.Routes {
		routed[r.Table] = true
	}
	for _, tb := range d.Tables() {
		delete(routed, tb.ID)
	}
	if len(routed) != 0 {
		t.Errorf("routes planned in tables Tables leaves out: %v", routed)
	}
	if got := d.Multipath(false); !slices.Equal(got, []int{0}) {
		t.Errorf("multipath links %v, want [0]: isp2 is on standby in tier 2", got)
	}
}

// A sticky rule whose policy has no link up (its one link down, or every
// link down for policy default) has nothing to stick to: the table must
// still declare every chain it jumps to, or the kernel refuses all of it.
func TestPlanStickyRuleWithNoLinkUp(t *testing.T) {
	jump := regexp.MustCompile(`\b(?:jump|goto) ([A-Za-z0-9_.-]+)`)
	for _, tc := range []struct {
		name, rule string
		ifs        map[string]rules.Iface
	}{
		{"policy isp2, wan2 down", "{name: s, proto: udp, policy: isp2, sticky: 10m}",
			ifaces(iface("wan1", true, "192.0.2.2/24"), iface("wan2", false, "198.51.100.2/24"))},
		{"policy default, every link down", "{name: s, proto: udp, policy: default, sticky: 10m}",
			ifaces(iface("wan1", false, "192.0.2.2/24"), iface("wan2", false, "198.51.100.2/24"))},
	} {
		d, err := Plan(mustParse(t, twoLinks+"rules:\n  - "+tc.rule+"\n"), tc.ifs)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		script := d.NFT.Render()
		for _, m := range jump.FindAllStringSubmatch(script, -1) {
			if !strings.Contains(script, "\tchain "+m[1]+" {") {
				t.Errorf("%s: the table jumps to chain %s, which it does not have:\n%s", tc.name, m[1], script)
			}
		}
	}
}

// A point-to-point link's gateway is its peer, which the probes use, while
// its routes name no next hop; no peer leaves it without one.
func TestPlanPointToPointGateway(t *testing.T) {
	for _, tc := range []struct {
		name     string
		config   string
		ppp      rules.Iface
		gw, addr string
	}{
		{"auto takes the peer", pppoe, p2p("ppp0", "100.64.0.2 100.64.0.1/32"), "100.64.0.1", "100.64.0.2/32"},
		{"auto without a peer", pppoe, p2p("ppp0", "10.8.0.6/30"), "invalid IP", "10.8.0.6/30"},
		{"the peer given", strings.Replace(pppoe, "gateway: auto", "gateway: 100.64.0.1", 1), p2p("ppp0", "100.64.0.7 100.64.0.1/32"), "100.64.0.1", "100.64.0.7/32"},
		{"a second address's peer", strings.Replace(pppoe, "gateway: auto", "gateway: 100.64.9.1", 1), p2p("ppp0", "100.64.0.7 100.64.0.1/32", "100.64.9.2 100.64.9.1/32"), "100.64.9.1", "100.64.9.2/32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Plan(mustParse(t, tc.config), ifaces(iface("wan1", true, "192.0.2.2/24"), tc.ppp))
			if err != nil {
				t.Fatal(err)
			}
			l := d.Links[1]
			if !l.Usable || !l.InRoute || !l.PointToPoint || l.Via().IsValid() {
				t.Errorf("usable %v, in route %v, point-to-point %v, via %v; want a usable device-only link", l.Usable, l.InRoute, l.PointToPoint, l.Via())
			}
			if l.Gateway.String() != tc.gw || l.Addr.String() != tc.addr {
				t.Errorf("gateway %v, address %v; want %s, %s", l.Gateway, l.Addr, tc.gw, tc.addr)
			}
		})
	}
}
