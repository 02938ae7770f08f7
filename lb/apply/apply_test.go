package apply

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
	"flowpin/lb/plan"
	"flowpin/nft"
	"flowpin/nft/nfttest"
	"flowpin/rules"
	"flowpin/rules/rulestest"
)

var update = flag.Bool("update", false, "rewrite golden files")

// The fakes stand in for the adapters.
var (
	_ Routing = (*rulestest.Fake)(nil)
	_ Tables  = (*nfttest.Fake)(nil)
	_ Flows   = (*fakeFlows)(nil)
)

// fakeFlows records the conntrack flushes.
type fakeFlows struct {
	flushed []string
	err     error
}

func (f *fakeFlows) FlushMark(mark, mask uint32) error {
	if f.err != nil {
		return f.err
	}
	f.flushed = append(f.flushed, fmt.Sprintf("%#x/%#x", mark, mask))
	return nil
}

func iface(name string, up bool, addrs ...string) rules.Iface {
	i := rules.Iface{Name: name, Up: up}
	for _, a := range addrs {
		i.Addrs = append(i.Addrs, netip.MustParsePrefix(a))
	}
	return i
}

// box is a namespace with a LAN and three uplinks, strict rp_filter on the
// uplinks, and the kernel's defaults elsewhere.
type box struct {
	routes *rulestest.Fake
	nft    *nfttest.Fake
	flows  *fakeFlows
	// log has every write of both fakes in order, until a test sets its
	// own hooks.
	log []string
}

var startSysctls = map[string]string{
	"net/ipv4/conf/wan1/rp_filter":       "1",
	"net/ipv4/conf/wan2/rp_filter":       "1",
	"net/ipv4/conf/wan3/rp_filter":       "1",
	"net/ipv4/conf/lan/rp_filter":        "0",
	"net/ipv4/fib_multipath_hash_fields": "7",
	"net/ipv4/fib_multipath_hash_policy": "0",
	"net/ipv4/fib_multipath_use_neigh":   "0",
	// nf_conntrack is not loaded yet: its sysctls are missing.
}

func newBox() *box {
	ifs := map[string]rules.Iface{}
	for _, i := range []rules.Iface{
		iface("lan", true, "10.77.0.1/24"),
		iface("wan1", true, "192.0.2.2/24"),
		iface("wan2", true, "198.51.100.2/24"),
		iface("wan3", true, "203.0.113.2/24"),
	} {
		ifs[i.Name] = i
	}
	b := &box{routes: rulestest.New(ifs, startSysctls), nft: &nfttest.Fake{}, flows: &fakeFlows{}}
	logHook := func(cmd string) error {
		b.log = append(b.log, strings.TrimSuffix(cmd, "\n"))
		return nil
	}
	b.routes.Hook, b.nft.Hook = logHook, logHook
	return b
}

// kernel is a fresh apply.Kernel on the box, as a new process has.
func (b *box) kernel() *Kernel {
	k := New(b.routes, b.nft)
	k.Flows = b.flows
	return k
}

// dump is the whole state of the box.
func (b *box) dump() string { return b.routes.Dump() + "# nft\n" + b.nft.Dump() }

// transcript is every write since the last reset, in order.
func (b *box) transcript() string {
	if len(b.log) == 0 {
		return ""
	}
	return strings.Join(b.log, "\n") + "\n"
}

func (b *box) resetTranscripts() {
	b.routes.ResetTranscript()
	b.nft.ResetTranscript()
	b.log = nil
}

func linkYAML(name, dev, gw string, weight int, extra string) string {
	return fmt.Sprintf("  - {name: %s, interface: %s, gateway: %s, weight: %d, nat: true%s}\n", name, dev, gw, weight, extra)
}

var (
	isp1 = func(w int) string { return linkYAML("isp1", "wan1", "192.0.2.1", w, "") }
	isp2 = func(w int) string { return linkYAML("isp2", "wan2", "198.51.100.1", w, "") }
	isp3 = func(w int) string { return linkYAML("isp3", "wan3", "203.0.113.1", w, "") }
)

func cfg(links ...string) string { return "links:\n" + strings.Join(links, "") }

// resolve does what the commands do: parse, then take the links' marks
// and tables from the records in the table.
func (b *box) resolve(t *testing.T, y string) *config.Config {
	t.Helper()
	c, err := config.Resolve(configtest.MustParse(t, y), b.kernel())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (b *box) apply(t *testing.T, y string) *Result {
	t.Helper()
	res, err := b.tryApply(b.kernel(), y)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (b *box) tryApply(k *Kernel, y string) (*Result, error) {
	parsed, err := config.Parse("f.yaml", []byte(y))
	if err != nil {
		return nil, err
	}
	c, err := config.Resolve(parsed, k)
	if err != nil {
		return nil, err
	}
	d, err := k.Prepare(c)
	if err != nil {
		return nil, err
	}
	return k.Apply(d)
}

func (b *box) down(t *testing.T) *Result {
	t.Helper()
	res, err := b.kernel().Down()
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// withoutLoadedCT drops conntrack sysctls at their kernel default: they
// appear when the nft table loads nf_conntrack, and stay.
func withoutLoadedCT(dump string) string {
	var out []string
	for _, l := range strings.SplitAfter(dump, "\n") {
		if !(strings.HasPrefix(l, "net.netfilter.") && strings.HasSuffix(l, " = 0\n")) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got; -update rewrites it):\n%s", path, diff)
	}
}

func TestApplyFromEmpty(t *testing.T) {
	b := newBox()
	before := b.dump()
	res := b.apply(t, cfg(isp1(3), isp2(1)))
	golden(t, "apply_empty.golden", b.transcript())
	golden(t, "apply_empty_state.golden", b.dump())
	if got, want := res.Writes, b.routes.Writes()+b.nft.Writes(); got != want {
		t.Errorf("Result.Writes = %d, the fakes saw %d", got, want)
	}
	if !res.Table {
		t.Error("Result.Table false: the table was written")
	}
	// The originals are in the table before the first sysctl is written.
	if first := b.nft.Transcript[0]; !strings.Contains(first, "net/ipv4/conf/wan1/rp_filter=1") || !strings.Contains(b.log[0], "add chain inet flowpin state") {
		t.Errorf("first nft transaction does not save the originals:\n%s", first)
	}
	if len(b.flows.flushed) != 0 {
		t.Errorf("first apply flushed %v", b.flows.flushed)
	}

	b.resetTranscripts()
	res = b.apply(t, cfg(isp1(3), isp2(1)))
	if res.Writes != 0 || b.routes.Writes() != 0 || b.nft.Writes() != 0 || res.Table {
		t.Errorf("second apply wrote %d times (table: %v):\n%s", res.Writes, res.Table, b.transcript())
	}

	b.resetTranscripts()
	b.down(t)
	golden(t, "down.golden", b.transcript())
	if diff := cmp.Diff(before, withoutLoadedCT(b.dump())); diff != "" {
		t.Errorf("down left the box different from before apply (-before +after):\n%s", diff)
	}
	b.resetTranscripts()
	if res := b.down(t); res.Writes != 0 {
		t.Errorf("second down wrote %d times", res.Writes)
	}
}

func TestReweightChangesOnlyTheMultipathRoute(t *testing.T) {
	b := newBox()
	b.apply(t, cfg(isp1(3), isp2(1)))
	b.resetTranscripts()
	b.apply(t, cfg(isp1(1), isp2(4)))
	want := []string{"ip route replace default table 100 proto 201 nexthop via 192.0.2.1 dev wan1 weight 1 nexthop via 198.51.100.1 dev wan2 weight 4"}
	if diff := cmp.Diff(want, b.routes.Transcript); diff != "" {
		t.Errorf("re-weighting (-want +got):\n%s", diff)
	}
	if n := b.nft.Writes(); n != 0 {
		t.Errorf("re-weighting wrote the nft table %d times", n)
	}
}

func TestLinkGoesUnusable(t *testing.T) {
	b := newBox()
	b.apply(t, cfg(isp1(3), isp2(1)))
	b.resetTranscripts()
	wan2 := b.routes.Ifaces["wan2"]
	wan2.Up = false
	b.routes.Ifaces["wan2"] = wan2
	res := b.apply(t, cfg(isp1(3), isp2(1)))
	golden(t, "link_down.golden", b.transcript())
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "interface wan2 is down") {
		t.Errorf("warnings = %q", res.Warnings)
	}
	// Back up: the same state as before it went down.
	wan2.Up = true
	b.routes.Ifaces["wan2"] = wan2
	b.resetTranscripts()
	b.apply(t, cfg(isp1(3), isp2(1)))
	fresh := newBox()
	fresh.apply(t, cfg(isp1(3), isp2(1)))
	if diff := cmp.Diff(fresh.dump(), b.dump()); diff != "" {
		t.Errorf("after the link came back (-fresh apply +got):\n%s", diff)
	}
}

// A link whose interface has no address yet (DHCP) and then gets one.
func TestLinkWithoutAddress(t *testing.T) {
	b := newBox()
	wan3 := b.routes.Ifaces["wan3"]
	b.routes.Ifaces["wan3"] = iface("wan3", true)
	b.apply(t, cfg(isp1(1), isp2(1), isp3(1)))
	st, _ := b.routes.Owned()
	for _, r := range st.Routes {
		if r.Table == 103 {
			t.Errorf("route in the table of a link without an address: %s", r.Spec())
		}
	}
	b.routes.Ifaces["wan3"] = wan3
	b.resetTranscripts()
	b.apply(t, cfg(isp1(1), isp2(1), isp3(1)))
	if !slices.ContainsFunc(b.routes.Transcript, func(s string) bool { return strings.Contains(s, "table 103") }) {
		t.Errorf("link table not filled when the address came:\n%s", b.transcript())
	}
}

// failAt makes a box's fakes fail the write or transaction whose command
// contains match; it returns the error used.
func TestRollbackAtEachStep(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name  string
		setup func(b *box)
	}{
		{"records", func(b *box) { b.nft.FailNth(1, boom) }},
		{"sysctl", func(b *box) {
			b.routes.FailWhen(func(cmd string) bool { return strings.Contains(cmd, "wan2.rp_filter") }, boom)
		}},
		{"route", func(b *box) {
			b.routes.FailWhen(func(cmd string) bool { return strings.HasPrefix(cmd, "ip route replace default table 100") }, boom)
		}},
		{"rule", func(b *box) {
			b.routes.FailWhen(func(cmd string) bool { return strings.HasPrefix(cmd, "ip rule add pref 1102") }, boom)
		}},
		{"nft table", func(b *box) { b.nft.FailNth(2, boom) }},
		{"first write", func(b *box) { b.routes.FailNth(1, boom) }},
		{"last route write", func(b *box) {
			b.routes.FailWhen(func(cmd string) bool { return strings.HasPrefix(cmd, "ip rule add pref 1402") }, boom)
		}},
	} {
		for _, from := range []string{"empty", "applied"} {
			t.Run(tc.name+"/"+from, func(t *testing.T) {
				b := newBox()
				next := cfg(isp1(3), isp2(1))
				if from == "applied" {
					// An earlier apply with one link; the next adds one.
					b.apply(t, cfg(isp1(1)))
					b.routes.Sysctls["net/ipv4/conf/wan2/rp_filter"] = "1"
					next = cfg(isp1(3), isp2(1), isp3(2))
				}
				before := b.dump()
				tc.setup(b)
				_, err := b.tryApply(b.kernel(), next)
				if !errors.Is(err, boom) {
					t.Fatalf("apply returned %v, want the injected error", err)
				}
				b.routes.Hook, b.nft.Hook = nil, nil
				if diff := cmp.Diff(before, b.dump()); diff != "" {
					t.Errorf("rollback left the box different (-before +after):\n%s", diff)
				}
				if len(b.flows.flushed) != 0 {
					t.Errorf("a failed apply flushed %v", b.flows.flushed)
				}
			})
		}
	}
}

// A write that fails during the rollback too is reported, with the cause.
func TestRollbackFailureIsReported(t *testing.T) {
	b := newBox()
	boom := errors.New("boom")
	b.routes.FailWhen(func(cmd string) bool { return strings.HasPrefix(cmd, "ip rule") || strings.Contains(cmd, "route del") }, boom)
	_, err := b.tryApply(b.kernel(), cfg(isp1(3), isp2(1)))
	if err == nil || !strings.Contains(err.Error(), "roll back") {
		t.Fatalf("err = %v, want the cause and the failed undo", err)
	}
}

func TestCollisionsRefusedWithNothingWritten(t *testing.T) {
	for _, tc := range []struct {
		name    string
		foreign []rules.ForeignRule
		routes  map[int][]string
		want    string
	}{
		{"rule uses a link table", []rules.ForeignRule{{Rule: rules.Rule{Priority: 500, Table: 102, SuppressPrefixlen: -1}, Text: "500: from all lookup 102"}}, nil, "links[1].table: table 102 is already used by ip rule"},
		{"rule uses the balance table", []rules.ForeignRule{{Rule: rules.Rule{Priority: 500, Table: 100, SuppressPrefixlen: -1}, Text: "500: from all lookup 100"}}, nil, "balance_table: table 100"},
		{"rule uses a mark", []rules.ForeignRule{{Rule: rules.Rule{Priority: 500, Mark: 0x200, Mask: 0xff00, Table: 7, SuppressPrefixlen: -1}, Text: "500: from all fwmark 0x200/0xff00 lookup 7"}}, nil, "links[1].mark: 0x200 collides"},
		{"rule overlaps the mask", []rules.ForeignRule{{Rule: rules.Rule{Priority: 500, Mark: 0x8000, Mask: 0x8000, Table: 7, SuppressPrefixlen: -1}, Text: "500: from all fwmark 0x8000/0x8000 lookup 7"}}, nil, "mark_mask: 0xff00 overlaps"},
		{"foreign routes in a table", nil, map[int][]string{101: {"default via 10.0.0.1 dev lan table 101 proto 4"}}, "links[0].table: table 101 already holds routes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBox()
			b.routes.Foreign = tc.foreign
			b.routes.ForeignRouteText = tc.routes
			_, err := b.tryApply(b.kernel(), cfg(isp1(3), isp2(1)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if n := b.routes.Writes() + b.nft.Writes(); n != 0 {
				t.Errorf("%d writes before refusing:\n%s", n, b.transcript())
			}
		})
	}
}

// VPNs beside flowpin: wg-quick's rules (a full-mask `not fwmark 0xca6c`
// and main with suppress_prefixlength 0) and Tailscale's (0x80000/0xff0000)
// match only marks with bits outside flowpin's mask, so apply goes on.
func TestVPNRulesAccepted(t *testing.T) {
	b := newBox()
	b.routes.Foreign = []rules.ForeignRule{
		{Rule: rules.Rule{Priority: 32764, Table: 254, SuppressPrefixlen: 0}, Text: "32764: from all lookup main suppress_prefixlength 0"},
		{Rule: rules.Rule{Priority: 32765, Mark: 0xca6c, Mask: 0xffffffff, Table: 51820, SuppressPrefixlen: -1}, Text: "32765: not from all fwmark 0xca6c lookup 51820"},
		{Rule: rules.Rule{Priority: 5210, Mark: 0x80000, Mask: 0xff0000, Table: 254, SuppressPrefixlen: -1}, Text: "5210: from all fwmark 0x80000/0xff0000 lookup main"},
	}
	if _, err := b.tryApply(b.kernel(), cfg(isp1(3), isp2(1))); err != nil {
		t.Fatalf("apply beside VPN rules: %v", err)
	}
}

// A crash (SIGKILL) after any number of writes, then apply and down,
// must leave every sysctl at its value from before flowpin. Writes after
// the crash point fail, the rollback's too, as if the process was gone.
func TestCrashThenApplyAndDownRestoresSysctls(t *testing.T) {
	crash := errors.New("killed")
	full := newBox()
	full.apply(t, cfg(isp1(3), isp2(1), isp3(1)))
	total := full.routes.Writes() + full.nft.Writes()
	for _, from := range []string{"empty", "applied"} {
		for n := 0; n <= total; n++ {
			b := newBox()
			if from == "applied" {
				b.apply(t, cfg(isp1(1)))
			}
			count := 0
			frozen := func(string) error {
				count++
				if count > n {
					return crash
				}
				return nil
			}
			b.routes.Hook, b.nft.Hook = frozen, frozen
			_, _ = b.tryApply(b.kernel(), cfg(isp1(3), isp2(1), isp3(1)))
			b.routes.Hook, b.nft.Hook = nil, nil
			// A new process: nothing remembered but what is in the kernel.
			b.apply(t, cfg(isp1(3), isp2(1), isp3(1)))
			b.down(t)
			if diff := cmp.Diff(startSysctls, b.routes.Sysctls, cmpSysctls); diff != "" {
				t.Errorf("%s, killed after %d writes, then apply+down: sysctls (-before +after):\n%s", from, n, diff)
			}
			if st, _ := b.routes.Owned(); len(st.Rules)+len(st.Routes) > 0 || b.nft.Spec() != nil {
				t.Errorf("%s, killed after %d writes, then apply+down: left behind:\n%s", from, n, b.dump())
			}
		}
	}
}

// cmpSysctls ignores keys the box did not have before (the conntrack ones
// appear when nf_conntrack loads) if they are at the kernel default.
var cmpSysctls = cmp.FilterValues(func(a, b map[string]string) bool { return true }, cmp.Transformer("known", func(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if _, ok := startSysctls[k]; ok || v != "0" {
			out[k] = v
		}
	}
	return out
}))

// A down killed half way: the next down still restores everything.
func TestCrashDuringDown(t *testing.T) {
	crash := errors.New("killed")
	for n := 0; n < 20; n++ {
		b := newBox()
		b.apply(t, cfg(isp1(3), isp2(1)))
		count := 0
		frozen := func(string) error {
			count++
			if count > n {
				return crash
			}
			return nil
		}
		b.routes.Hook, b.nft.Hook = frozen, frozen
		_, _ = b.kernel().Down()
		b.routes.Hook, b.nft.Hook = nil, nil
		b.down(t)
		if diff := cmp.Diff(startSysctls, b.routes.Sysctls, cmpSysctls); diff != "" {
			t.Errorf("down killed after %d writes, then down: sysctls (-before +after):\n%s", n, diff)
		}
	}
}

func TestDownReportsErrorsAndKeepsRecords(t *testing.T) {
	b := newBox()
	b.apply(t, cfg(isp1(3), isp2(1)))
	boom := errors.New("boom")
	b.routes.FailWhen(func(cmd string) bool { return strings.Contains(cmd, "rp_filter") }, boom)
	if _, err := b.kernel().Down(); !errors.Is(err, boom) {
		t.Fatalf("down: %v, want the sysctl error", err)
	}
	if b.nft.Spec() == nil {
		t.Fatal("down deleted the table although sysctls were still to be restored")
	}
	b.routes.Hook = nil
	b.down(t)
	if diff := cmp.Diff(startSysctls, b.routes.Sysctls, cmpSysctls); diff != "" {
		t.Errorf("sysctls (-before +after):\n%s", diff)
	}
}

// A link that leaves the config gives its sysctls back.
func TestRemovedLinkRestoresItsSysctls(t *testing.T) {
	b := newBox()
	b.apply(t, cfg(isp1(3), isp2(1)))
	b.apply(t, cfg(isp1(3)))
	if got := b.routes.Sysctls["net/ipv4/conf/wan2/rp_filter"]; got != "1" {
		t.Errorf("wan2 rp_filter = %s after its link left, want 1", got)
	}
	if got := b.routes.Sysctls["net/ipv4/conf/wan1/rp_filter"]; got != "2" {
		t.Errorf("wan1 rp_filter = %s, want 2", got)
	}
}

// Removing the first of three links: the others keep their marks and
// tables, and only the removed link's flows are flushed, after the change.
func TestRemovedLinkKeepsOthersAndFlushesItsFlows(t *testing.T) {
	b := newBox()
	b.apply(t, cfg(isp1(1), isp2(1), isp3(1)))
	before := b.nft.Spec().Links
	var order []string
	b.routes.Hook = func(cmd string) error { order = append(order, cmd); return nil }
	b.nft.Hook = func(string) error { order = append(order, "nft"); return nil }
	b.flows.flushed = nil
	res := b.apply(t, cfg(isp2(1), isp3(1)))
	after := b.nft.Spec().Links
	if diff := cmp.Diff(before[1:], after, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("isp2 and isp3 changed mark (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"0x100/0xff00"}, b.flows.flushed); diff != "" {
		t.Errorf("flushed (-want +got):\n%s", diff)
	}
	if last := res.Commands[len(res.Commands)-1]; last != "conntrack -D --mark 0x100/0xff00" {
		t.Errorf("flush is not the last step: %q", res.Commands)
	}
	st, _ := b.routes.Owned()
	for _, r := range st.Rules {
		if r.Mask != 0 && r.Mark == 0x200 && r.Table != 102 || r.Mark == 0x300 && r.Table != 103 {
			t.Errorf("fwmark rule moved: %s", r.Command("add"))
		}
	}
	// Plan shows the flush too.
	k := b.kernel()
	d, err := k.Prepare(b.resolve(t, cfg(isp3(1))))
	if err != nil {
		t.Fatal(err)
	}
	lines, err := k.Changes(d)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(lines, "conntrack -D --mark 0x200/0xff00") {
		t.Errorf("plan does not show the flush:\n%s", strings.Join(lines, "\n"))
	}
}

// A link added in the same apply that removes another does not take the
// removed one's mark: its flows still carry it until the flush.
func TestNewLinkAvoidsAMarkReleasedInTheSameApply(t *testing.T) {
	b := newBox()
	b.apply(t, cfg(isp1(1), isp2(1)))
	b.flows.flushed = nil
	b.apply(t, cfg(isp2(1), isp3(1)))
	links := b.nft.Spec().Links
	if links[0].Mark != 0x200 || links[1].Mark != 0x300 {
		t.Errorf("marks = %#x, %#x, want isp2 0x200 and a fresh 0x300 for isp3", links[0].Mark, links[1].Mark)
	}
	if diff := cmp.Diff([]string{"0x100/0xff00"}, b.flows.flushed); diff != "" {
		t.Errorf("flushed (-want +got):\n%s", diff)
	}
	// Once released, the mark is free again.
	b.apply(t, cfg(isp2(1), isp3(1), linkYAML("isp4", "wan1", "192.0.2.1", 1, "")))
	if got := b.nft.Spec().Links[2].Mark; got != 0x100 {
		t.Errorf("isp4 got mark %#x, want the free 0x100", got)
	}
}

func TestFlushFailureIsAWarning(t *testing.T) {
	b := newBox()
	b.apply(t, cfg(isp1(1), isp2(1)))
	b.flows.err = errors.New("conntrack: permission denied")
	res := b.apply(t, cfg(isp2(1)))
	if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "permission denied") }) {
		t.Errorf("warnings = %q", res.Warnings)
	}
}

func TestChangesListsWhatApplyDoes(t *testing.T) {
	b := newBox()
	k := b.kernel()
	d, err := k.Prepare(b.resolve(t, cfg(isp1(3), isp2(1))))
	if err != nil {
		t.Fatal(err)
	}
	lines, err := k.Changes(d)
	if err != nil {
		t.Fatal(err)
	}
	if n := b.routes.Writes() + b.nft.Writes(); n != 0 {
		t.Fatalf("Changes wrote %d times", n)
	}
	res, err := k.Apply(d)
	if err != nil {
		t.Fatal(err)
	}
	var nftLines int
	for _, l := range lines {
		if strings.HasPrefix(l, "nft -f -") {
			nftLines++
			continue
		}
		if !slices.Contains(res.Commands, l) {
			t.Errorf("plan line not done by apply: %s", l)
		}
	}
	if nftLines != 2 {
		t.Errorf("plan has %d nft transactions, want 2 (records, table)", nftLines)
	}
	d, _ = k.Prepare(b.resolve(t, cfg(isp1(3), isp2(1))))
	if lines, _ := k.Changes(d); len(lines) != 0 {
		t.Errorf("plan after apply: %q", lines)
	}
}

// The daemon's Kernel outlives the table: if someone deletes it, the
// values from before flowpin are still known.
func TestDeletedTableKeepsOriginalsInALongLivedKernel(t *testing.T) {
	b := newBox()
	k := b.kernel()
	if _, err := b.tryApply(k, cfg(isp1(3), isp2(1))); err != nil {
		t.Fatal(err)
	}
	if _, err := b.nft.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.tryApply(k, cfg(isp1(3), isp2(1))); err != nil {
		t.Fatal(err)
	}
	b.down(t)
	if diff := cmp.Diff(startSysctls, b.routes.Sysctls, cmpSysctls); diff != "" {
		t.Errorf("sysctls (-before +after):\n%s", diff)
	}
}

func TestPrepareErrors(t *testing.T) {
	b := newBox()
	delete(b.routes.Ifaces, "wan2")
	if _, err := b.tryApply(b.kernel(), cfg(isp1(3), isp2(1))); err == nil || !strings.Contains(err.Error(), `"wan2" does not exist`) {
		t.Errorf("err = %v", err)
	}
	d, err := b.kernel().PrepareWith(b.resolve(t, cfg(isp1(3), isp2(1))), plan.Options{MissingOK: true})
	if err != nil {
		t.Fatal(err)
	}
	if d.Links[1].Usable {
		t.Error("missing interface planned usable")
	}
}

// nft.Spec.Current reads back as UpToDate, which the fake relies on.
func TestSpecCurrentIsUpToDate(t *testing.T) {
	s := nft.Spec{Mask: 0xff00, Links: []nft.Link{{Name: "a", Iface: "x", Mark: 0x100}}, Records: nft.Records{Sysctls: []nft.SysctlRecord{{Key: "a", Value: "1"}}}}
	if !s.UpToDate(s.Current()) {
		t.Error("Spec.Current is not UpToDate with its spec")
	}
	other := s
	other.Records = nft.Records{}
	if other.UpToDate(s.Current()) {
		t.Error("a spec with other records is UpToDate")
	}
}

// Every read apply and down make can fail: the error comes back and
// nothing is written.
func TestReadErrors(t *testing.T) {
	boom := errors.New("read boom")
	for _, what := range []string{"interfaces", "owned", "foreign rules", "foreign routes", "net/ipv4/conf/wan1/rp_filter", "nft"} {
		for _, op := range []string{"apply", "plan", "down"} {
			t.Run(what+"/"+op, func(t *testing.T) {
				b := newBox()
				if op == "down" {
					b.apply(t, cfg(isp1(3), isp2(1)))
				}
				before := b.dump()
				b.resetTranscripts()
				if what == "nft" {
					b.nft.ReadErr = boom
				} else {
					b.routes.ReadHook = func(w string) error {
						if w == what {
							return boom
						}
						return nil
					}
				}
				var err error
				k := b.kernel()
				switch op {
				case "apply":
					_, err = b.tryApply(k, cfg(isp1(3), isp2(1)))
				case "plan":
					var d *plan.Desired
					if d, err = k.Prepare(configtest.MustParse(t, cfg(isp1(3), isp2(1)))); err == nil {
						_, err = k.Changes(d)
					}
				case "down":
					_, err = k.Down()
				}
				b.routes.ReadHook, b.nft.ReadErr = nil, nil
				readByOp := op != "down" || what == "owned" || what == "nft"
				if readByOp && !errors.Is(err, boom) {
					t.Errorf("err = %v, want the read error", err)
				}
				if readByOp && b.transcript() != "" {
					t.Errorf("wrote after a failed read:\n%s", b.transcript())
				}
				if readByOp && b.dump() != before {
					t.Error("state changed after a failed read")
				}
			})
		}
	}
}

// Down goes on past a failed delete and reports it; a second down
// finishes the job.
func TestDownContinuesPastErrors(t *testing.T) {
	b := newBox()
	b.apply(t, cfg(isp1(3), isp2(1)))
	boom := errors.New("boom")
	b.routes.FailWhen(func(cmd string) bool { return strings.HasPrefix(cmd, "ip rule del pref 1100") }, boom)
	res, err := b.kernel().Down()
	if !errors.Is(err, boom) {
		t.Fatalf("down: %v, want the rule error", err)
	}
	if len(res.Commands) == 0 {
		t.Error("down stopped at the first error")
	}
	b.routes.Hook = nil
	b.down(t)
	if st, _ := b.routes.Owned(); len(st.Rules)+len(st.Routes) > 0 || b.nft.Spec() != nil {
		t.Errorf("left behind:\n%s", b.dump())
	}

	b = newBox()
	b.apply(t, cfg(isp1(3), isp2(1)))
	b.nft.FailAlways(boom)
	if _, err := b.kernel().Down(); !errors.Is(err, boom) {
		t.Fatalf("down: %v, want the table error", err)
	}
	b.nft.Hook = nil
	b.down(t)
	if b.nft.Spec() != nil {
		t.Errorf("table left behind:\n%s", b.dump())
	}
}

// A link whose mark the config changes: its flows under the old mark go.
func TestExplicitMarkChangeFlushesTheOldMark(t *testing.T) {
	b := newBox()
	b.apply(t, cfg(isp1(1), isp2(1)))
	b.flows.flushed = nil
	b.apply(t, cfg(linkYAML("isp1", "wan1", "192.0.2.1", 1, ", mark: 0x700"), isp2(1)))
	if diff := cmp.Diff([]string{"0x100/0xff00"}, b.flows.flushed); diff != "" {
		t.Errorf("flushed (-want +got):\n%s", diff)
	}
	if got := b.nft.Spec().Links[0].Mark; got != 0x700 {
		t.Errorf("isp1 mark %#x, want 0x700", got)
	}
}

// A late sysctl that cannot be written is a warning: the rest is applied.
func TestLateSysctlFailureIsAWarning(t *testing.T) {
	b := newBox()
	boom := errors.New("boom")
	b.routes.FailWhen(func(cmd string) bool { return strings.Contains(cmd, "nf_conntrack_acct") }, boom)
	res := b.apply(t, cfg(isp1(3), isp2(1)))
	if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "boom") }) {
		t.Errorf("warnings = %q", res.Warnings)
	}
}

// gateway6: auto on a router that forwards IPv6 needs accept_ra=2, or the
// kernel ignores the advertisements: apply says so.
func TestAcceptRAWarning(t *testing.T) {
	b := newBox()
	b.routes.Sysctls["net/ipv6/conf/wan2/forwarding"] = "1"
	b.routes.Sysctls["net/ipv6/conf/wan2/accept_ra"] = "1"
	b.routes.Sysctls["net/ipv6/conf/wan1/forwarding"] = "1"
	b.routes.Sysctls["net/ipv6/conf/wan1/accept_ra"] = "2"
	c := b.resolve(t, "links:\n  - {name: isp1, interface: wan1, gateway: 192.0.2.1, gateway6: auto}\n  - {name: isp2, interface: wan2, gateway: 198.51.100.1, gateway6: auto}\n")
	d, err := b.kernel().Prepare(c)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(d.Warnings, "\n")
	if !strings.Contains(got, "link isp2: IPv6 forwarding is on and net.ipv6.conf.wan2.accept_ra is 1") || strings.Contains(got, "link isp1: IPv6 forwarding") {
		t.Errorf("warnings:\n%s", got)
	}
}

// apply's summary counts the links really in the multipath route of new
// flows: a link of a lower tier is up, but on standby and not in it.
func TestSummaryCountsTheMultipathRoute(t *testing.T) {
	b := newBox()
	for _, tc := range []struct{ name, y, want string }{
		{"one tier", cfg(isp1(3), isp2(1)), "applied: 2 of 2 links in the multipath route, 7 kernel writes"},
		{"isp2 a backup", cfg(isp1(1), linkYAML("isp2", "wan2", "198.51.100.1", 1, ", tier: 2")),
			"applied: 1 of 2 links in the multipath route (on standby in a lower tier: isp2), 7 kernel writes"},
	} {
		d, err := b.kernel().Prepare(b.resolve(t, tc.y))
		if err != nil {
			t.Fatal(err)
		}
		if got := Summary(d, 7); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

// IPv6 on a point-to-point session (gateway6: auto) beside an Ethernet
// link: the session's table is device-only, its leg of the IPv6 multipath
// route names the placeholder next hop (the fake, as the kernel, refuses a
// device-only IPv6 leg); a re-apply writes nothing; the session going down
// leaves the other link alone in the route; down restores everything.
func TestPointToPointIPv6(t *testing.T) {
	b := newBox()
	wan2 := rules.Iface{Name: "wan2", Up: true, PointToPoint: true,
		Addrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.2/32"), netip.MustParsePrefix("fe80::5c1:2ff:fe03:4/64"), netip.MustParsePrefix("2001:db8:2::2/64")},
		Peers: map[netip.Addr]netip.Prefix{netip.MustParseAddr("198.51.100.2"): netip.MustParsePrefix("198.51.100.1/32")}}
	b.routes.Ifaces["wan2"] = wan2
	wan1 := b.routes.Ifaces["wan1"]
	wan1.Addrs = append(wan1.Addrs, netip.MustParsePrefix("2001:db8:1::2/64"))
	b.routes.Ifaces["wan1"] = wan1
	for k, v := range map[string]string{"net/ipv6/fib_multipath_hash_fields": "7", "net/ipv6/fib_multipath_hash_policy": "0", "net/ipv6/conf/wan2/forwarding": "1", "net/ipv6/conf/wan2/accept_ra": "1"} {
		b.routes.Sysctls[k] = v
	}
	before := b.dump()
	y := cfg(linkYAML("isp1", "wan1", "192.0.2.1", 3, ", gateway6: '2001:db8:1::1'"), linkYAML("isp2", "wan2", "auto", 1, ", gateway6: auto, check: {targets: ['2001:db8:ff::1']}"))
	res := b.apply(t, y)
	if len(res.Warnings) != 0 {
		t.Errorf("warnings: %q", res.Warnings)
	}
	golden(t, "p2p6_apply.golden", b.transcript())
	for _, want := range []string{
		"ip -6 route replace default dev wan2 table 102 proto 201 src 2001:db8:2::2",
		"ip -6 route replace default table 100 proto 201 nexthop via 2001:db8:1::1 dev wan1 weight 3 nexthop via fe80::1 dev wan2 weight 1",
	} {
		if !slices.Contains(b.routes.Transcript, want) {
			t.Errorf("no %q in:\n%s", want, strings.Join(b.routes.Transcript, "\n"))
		}
	}
	b.resetTranscripts()
	if res := b.apply(t, y); res.Writes != 0 {
		t.Errorf("second apply wrote %d times:\n%s", res.Writes, b.transcript())
	}
	wan2.Up = false
	b.routes.Ifaces["wan2"] = wan2
	b.resetTranscripts()
	b.apply(t, y)
	if want := "ip -6 route replace default via 2001:db8:1::1 dev wan1 table 100 proto 201"; !slices.Contains(b.routes.Transcript, want) {
		t.Errorf("session down: no %q in:\n%s", want, strings.Join(b.routes.Transcript, "\n"))
	}
	b.down(t)
	if diff := cmp.Diff(before, withoutLoadedCT(b.dump())); diff != "" {
		t.Errorf("down left the box different from before apply (-before +after):\n%s", diff)
	}
}
