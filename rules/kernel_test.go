package rules

import (
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// openAt opens a Kernel on ns from the test's own goroutine, which stays in
// the host namespace: every answer must come from ns all the same.
func openAt(t *testing.T, ns string) *Kernel {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	k, err := OpenAt(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

// TestRulesOwnedAndForeignAgreeWithIPRule: Owned and ForeignRules together
// are exactly `ip rule show` (IPv4 and IPv6), a goto and a blackhole
// keeping their action, read through a Kernel opened on the namespace from
// a thread outside it.
func TestRulesOwnedAndForeignAgreeWithIPRule(t *testing.T) {
	ns := testNS(t)
	ipn(t, ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	for _, r := range [][]string{
		{"pref", "90", "from", "10.9.0.0/16", "goto", "1000"},
		{"pref", "95", "to", "192.0.2.99", "blackhole"},
		{"pref", "97", "fwmark", "0x4000/0x4000", "iif", "v0", "lookup", "55"},
		{"pref", "1000", "fwmark", "0x100/0xff00", "lookup", "102", "proto", "201"},
		{"pref", "1010", "from", "192.0.2.2", "lookup", "101", "proto", "201"},
		{"pref", "1020", "lookup", "main", "suppress_prefixlength", "0", "proto", "201"},
	} {
		ipn(t, ns, append([]string{"rule", "add"}, r...)...)
	}
	ipn(t, ns, "-6", "rule", "add", "pref", "1000", "fwmark", "0x100/0xff00", "lookup", "102", "proto", "201")
	ipn(t, ns, "-6", "rule", "add", "pref", "96", "from", "2001:db8::/32", "prohibit")

	k := openAt(t, ns)
	owned, err := k.Owned()
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := k.ForeignRules()
	if err != nil {
		t.Fatal(err)
	}

	// Every line `ip rule show` prints is either an owned rule or a
	// foreign one, and nothing else was read.
	var got []string
	for _, r := range owned.Rules {
		got = append(got, strings.TrimPrefix(r.Command("add"), ipCmd(r.Family)+" rule add "))
	}
	for _, r := range foreign {
		got = append(got, r.Text)
	}
	var want []string
	for _, fam := range []string{"-4", "-6"} {
		for _, line := range strings.Split(strings.TrimSpace(ipn(t, ns, fam, "rule", "show")), "\n") {
			f := strings.Fields(strings.Replace(line, ":", " ", 1))
			if slices.Contains(f, "proto") && slices.Contains(f, "201") {
				// Owned, as Rule.Command prints it: "pref N <selector> proto 201".
				sel := strings.Join(slices.DeleteFunc(f[1:], func(s string) bool { return s == "proto" || s == "201" }), " ")
				want = append(want, "pref "+f[0]+" "+sel+" proto 201")
				continue
			}
			want = append(want, strings.Join(strings.Fields(line), " "))
		}
	}
	norm := func(ss []string) []string {
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = strings.Join(strings.Fields(s), " ")
		}
		slices.Sort(out)
		return out
	}
	if g, w := norm(got), norm(want); !slices.Equal(g, w) {
		t.Errorf("owned + foreign rules:\n  %s\nip rule show:\n  %s", strings.Join(g, "\n  "), strings.Join(w, "\n  "))
	}
	if len(owned.Rules) != 4 {
		t.Errorf("%d owned rules, want 4: %+v", len(owned.Rules), owned.Rules)
	}

	byPref := map[int]ForeignRule{}
	for _, r := range foreign {
		if r.Family == V4 {
			byPref[r.Priority] = r
		}
	}
	if g := byPref[90]; g.Info.Action != unix.FR_ACT_GOTO || g.Info.Goto != 1000 || g.Table != 0 {
		t.Errorf("pref 90 read as %q (%+v), want a goto to 1000 that looks up no table", g.Text, g.Info)
	}
	if b := byPref[95]; !b.Info.Terminal() || b.Table != 0 || b.Info.Dst != netip.MustParsePrefix("192.0.2.99/32") {
		t.Errorf("pref 95 read as %q (%+v), want a blackhole to 192.0.2.99", b.Text, b.Info)
	}
	if m := byPref[97]; m.Table != 55 || m.Mark != 0x4000 || m.Mask != 0x4000 || m.Info.Iif != "v0" {
		t.Errorf("pref 97 read as %q (%+v)", m.Text, m.Rule)
	}
	wantOwned := Rule{Family: V4, Priority: 1000, Mark: 0x100, Mask: 0xff00, Table: 102, SuppressPrefixlen: -1}
	if !slices.Contains(owned.Rules, wantOwned) {
		t.Errorf("owned rules %+v lack %+v", owned.Rules, wantOwned)
	}
}

// TestKernelOpenAtReachesItsNamespace: a route lookup and a sysctl read
// through a Kernel opened on a namespace answer for that namespace, not
// for the namespace of the calling thread.
func TestKernelOpenAtReachesItsNamespace(t *testing.T) {
	ns := routerNS(t)
	host, err := os.ReadFile("/proc/sys/net/ipv4/fib_multipath_hash_policy")
	if err != nil {
		t.Fatal(err)
	}
	val := "2"
	if strings.TrimSpace(string(host)) == val {
		val = "1"
	}
	writeNSSysctl(t, ns, "net/ipv4/fib_multipath_hash_policy", val)

	k := openAt(t, ns)
	a, err := k.RouteGet(Query{Dst: netip.MustParseAddr("198.18.0.1"), FIBMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	if a.Table != 100 || len(a.Nexthops) != 2 {
		t.Errorf("route get in the namespace: %s, want table 100's multipath default", a)
	}
	if got, err := k.ReadSysctl("net/ipv4/fib_multipath_hash_policy"); err != nil || got != val {
		t.Errorf("sysctl in the namespace: %q %v, want %q", got, err, val)
	}
	// up1 exists only in the namespace: a write that went anywhere else
	// fails (and never changes the host).
	if err := k.WriteSysctl(Sysctl{Key: "net/ipv4/conf/up1/rp_filter", Value: "2"}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/conf/up1/rp_filter").CombinedOutput()
	if got := strings.TrimSpace(string(out)); err != nil || got != "2" {
		t.Errorf("rp_filter of up1 after WriteSysctl: %q %v, want 2", got, err)
	}
	rs, err := k.ListRules(V4)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(rs, func(r RuleInfo) bool { return r.Priority == 1400 && r.Table == 100 }) {
		t.Errorf("rules in the namespace lack 1400 lookup 100: %v", rs)
	}
}

// A tun device (as ppp0 or wg0) reads back as point-to-point, with the
// peer of its address; a veth does not.
func TestInterfacesPointToPoint(t *testing.T) {
	ns := testNS(t)
	ipn(t, ns, "tuntap", "add", "dev", "ppp9", "mode", "tun")
	ipn(t, ns, "addr", "add", "100.64.0.2", "peer", "100.64.0.1/32", "dev", "ppp9")
	ipn(t, ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ipn(t, ns, "addr", "add", "192.0.2.2/24", "dev", "v0")
	ifs, err := openAt(t, ns).Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	p := ifs["ppp9"]
	peer := p.Peers[netip.MustParseAddr("100.64.0.2")]
	if !p.PointToPoint || !slices.Equal(p.Addrs, []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}) || len(p.Peers) != 1 || peer != netip.MustParsePrefix("100.64.0.1/32") {
		t.Errorf("ppp9: %+v, want point-to-point 100.64.0.2/32 with peer 100.64.0.1/32", p)
	}
	if v := ifs["v0"]; v.PointToPoint || len(v.Peers) != 0 {
		t.Errorf("v0: %+v, want no point-to-point, no peers", v)
	}
}
