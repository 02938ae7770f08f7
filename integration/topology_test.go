package integration

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// dualWAN is a NAT router with two uplinks, where replies arriving from a
// WAN must never be routed by a link table (it has no LAN route):
//
//	lan --- router ==wan1== isp1 ---core--- far (203.0.113.10 on lo)
//	               ==wan2== isp2 ---core---/
//
// Each ISP drops packets on its customer port whose source is not the
// customer's own address (BCP38), so a reply sent out of the wrong link is
// lost, as on the real Internet. The ISPs and far also route each other's
// customer prefixes (isp1 -> far -> isp2), so without BCP38 an asymmetric
// reply *would* arrive: a failure is the filter's doing, not a missing route.
// Far-originated traffic has source 203.0.113.10 (route src), which every
// namespace can route back to.
type dualWAN struct {
	LAN, Router, ISP1, ISP2, Far string // namespace names

	LANHost   string // 10.77.0.2 (lan eth0)
	RouterLAN string // 10.77.0.1 (router lan)
	WAN1      string // 192.0.2.2 (router wan1)
	WAN2      string // 198.51.100.2 (router wan2)
	GW1       string // 192.0.2.1 (isp1 cust)
	GW2       string // 198.51.100.1 (isp2 cust)
	Service   string // 203.0.113.10 (far lo)

	// Dual stack only (newDualWAN6), see there.
	LANHost6, RouterLAN6 string // fd00:77::2, fd00:77::1
	WAN1v6, WAN2v6       string // 2001:db8:1::2, 2001:db8:2::2
	GW1v6, GW2v6         string // fe80::1 (isp1, link-local), 2001:db8:2::1
	Service6             string // 2001:db8:ff::10 (far lo)
}

func newDualWAN(t testing.TB) *dualWAN {
	t.Helper()
	return buildDualWAN(t, false, false)
}

// newDualWAN6 is the dual-WAN NAT box with IPv6 beside IPv4:
//
//	lan fd00:77::2 --- router ==wan1 2001:db8:1::2/64== isp1 (2001:db8:1::1, fe80::1) ---core--- far (2001:db8:ff::10 on lo)
//	(ULA, no route      ==wan2 2001:db8:2::2/64== isp2 (2001:db8:2::1, fe80::1) ---core---/
//	 beyond the router)
//
// Each ISP's BCP38 filter also drops IPv6 whose source is not in the
// customer's /64 (or link-local), so the LAN's ULA source never gets out
// without NAT66 and a reply sent by the wrong link is lost. The router
// starts with what router advertisements give a box: one IPv6 default
// route via fe80::1 dev wan1 (and accept_ra=2 on the WANs, as a router that
// takes RAs must have). Far routes each customer /64 by its ISP with
// source 2001:db8:ff::10, and the ISPs route each other's /64 via far.
func newDualWAN6(t testing.TB) *dualWAN {
	t.Helper()
	return buildDualWAN(t, true, false)
}

func buildDualWAN(t testing.TB, ipv6, p2p bool) *dualWAN {
	t.Helper()
	start := time.Now()
	newL := newLab
	if ipv6 {
		newL = newLab6
	}
	l := newL(t)
	d := &dualWAN{
		LAN: l.addNS("lan"), Router: l.addNS("router"),
		ISP1: l.addNS("isp1"), ISP2: l.addNS("isp2"), Far: l.addNS("far"),
		LANHost: "10.77.0.2", RouterLAN: "10.77.0.1",
		WAN1: "192.0.2.2", WAN2: "198.51.100.2",
		GW1: "192.0.2.1", GW2: "198.51.100.1",
		Service: "203.0.113.10",
	}

	veth(t, d.LAN, "eth0", d.Router, "lan")
	veth(t, d.Router, "wan1", d.ISP1, "cust")
	if !p2p {
		veth(t, d.Router, "wan2", d.ISP2, "cust")
	}
	veth(t, d.ISP1, "core", d.Far, "isp1")
	veth(t, d.ISP2, "core", d.Far, "isp2")

	addAddr(t, d.LAN, "eth0", "10.77.0.2/24")
	addRoute(t, d.LAN, "default", "via", d.RouterLAN)

	addAddr(t, d.Router, "lan", "10.77.0.1/24")
	addAddr(t, d.Router, "wan1", "192.0.2.2/24")
	if !p2p {
		addAddr(t, d.Router, "wan2", "198.51.100.2/24")
	}
	setSysctl(t, d.Router, "net.ipv4.ip_forward", "1")
	// What a typical box has before flowpin: one default route, via ISP1.
	addRoute(t, d.Router, "default", "via", d.GW1, "dev", "wan1")

	for _, isp := range []struct {
		ns, cust, core, far, custAddr, otherPrefix string
	}{
		{d.ISP1, "192.0.2.1/24", "100.64.1.1/30", "100.64.1.2", d.WAN1, "198.51.100.0/24"},
		{d.ISP2, "198.51.100.1/24", "100.64.2.1/30", "100.64.2.2", d.WAN2, "192.0.2.0/24"},
	} {
		p2pISP := p2p && isp.ns == d.ISP2
		if !p2pISP {
			addAddr(t, isp.ns, "cust", isp.cust)
		}
		addAddr(t, isp.ns, "core", isp.core)
		setSysctl(t, isp.ns, "net.ipv4.ip_forward", "1")
		addRoute(t, isp.ns, "203.0.113.0/24", "via", isp.far)
		addRoute(t, isp.ns, isp.otherPrefix, "via", isp.far)
		switch {
		case p2pISP:
			// Sessions come and go with their interface: filter by name
			// in the forward path, which outlives any one device (with
			// IPv6, addIPv6 adds bcp38SessionRuleset6 instead).
			if !ipv6 {
				nft(t, isp.ns, bcp38SessionRuleset)
			}
		case !ipv6:
			nft(t, isp.ns, bcp38Ruleset(isp.custAddr))
		}
	}

	addAddr(t, d.Far, "isp1", "100.64.1.2/30")
	addAddr(t, d.Far, "isp2", "100.64.2.2/30")
	addAddr(t, d.Far, "lo", "203.0.113.10/32")
	setSysctl(t, d.Far, "net.ipv4.ip_forward", "1")
	addRoute(t, d.Far, "192.0.2.0/24", "via", "100.64.1.1", "src", d.Service)
	addRoute(t, d.Far, "198.51.100.0/24", "via", "100.64.2.1", "src", d.Service)

	if ipv6 {
		d.addIPv6(t, p2p)
	}
	t.Logf("dual-WAN topology (%s-*) up in %v", d.Router[:len(d.Router)-len("-router")], time.Since(start).Round(time.Millisecond))
	return d
}

func (d *dualWAN) addIPv6(t testing.TB, p2p bool) {
	t.Helper()
	d.LANHost6, d.RouterLAN6 = "fd00:77::2", "fd00:77::1"
	d.WAN1v6, d.WAN2v6 = "2001:db8:1::2", "2001:db8:2::2"
	d.GW1v6, d.GW2v6 = "fe80::1", "2001:db8:2::1"
	d.Service6 = "2001:db8:ff::10"

	addAddr6(t, d.LAN, "eth0", "fd00:77::2/64")
	addRoute6(t, d.LAN, "default", "via", d.RouterLAN6)

	addAddr6(t, d.Router, "lan", "fd00:77::1/64")
	addAddr6(t, d.Router, "wan1", "2001:db8:1::2/64")
	if !p2p {
		addAddr6(t, d.Router, "wan2", "2001:db8:2::2/64")
		setSysctl(t, d.Router, "net.ipv6.conf.wan2.accept_ra", "2")
	}
	setSysctl(t, d.Router, "net.ipv6.conf.all.forwarding", "1")
	setSysctl(t, d.Router, "net.ipv6.conf.wan1.accept_ra", "2")
	addRoute6(t, d.Router, "default", "via", "fe80::1", "dev", "wan1")

	for _, isp := range []struct {
		ns, cust, custPrefix, core, far, otherPrefix, custAddr4 string
	}{
		{d.ISP1, "2001:db8:1::1/64", "2001:db8:1::/64", "2001:db8:100:1::1/64", "2001:db8:100:1::2", "2001:db8:2::/64", d.WAN1},
		{d.ISP2, "2001:db8:2::1/64", "2001:db8:2::/64", "2001:db8:100:2::1/64", "2001:db8:100:2::2", "2001:db8:1::/64", d.WAN2},
	} {
		p2pISP := p2p && isp.ns == d.ISP2
		if !p2pISP {
			// The session's addresses come with it (startSession).
			addAddr6(t, isp.ns, "cust", isp.cust)
			// The gateway every ISP advertises: fe80::1 on the customer link.
			addAddr6(t, isp.ns, "cust", "fe80::1/64")
		}
		addAddr6(t, isp.ns, "core", isp.core)
		setSysctl(t, isp.ns, "net.ipv6.conf.all.forwarding", "1")
		addRoute6(t, isp.ns, "2001:db8:ff::/64", "via", isp.far)
		addRoute6(t, isp.ns, isp.otherPrefix, "via", isp.far)
		if p2pISP {
			nft(t, isp.ns, bcp38SessionRuleset6)
		} else {
			nft(t, isp.ns, bcp38Ruleset6(isp.custAddr4, isp.custPrefix))
		}
	}

	addAddr6(t, d.Far, "isp1", "2001:db8:100:1::2/64")
	addAddr6(t, d.Far, "isp2", "2001:db8:100:2::2/64")
	addAddr6(t, d.Far, "lo", "2001:db8:ff::10/128")
	setSysctl(t, d.Far, "net.ipv6.conf.all.forwarding", "1")
	addRoute6(t, d.Far, "2001:db8:1::/64", "via", "2001:db8:100:1::1", "src", d.Service6)
	addRoute6(t, d.Far, "2001:db8:2::/64", "via", "2001:db8:100:2::1", "src", d.Service6)

	settle6(t, d.LAN, d.Router, d.ISP1, d.ISP2, d.Far)
}

// newPPPWAN is the dual-WAN NAT box with isp2 reached over a point-to-point
// session instead of Ethernet, as over PPPoE or a VPN tunnel:
//
//	lan --- router ==wan1 (veth)== isp1 ---core--- far
//	               ==wan2 (tun, 198.51.100.2 peer 198.51.100.1)== isp2 ---core---/
//
// wan2 and isp2's cust are tun devices carried by a tunpair process (the
// session, see startSession): killing it ends the session and removes
// both, stopping it is a silent failure with the carrier up. Main has no
// default route through wan2 (a second session with nodefaultroute).
func newPPPWAN(t testing.TB) (*dualWAN, *tunSession) {
	t.Helper()
	d := buildDualWAN(t, false, true)
	return d, d.startSession(t, d.WAN2)
}

// startSession opens a new point-to-point session between the router's
// wan2 and isp2, where the router gets addr with isp2's 198.51.100.1 as its
// peer, as a PPP server hands out an address.
func (d *dualWAN) startSession(t testing.TB, addr string) *tunSession {
	t.Helper()
	s := startTunPair(t, d.Router, "wan2", d.ISP2, "cust")
	run(t, d.Router, "ip", "addr", "add", addr, "peer", d.GW2+"/32", "dev", "wan2")
	run(t, d.ISP2, "ip", "addr", "add", d.GW2, "peer", addr+"/32", "dev", "cust")
	linkUp(t, d.Router, "wan2")
	linkUp(t, d.ISP2, "cust")
	if d.WAN2v6 != "" {
		// IPv6 over the session: a global /64 on each end, and the
		// random link-local addresses the kernel gives a tun device.
		addAddr6(t, d.Router, "wan2", d.WAN2v6+"/64")
		addAddr6(t, d.ISP2, "cust", "2001:db8:2::1/64")
		settle6(t, d.Router, d.ISP2)
	}
	return s
}

// newPPPWAN6 is newPPPWAN with IPv6 beside IPv4 as in newDualWAN6, where
// wan2's session also carries 2001:db8:2::2/64 (isp2's end
// 2001:db8:2::1/64) and no IPv6 default route in main goes through it.
func newPPPWAN6(t testing.TB) (*dualWAN, *tunSession) {
	t.Helper()
	d := buildDualWAN(t, true, true)
	return d, d.startSession(t, d.WAN2)
}

// configP2P6 is config6 with isp2 on the point-to-point wan2 with gateway:
// auto and gateway6: auto, which needs no next hop.
func (d *dualWAN) configP2P6(weight1, weight2 int) string {
	c := strings.Replace(d.config6(weight1, weight2), "gateway: "+d.GW2, "gateway: auto", 1)
	return strings.Replace(c, "gateway6: "+d.GW2v6, "gateway6: auto", 1)
}

// configP2P is config with isp2 on the point-to-point wan2 and gateway:
// auto, which main offers no default route to take a next hop from.
func (d *dualWAN) configP2P(weight1, weight2 int) string {
	return strings.Replace(d.config(weight1, weight2), "gateway: "+d.GW2, "gateway: auto", 1)
}

// bcp38SessionRuleset is isp2's BCP38 on a session link: only the
// customer's session addresses (198.51.100.0/24) may come from cust.
const bcp38SessionRuleset = `table inet bcp38 {
	counter spoofed {}
	chain forward_in {
		type filter hook forward priority 0;
		iifname "cust" ip saddr != 198.51.100.0/24 counter name "spoofed" drop
	}
}
`

// bcp38SessionRuleset6 is bcp38SessionRuleset with IPv6: only the
// customer's /64 (or link-local) may come from cust.
const bcp38SessionRuleset6 = `table inet bcp38 {
	counter spoofed {}
	counter spoofed6 {}
	chain forward_in {
		type filter hook forward priority 0;
		iifname "cust" ip saddr != 198.51.100.0/24 counter name "spoofed" drop
		iifname "cust" ip6 saddr != { 2001:db8:2::/64, fe80::/10 } counter name "spoofed6" drop
	}
}
`

// bcp38Ruleset: an ISP's ingress filter on its customer port. netdev ingress
// sees the packet before routing; tc flower/u32/matchall are not available
// in this kernel. `ip saddr` only matches IPv4, so ARP passes. With
// bcp38Ruleset6, IPv6 from outside the customer's prefix6 is dropped too,
// except link-local sources (neighbour and router discovery, never
// forwarded) and the unspecified address (MLD before a link-local address
// exists).
func bcp38Ruleset(customer string) string { return bcp38Ruleset6(customer, "") }

func bcp38Ruleset6(customer, prefix6 string) string {
	v6 := ""
	if prefix6 != "" {
		v6 = fmt.Sprintf("\n\t\tip6 saddr != { %s, fe80::/10, :: } counter name \"spoofed6\" drop", prefix6)
	}
	return fmt.Sprintf(`table netdev bcp38 {
	counter spoofed {}
	counter spoofed6 {}
	chain in {
		type filter hook ingress device "cust" priority 0;
		ip saddr != %s counter name "spoofed" drop%s
	}
}
`, customer, v6)
}

// bcp38Drops is how many packets an ISP (d.ISP1 or d.ISP2) dropped as spoofed.
func (d *dualWAN) bcp38Drops(t testing.TB, isp string) int {
	t.Helper()
	return nftCounter(t, isp, "netdev", "bcp38", "spoofed")
}

// bcp38Drops6 is how many IPv6 packets an ISP dropped as spoofed.
func (d *dualWAN) bcp38Drops6(t testing.TB, isp string) int {
	t.Helper()
	return nftCounter(t, isp, "netdev", "bcp38", "spoofed6")
}

// config renders a flowpin config for the two links.
func (d *dualWAN) config(weight1, weight2 int) string {
	return fmt.Sprintf(`links:
  - name: isp1
    interface: wan1
    gateway: %s
    weight: %d
    nat: true
  - name: isp2
    interface: wan2
    gateway: %s
    weight: %d
    nat: true
`, d.GW1, weight1, d.GW2, weight2)
}

// config6 is config with both families on both links: isp1's IPv6 next hop
// is taken from main's default route (gateway6: auto, the fe80::1 of the
// router advertisement), isp2's is given as a global address.
func (d *dualWAN) config6(weight1, weight2 int) string {
	return fmt.Sprintf(`links:
  - name: isp1
    interface: wan1
    gateway: %s
    gateway6: auto
    weight: %d
    nat: true
  - name: isp2
    interface: wan2
    gateway: %s
    gateway6: %s
    weight: %d
    nat: true
`, d.GW1, weight1, d.GW2, d.GW2v6, weight2)
}

// multiHomedServer is a cloud instance with two interfaces on ONE subnet,
// where a main-table lookup sends replies out of the wrong interface:
//
//	server eth0 10.88.0.10 --srv0--+
//	server eth1 10.88.0.11 --srv1--+ br0 10.88.0.1 (switch) --up-- far (203.0.113.20 on lo)
//	neighbor eth0 10.88.0.50 --nbr-+
//
// The switch drops frames on srv0/srv1 whose IPv4 source is not that port's
// own address (cloud "source/dest check"). The server has what a cloud image
// has: both subnet routes and default via 10.88.0.1 dev eth0; no arp_* sysctls.
type multiHomedServer struct {
	Switch, Server, Neighbor, Far string // namespace names

	Gateway      string // 10.88.0.1 (switch br0)
	Eth0Addr     string // 10.88.0.10
	Eth1Addr     string // 10.88.0.11
	NeighborAddr string // 10.88.0.50
	Service      string // 203.0.113.20 (far lo)
}

func newMultiHomedServer(t testing.TB) *multiHomedServer {
	t.Helper()
	start := time.Now()
	l := newLab(t)
	s := &multiHomedServer{
		Switch: l.addNS("switch"), Server: l.addNS("server"),
		Neighbor: l.addNS("neighbor"), Far: l.addNS("far"),
		Gateway: "10.88.0.1", Eth0Addr: "10.88.0.10", Eth1Addr: "10.88.0.11",
		NeighborAddr: "10.88.0.50", Service: "203.0.113.20",
	}

	// eth0 is wired (and addressed) first so its subnet route is the one
	// the kernel picks for replies, as on the cloud image.
	s.wireSwitch(t)
	addAddr(t, s.Switch, "br0", "10.88.0.1/24")
	setSysctl(t, s.Switch, "net.ipv4.ip_forward", "1")
	nft(t, s.Switch, portSecurityRuleset(s.Eth0Addr, s.Eth1Addr))

	veth(t, s.Switch, "up", s.Far, "sw")
	addAddr(t, s.Switch, "up", "100.64.9.1/30")
	addRoute(t, s.Switch, "203.0.113.20/32", "via", "100.64.9.2")
	addAddr(t, s.Far, "sw", "100.64.9.2/30")
	addAddr(t, s.Far, "lo", "203.0.113.20/32")
	addRoute(t, s.Far, "10.88.0.0/24", "via", "100.64.9.1", "src", s.Service)

	addAddr(t, s.Server, "eth0", "10.88.0.10/24")
	addAddr(t, s.Server, "eth1", "10.88.0.11/24")
	addRoute(t, s.Server, "default", "via", s.Gateway, "dev", "eth0")

	addAddr(t, s.Neighbor, "eth0", "10.88.0.50/24")
	addRoute(t, s.Neighbor, "default", "via", s.Gateway)

	t.Logf("multi-homed server topology (%s-*) up in %v", s.Server[:len(s.Server)-len("-server")], time.Since(start).Round(time.Millisecond))
	return s
}

// portSecurityRuleset: per-port source check on the switch. The netdev
// ingress hook of a bridge port runs before the bridge sees the frame.
func portSecurityRuleset(eth0, eth1 string) string {
	return fmt.Sprintf(`table netdev portsec {
	counter srv0_spoofed {}
	counter srv1_spoofed {}
	chain srv0 {
		type filter hook ingress device "srv0" priority 0;
		ip saddr != %s counter name "srv0_spoofed" drop
	}
	chain srv1 {
		type filter hook ingress device "srv1" priority 0;
		ip saddr != %s counter name "srv1_spoofed" drop
	}
}
`, eth0, eth1)
}

// wireSwitch makes the switch's bridge and plugs the server's eth0 and
// eth1 and the neighbour into it (ports srv0, srv1, nbr). No multicast
// snooping: the switch floods IPv6 solicited-node multicast rather than
// depending on MLD reports it may have dropped.
func (s *multiHomedServer) wireSwitch(t testing.TB) {
	t.Helper()
	run(t, s.Switch, "ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	linkUp(t, s.Switch, "br0")
	veth(t, s.Switch, "srv0", s.Server, "eth0")
	veth(t, s.Switch, "srv1", s.Server, "eth1")
	veth(t, s.Switch, "nbr", s.Neighbor, "eth0")
	for _, p := range []string{"srv0", "srv1", "nbr"} {
		run(t, s.Switch, "ip", "link", "set", "dev", p, "master", "br0")
	}
}

// spoofDrops is how many packets the switch dropped on port "srv0" or "srv1".
func (s *multiHomedServer) spoofDrops(t testing.TB, port string) int {
	t.Helper()
	return nftCounter(t, s.Switch, "netdev", "portsec", port+"_spoofed")
}

// newMultiHomedServer6 builds the multiHomedServer in IPv6 only: two interfaces on
// ONE /64 behind a switch that checks IPv6 sources per port:
//
//	server eth0 2001:db8:88::10 --srv0--+
//	server eth1 2001:db8:88::11 --srv1--+ br0 2001:db8:88::1, fe80::1 (switch) --up-- far (2001:db8:ff::20 on lo)
//	neighbor eth0 2001:db8:88::50 --nbr-+
//
// Port srv0 (srv1) passes only frames from eth0's (eth1's) own global and
// link-local address (and ::, as DAD needs), as cloud port security does.
// The server has what router advertisements give a cloud image: both
// prefix routes and default via fe80::1 dev eth0. IPv6 neighbour discovery
// already answers only on the interface that holds the address, so no
// sysctl is needed for that. Its Gateway is fe80::1 (the switch's br0 also
// has 2001:db8:88::1), its Service 2001:db8:ff::20.
func newMultiHomedServer6(t testing.TB) *multiHomedServer {
	t.Helper()
	start := time.Now()
	l := newLab6(t)
	s := &multiHomedServer{
		Switch: l.addNS("switch"), Server: l.addNS("server"),
		Neighbor: l.addNS("neighbor"), Far: l.addNS("far"),
		Gateway: "fe80::1", Eth0Addr: "2001:db8:88::10", Eth1Addr: "2001:db8:88::11",
		NeighborAddr: "2001:db8:88::50", Service: "2001:db8:ff::20",
	}

	s.wireSwitch(t)
	addAddr6(t, s.Switch, "br0", "2001:db8:88::1/64")
	addAddr6(t, s.Switch, "br0", "fe80::1/64")
	setSysctl(t, s.Switch, "net.ipv6.conf.all.forwarding", "1")

	veth(t, s.Switch, "up", s.Far, "sw")
	addAddr6(t, s.Switch, "up", "2001:db8:100:9::1/64")
	addRoute6(t, s.Switch, "2001:db8:ff::20/128", "via", "2001:db8:100:9::2")
	addAddr6(t, s.Far, "sw", "2001:db8:100:9::2/64")
	addAddr6(t, s.Far, "lo", "2001:db8:ff::20/128")
	addRoute6(t, s.Far, "2001:db8:88::/64", "via", "2001:db8:100:9::1", "src", s.Service)

	addAddr6(t, s.Server, "eth0", s.Eth0Addr+"/64")
	addAddr6(t, s.Server, "eth1", s.Eth1Addr+"/64")
	addRoute6(t, s.Server, "default", "via", s.Gateway, "dev", "eth0")

	addAddr6(t, s.Neighbor, "eth0", s.NeighborAddr+"/64")
	addRoute6(t, s.Neighbor, "default", "via", s.Gateway, "dev", "eth0")

	settle6(t, s.Switch, s.Server, s.Neighbor, s.Far)
	nft(t, s.Switch, portSecurityRuleset6(
		[]string{s.Eth0Addr, linkLocalAddr(t, s.Server, "eth0")},
		[]string{s.Eth1Addr, linkLocalAddr(t, s.Server, "eth1")}))

	t.Logf("IPv6 multi-homed server topology (%s-*) up in %v", s.Server[:len(s.Server)-len("-server")], time.Since(start).Round(time.Millisecond))
	return s
}

// linkLocalAddr is dev's kernel-made link-local address in ns (the first
// one other than fe80::1).
func linkLocalAddr(t testing.TB, ns, dev string) string {
	t.Helper()
	out := run(t, ns, "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "link")
	for _, f := range strings.Fields(out) {
		if p, err := netip.ParsePrefix(f); err == nil && p.Addr() != netip.MustParseAddr("fe80::1") {
			return p.Addr().String()
		}
	}
	t.Fatalf("no link-local address on %s in %s:\n%s", dev, ns, out)
	return ""
}

// portSecurityRuleset6: the switch's per-port IPv6 source check; IPv4 and
// other traffic is not looked at (the topology has none).
func portSecurityRuleset6(eth0, eth1 []string) string {
	return fmt.Sprintf(`table netdev portsec {
	counter srv0_spoofed {}
	counter srv1_spoofed {}
	chain srv0 {
		type filter hook ingress device "srv0" priority 0;
		ip6 saddr != { %s, :: } counter name "srv0_spoofed" drop
	}
	chain srv1 {
		type filter hook ingress device "srv1" priority 0;
		ip6 saddr != { %s, :: } counter name "srv1_spoofed" drop
	}
}
`, strings.Join(eth0, ", "), strings.Join(eth1, ", "))
}
