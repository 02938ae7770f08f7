package rules

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNS creates network namespace "fp<random>-rules", deleted in
// t.Cleanup. Commands reach it with `ip -n`; Go code with inTestNS.
func testNS(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a network namespace: not a unit test (-short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "fp" + hex.EncodeToString(b) + "-rules"
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	return name
}

// ipn runs `ip -n ns ARGS` (only ever in a test namespace).
func ipn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	if !strings.HasPrefix(ns, "fp") {
		t.Fatalf("refusing namespace %q", ns)
	}
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %s: %v\n%s", ns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inTestNS runs fn with a Kernel opened inside ns, on a thread that stays
// there and is thrown away afterwards.
func inTestNS(t *testing.T, ns string, fn func(k *Kernel) error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime ends the thread with the goroutine,
		// so no other goroutine ever runs in ns.
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		k, err := Open()
		if err != nil {
			errc <- err
			return
		}
		defer k.Close()
		errc <- fn(k)
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func writeNSSysctl(t *testing.T, ns, key, val string) {
	t.Helper()
	inTestNS(t, ns, func(*Kernel) error { return os.WriteFile("/proc/sys/"+key, []byte(val), 0o644) })
}

// routerNS: lan (10.0.0.1/24) and two uplinks with a multipath default in
// table 100, forwarding on, L4 hash.
func routerNS(t *testing.T) string {
	ns := testNS(t)
	for _, l := range [][2]string{{"lan", "lanp"}, {"up1", "up1p"}, {"up2", "up2p"}} {
		ipn(t, ns, "link", "add", l[0], "type", "veth", "peer", "name", l[1])
		ipn(t, ns, "link", "set", l[0], "up")
		ipn(t, ns, "link", "set", l[1], "up")
	}
	ipn(t, ns, "addr", "add", "10.0.0.1/24", "dev", "lan")
	ipn(t, ns, "addr", "add", "192.0.2.2/24", "dev", "up1")
	ipn(t, ns, "addr", "add", "198.51.100.2/24", "dev", "up2")
	ipn(t, ns, "route", "add", "default", "table", "100",
		"nexthop", "via", "192.0.2.1", "dev", "up1", "weight", "1",
		"nexthop", "via", "198.51.100.1", "dev", "up2", "weight", "2")
	ipn(t, ns, "rule", "add", "pref", "1400", "lookup", "100")
	writeNSSysctl(t, ns, "net/ipv4/ip_forward", "1")
	writeNSSysctl(t, ns, "net/ipv4/fib_multipath_hash_policy", "1")
	return ns
}

func cliDev(out string) string {
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			return f[i+1]
		}
	}
	return ""
}

// TestExplainRouteGetAgreesWithIPRouteGet: for forwarded and local packets
// over 64 source ports, RouteGet picks the nexthop `ip route get` picks
// with the same ipproto/sport/dport, and the ports really reach the hash
// (both uplinks are seen).
func TestExplainRouteGetAgreesWithIPRouteGet(t *testing.T) {
	ns := routerNS(t)
	dst := netip.MustParseAddr("198.18.0.1")
	for _, iif := range []string{"lan", ""} {
		seen := map[string]int{}
		var got []string
		inTestNS(t, ns, func(k *Kernel) error {
			for i := range 64 {
				q := Query{Dst: dst, Iif: iif, Proto: unix.IPPROTO_TCP, Sport: uint16(40000 + i), Dport: 443}
				if iif != "" {
					q.Src = netip.MustParseAddr("10.0.0.5")
				}
				a, err := k.RouteGet(q)
				if err != nil {
					return err
				}
				if a.Table != 100 {
					return fmt.Errorf("%s: table %d, want 100", q.Args(), a.Table)
				}
				got = append(got, a.Dev)
				seen[a.Dev]++
			}
			return nil
		})
		for i, dev := range got {
			args := []string{"route", "get", dst.String()}
			if iif != "" {
				args = append(args, "from", "10.0.0.5", "iif", iif)
			}
			args = append(args, "ipproto", "tcp", "sport", fmt.Sprint(40000+i), "dport", "443")
			if want := cliDev(ipn(t, ns, args...)); dev != want {
				t.Errorf("iif %q sport %d: RouteGet says %s, ip route get says %s", iif, 40000+i, dev, want)
			}
		}
		if seen["up1"] == 0 || seen["up2"] == 0 {
			t.Errorf("iif %q: 64 source ports all took one uplink (%v): ports did not reach the hash", iif, seen)
		}
	}
}

func TestExplainRouteGetFIBMatchAndErrors(t *testing.T) {
	ns := routerNS(t)
	inTestNS(t, ns, func(k *Kernel) error {
		a, err := k.RouteGet(Query{Dst: netip.MustParseAddr("198.18.0.1"), FIBMatch: true})
		if err != nil {
			return err
		}
		want := "default table 100 nexthop via 192.0.2.1 dev up1 weight 1 nexthop via 198.51.100.1 dev up2 weight 2"
		if a.String() != want || a.Dst.Bits() != 0 {
			return fmt.Errorf("fibmatch: %q, want %q", a, want)
		}
		a, err = k.RouteGet(Query{Dst: netip.MustParseAddr("192.0.2.7"), Src: netip.MustParseAddr("192.0.2.2")})
		if err != nil {
			return err
		}
		// Rule 1400 comes before main: even the up1 subnet goes by table 100.
		if a.Table != 100 || !a.Gw.IsValid() {
			return fmt.Errorf("neighbour on up1: want table 100's multipath route, got %s", a)
		}
		if a, err = k.RouteGet(Query{Dst: netip.MustParseAddr("10.0.0.1")}); err != nil || a.Type != unix.RTN_LOCAL {
			return fmt.Errorf("own address: %v %v", a, err)
		}
		// A source that is not ours cannot be sent from here: the output
		// lookup finds no device for it (ENETUNREACH, not EINVAL).
		_, err = k.RouteGet(Query{Dst: netip.MustParseAddr("198.18.0.1"), Src: netip.MustParseAddr("10.0.0.5")})
		if !errors.Is(err, unix.ENETUNREACH) || !strings.Contains(err.Error(), "ip route get 198.18.0.1 from 10.0.0.5") {
			return fmt.Errorf("foreign source: want ENETUNREACH naming the query, got %v", err)
		}
		return nil
	})
	// Forwarding off: a lookup with iif is refused.
	writeNSSysctl(t, ns, "net/ipv4/ip_forward", "0")
	inTestNS(t, ns, func(k *Kernel) error {
		_, err := k.RouteGet(Query{Dst: netip.MustParseAddr("198.18.0.1"), Src: netip.MustParseAddr("10.0.0.5"), Iif: "lan"})
		if !errors.Is(err, unix.EHOSTUNREACH) {
			return fmt.Errorf("forwarding off: want EHOSTUNREACH, got %v", err)
		}
		return nil
	})
}

// TestVerifyListRulesAsIPRuleShows: the rule dump, rendered, reads as
// `ip rule show` prints the same rules, actions and selectors included.
func TestVerifyListRulesAsIPRuleShows(t *testing.T) {
	ns := testNS(t)
	ipn(t, ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	for _, r := range [][]string{
		{"pref", "100", "from", "10.0.0.0/8", "ipproto", "tcp", "dport", "80-90", "lookup", "7"},
		{"pref", "110", "to", "192.0.2.99", "blackhole"},
		{"pref", "120", "fwmark", "0x100/0xff00", "lookup", "102", "proto", "201"},
		{"pref", "130", "iif", "v0", "lookup", "main", "suppress_prefixlength", "0"},
		{"pref", "140", "not", "from", "10.1.0.0/16", "goto", "150"},
		{"pref", "150", "from", "all", "sport", "1000", "unreachable"},
	} {
		ipn(t, ns, append([]string{"rule", "add"}, r...)...)
	}
	show := ipn(t, ns, "rule", "show")
	var all []RuleInfo
	inTestNS(t, ns, func(k *Kernel) error {
		var err error
		all, err = k.ListRules(V4)
		return err
	})
	if len(all) != 9 {
		t.Fatalf("%d rules, want 9 (3 default + 6):\n%s", len(all), show)
	}
	for _, r := range all {
		line := r.String()
		if !strings.Contains(show, line+"\n") && !strings.Contains(show, line+" \n") {
			t.Errorf("rule rendered %q is not a line of ip rule show:\n%s", line, show)
		}
	}
	m := all[3] // pref 120
	if m.Priority != 120 || !m.Owned() || m.Mark != 0x100 || m.Mask != 0xff00 {
		t.Errorf("pref 120: %+v", m)
	}
	pkt := Packet{Src: netip.MustParseAddr("10.2.0.1"), Dst: netip.MustParseAddr("198.18.0.1"), Iif: "lo", Proto: unix.IPPROTO_TCP, Sport: 5000, Dport: 85}
	for _, c := range []struct {
		pref int
		pkt  Packet
		want bool
	}{
		{100, pkt, true},
		{100, Packet{Src: pkt.Src, Dst: pkt.Dst, Proto: unix.IPPROTO_UDP, Dport: 85}, false},
		{110, Packet{Dst: netip.MustParseAddr("192.0.2.99")}, true},
		{120, Packet{Dst: pkt.Dst, Mark: 0x10100}, true}, // bits outside the mask do not count
		{120, Packet{Dst: pkt.Dst, Mark: 0x200}, false},
		{130, Packet{Dst: pkt.Dst, Iif: "v0"}, true},
		{130, Packet{Dst: pkt.Dst, Iif: "lo"}, false},
		{140, Packet{Src: netip.MustParseAddr("10.1.2.3"), Dst: pkt.Dst}, false},
		{140, pkt, true},
		{150, Packet{Dst: pkt.Dst, Proto: unix.IPPROTO_TCP, Sport: 1000}, true},
	} {
		for _, r := range all {
			if r.Priority == c.pref {
				if got := r.Matches(c.pkt); got != c.want {
					t.Errorf("rule %q matches %+v: %v, want %v", r.String(), c.pkt, got, c.want)
				}
			}
		}
	}
}
