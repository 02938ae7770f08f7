package status

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"flowpin/lb/apply"
	"flowpin/lb/config"
	"flowpin/lb/health"
	"flowpin/nft"
	"flowpin/nft/ct"
	"flowpin/nft/ct/cttest"
	"flowpin/nft/nfttest"
	"flowpin/rules"
	"flowpin/rules/rulestest"
)

var (
	_ Conntrack = (*ct.Conntrack)(nil)
	_ Conntrack = (*cttest.Fake)(nil)
	_ NFT       = (*nft.Conn)(nil)
	_ NFT       = (*nfttest.Fake)(nil)
	_ Routing   = (*rules.Kernel)(nil)
	_ Routing   = (*rulestest.Fake)(nil)
)

// collectYAML is a dual-WAN box with a policy and a traffic rule, so the
// status has every part.
const collectYAML = `links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, weight: 3, nat: true}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, weight: 1, nat: true}
policies:
  - {name: isp2-first, tiers: [[isp2], [isp1]]}
rules:
  - {name: https, proto: tcp, dst_ports: [443], policy: isp2-first}
`

// collectBox is a namespace where flowpin was applied, in the adapters'
// fakes, with a conntrack table.
type collectBox struct {
	c      *config.Config
	routes *rulestest.Fake
	nft    *nfttest.Fake
	ct     *cttest.Fake
}

func newCollectBox(t *testing.T, y string) *collectBox {
	t.Helper()
	ifs := map[string]rules.Iface{}
	for name, addr := range map[string]string{"lan": "10.77.0.1/24", "wan1": "192.0.2.2/24", "wan2": "198.51.100.2/24"} {
		ifs[name] = rules.Iface{Name: name, Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix(addr)}}
	}
	b := &collectBox{
		routes: rulestest.New(ifs, map[string]string{
			"net/ipv4/conf/wan1/rp_filter":       "1",
			"net/ipv4/conf/wan2/rp_filter":       "1",
			"net/ipv4/fib_multipath_hash_fields": "7",
			"net/ipv4/fib_multipath_hash_policy": "0",
			"net/ipv4/fib_multipath_use_neigh":   "0",
		}),
		nft: &nfttest.Fake{},
		ct:  &cttest.Fake{},
	}
	parsed, err := config.Parse("f.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if b.c, err = config.Assign(parsed, nil); err != nil {
		t.Fatal(err)
	}
	k := apply.New(b.routes, b.nft)
	d, err := k.Prepare(b.c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Apply(d); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *collectBox) kernel() Kernel { return Kernel{Routes: b.routes, NFT: b.nft, CT: b.ct} }

// flow is a counted IPv4 TCP flow of mark with these bytes out and in.
func flow(mark uint32, out, in uint64) ct.FlowRecord {
	return ct.FlowRecord{Family: unix.AF_INET, Mark: mark, Proto: 6, Counted: true,
		Orig: ct.Counter{Packets: 1, Bytes: out}, Reply: ct.Counter{Packets: 1, Bytes: in},
		OrigSrc: ct.Endpoint{Addr: netip.MustParseAddr("10.77.0.2"), Port: 40000, HasPort: true},
		OrigDst: ct.Endpoint{Addr: netip.MustParseAddr("203.0.113.10"), Port: 443, HasPort: true}}
}

type fakeCounts struct {
	t     Tally
	err   error
	calls int
}

func (f *fakeCounts) FlowTally() (Tally, error) { f.calls++; return f.t, f.err }

type fakeHealth struct {
	h   []health.LinkHealth
	err error
}

func (f fakeHealth) Health(context.Context) ([]health.LinkHealth, error) { return f.h, f.err }

var collectNow = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func clock() time.Time { return collectNow }

var ctx = context.Background()

// Without a daemon (flowpin status as root, none running): one dump of
// the table, counted per link; states unknown; the policies and rules as
// applied, with the rules' hits.
func TestCollectFromDump(t *testing.T) {
	b := newCollectBox(t, collectYAML)
	isp1, isp2 := b.c.Links[0].Mark, b.c.Links[1].Mark
	b.ct.Flows = []ct.FlowRecord{flow(isp1, 100, 1000), flow(isp1, 200, 2000), flow(isp2, 300, 3000), flow(0, 5, 50)}
	b.nft.Hits = map[string]nft.Hits{"https": {Packets: 2, Bytes: 120}}
	st, err := Collect(ctx, b.c, Sources{Kernel: b.kernel(), Health: fakeHealth{err: ErrNoDaemon}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if b.ct.Dumps() == 0 {
		t.Error("no dump of the conntrack table")
	}
	got := map[string]Counters{}
	for _, l := range st.Links {
		got[l.Name] = l.Counters
		if l.State != health.StateUnknown || l.StateSince != nil {
			t.Errorf("link %s without a daemon: state %s since %v", l.Name, l.State, l.StateSince)
		}
		if !l.InMultipath {
			t.Errorf("link %s is not in the applied multipath route", l.Name)
		}
	}
	want := map[string]Counters{
		"isp1": {Flows: 2, BytesOut: 300, BytesIn: 3000, PacketsOut: 2, PacketsIn: 2},
		"isp2": {Flows: 1, BytesOut: 300, BytesIn: 3000, PacketsOut: 1, PacketsIn: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counts per link (-want +got):\n%s", diff)
	}
	if st.Unpinned.Flows != 1 || st.Total.Flows != 4 || st.Links[0].FlowShare != 2.0/3 || st.Links[0].WeightShare != 0.75 {
		t.Errorf("unpinned %+v total %+v shares %v/%v", st.Unpinned, st.Total, st.Links[0].FlowShare, st.Links[0].WeightShare)
	}
	if st.Daemon || st.BytesFrom != "" || !st.Time.Equal(collectNow) || st.Schema != StatusSchema || st.MarkMask != b.c.MarkMask {
		t.Errorf("header: daemon %v bytes_from %q time %v schema %d mask %#x", st.Daemon, st.BytesFrom, st.Time, st.Schema, st.MarkMask)
	}
	if len(st.Policies) != 2 || st.Policies[1].Name != "isp2-first" || st.Policies[1].ActiveTier != 1 || strings.Join(st.Policies[1].ActiveLinks, ",") != "isp2" {
		t.Errorf("policies %+v", st.Policies)
	}
	if len(st.Rules) != 1 || st.Rules[0].Name != "https" || st.Rules[0].Hits != 2 || st.Rules[0].HitBytes != 120 {
		t.Errorf("rules %+v", st.Rules)
	}
	// apply turns accounting on; nothing else is amiss.
	if !st.Acct || len(st.Warnings) != 0 {
		t.Errorf("acct %v, warnings %q", st.Acct, st.Warnings)
	}
}

// A flowtable in the ruleset (another table's: OpenWrt's offload) is
// named in the warnings, with what it means for the counts; none, no
// warning (TestCollectFromDump). This kernel has no flowtables, so the
// fake is the test.
func TestCollectFlowtable(t *testing.T) {
	b := newCollectBox(t, collectYAML)
	b.nft.FlowtableNames = []string{"inet fw4 ft"}
	st, err := Collect(ctx, b.c, Sources{Kernel: b.kernel(), Health: fakeHealth{err: ErrNoDaemon}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Warnings) != 1 || !strings.HasPrefix(st.Warnings[0], "flowtable inet fw4 ft: flows it offloads keep their link, but their packets skip nft") {
		t.Errorf("warnings %q", st.Warnings)
	}
	b.nft.ReadErr = errors.New("netlink: permission denied")
	if _, err := Collect(ctx, b.c, Sources{Kernel: b.kernel(), Health: fakeHealth{err: ErrNoDaemon}, Now: clock}); err == nil {
		t.Error("a ruleset that cannot be read: no error")
	}
}

// The daemon's status: the flows per mark from its memory, never a dump
// of the table; its health on every link.
func TestCollectFromDaemon(t *testing.T) {
	b := newCollectBox(t, collectYAML)
	isp1, isp2 := b.c.Links[0].Mark, b.c.Links[1].Mark
	b.ct.Flows = []ct.FlowRecord{flow(isp1, 1, 1)}
	counts := &fakeCounts{t: Tally{isp1: {Flows: 7, BytesOut: 700}, isp2: {Flows: 1, BytesIn: 10}}}
	since := collectNow.Add(-time.Minute)
	h := fakeHealth{h: []health.LinkHealth{
		{Name: "isp1", State: health.StateUp, Reason: "probes answered", LastChange: since, RTTMillis: 12, Window: 10},
		{Name: "isp2", State: health.StateDown, Reason: "carrier lost", LastChange: since},
	}}
	st, err := Collect(ctx, b.c, Sources{Kernel: b.kernel(), Counts: counts, Health: h, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if n := b.ct.Dumps(); n != 0 || counts.calls != 1 {
		t.Errorf("%d dumps of the table and %d reads of the counts, want none and one", n, counts.calls)
	}
	if st.Links[0].Flows != 7 || st.Links[0].BytesOut != 700 || st.Links[1].Flows != 1 || st.BytesFrom != BytesFromRules {
		t.Errorf("counts from memory: %+v, bytes from %q", st.Links, st.BytesFrom)
	}
	if !st.Daemon || st.Links[0].State != health.StateUp || st.Links[1].State != health.StateDown ||
		st.Links[1].Reason != "carrier lost" || st.Links[0].RTTMillis == nil || *st.Links[0].RTTMillis != 12 || !st.Links[0].StateSince.Equal(since) {
		t.Errorf("health: daemon %v, links %+v", st.Daemon, st.Links)
	}
	if len(st.Policies) != 2 || len(st.Rules) != 1 || st.Rules[0].Hits != 0 {
		t.Errorf("policies %+v rules %+v", st.Policies, st.Rules)
	}
	// The daemon's own count of the rules' hits wins over the table's.
	b.nft.Hits = map[string]nft.Hits{"https": {Packets: 1}}
	st, err = Collect(ctx, b.c, Sources{Kernel: b.kernel(), Counts: counts, Hits: hits{"https": {Packets: 9, Bytes: 540}}})
	if err != nil || len(st.Rules) != 1 || st.Rules[0].Hits != 9 || st.Rules[0].HitBytes != 540 {
		t.Errorf("rules with the daemon's hits: %v %+v", err, st.Rules)
	}
}

// Until the daemon's first count, its status counts from a dump, and then
// agrees with the CLI's; only the health and where bytes come from differ.
func TestCollectCountsNotReady(t *testing.T) {
	b := newCollectBox(t, collectYAML)
	isp1, isp2 := b.c.Links[0].Mark, b.c.Links[1].Mark
	b.ct.Flows = []ct.FlowRecord{flow(isp1, 100, 1000), flow(isp2, 300, 3000), flow(0x7700, 1, 1)}
	cli, err := Collect(ctx, b.c, Sources{Kernel: b.kernel(), Health: fakeHealth{err: ErrNoDaemon}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	dumps := b.ct.Dumps()
	d, err := Collect(ctx, b.c, Sources{Kernel: b.kernel(), Counts: &fakeCounts{err: ErrCountsNotReady}, Health: fakeHealth{}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if b.ct.Dumps() == dumps {
		t.Error("counts not ready, and no dump")
	}
	if d.BytesFrom != "" || !d.Daemon {
		t.Errorf("bytes from %q, daemon %v", d.BytesFrom, d.Daemon)
	}
	d.Daemon = false
	if diff := cmp.Diff(cli, d); diff != "" {
		t.Errorf("the daemon's status before its first count differs from the CLI's (-cli +daemon):\n%s", diff)
	}
	if len(cli.OtherMarks) != 1 || len(cli.Warnings) != 1 {
		t.Errorf("a flow of an unknown mark: %+v, warnings %q", cli.OtherMarks, cli.Warnings)
	}
}

// A daemon that runs but does not answer is said, as a warning; the
// status is still shown.
func TestCollectHealthUnavailable(t *testing.T) {
	b := newCollectBox(t, collectYAML)
	st, err := Collect(ctx, b.c, Sources{Kernel: b.kernel(), Health: fakeHealth{err: errors.New("the daemon answered 500: busy")}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if st.Daemon || len(st.Warnings) != 1 || st.Warnings[0] != "the daemon answered 500: busy" {
		t.Errorf("daemon %v, warnings %q", st.Daemon, st.Warnings)
	}
	// No source of health at all: states unknown, no warning.
	st, err = Collect(ctx, b.c, Sources{Kernel: b.kernel()})
	if err != nil || st.Daemon || len(st.Warnings) != 0 || st.Links[0].State != health.StateUnknown {
		t.Errorf("no health source: %v %+v", err, st)
	}
	if st.Time.IsZero() {
		t.Error("no clock given, and no time")
	}
}

// Nothing applied: said first, and the table is not dumped for nothing.
func TestCollectNotApplied(t *testing.T) {
	c := newCollectBox(t, collectYAML).c
	empty := &collectBox{routes: rulestest.New(nil, nil), nft: &nfttest.Fake{}, ct: &cttest.Fake{Flows: []ct.FlowRecord{flow(0, 1, 1)}}}
	counts := &fakeCounts{t: Tally{}}
	if _, err := Collect(ctx, c, Sources{Kernel: empty.kernel(), Counts: counts, Health: fakeHealth{}}); !errors.Is(err, ErrNotApplied) {
		t.Errorf("Collect: %v, want ErrNotApplied", err)
	}
	if _, err := CollectFlows(c, Sources{Kernel: empty.kernel()}, FlowQuery{}); !errors.Is(err, ErrNotApplied) {
		t.Errorf("CollectFlows: %v, want ErrNotApplied", err)
	}
	if empty.ct.Dumps() != 0 || counts.calls != 0 {
		t.Errorf("not applied, yet %d dumps and %d reads of counts", empty.ct.Dumps(), counts.calls)
	}
}

// Every read that fails fails the status, with the reason; a dump the
// kernel flags as interrupted is taken again.
func TestCollectErrors(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name   string
		break_ func(b *collectBox, src *Sources)
	}{
		{"nft table", func(b *collectBox, _ *Sources) { b.nft.ReadErr = boom }},
		{"ip rules", func(b *collectBox, _ *Sources) {
			b.routes.ReadHook = func(what string) error {
				if what == "owned" {
					return boom
				}
				return nil
			}
		}},
		{"conntrack", func(b *collectBox, _ *Sources) { b.ct.Hook = func() error { return boom } }},
		{"daemon counts", func(_ *collectBox, src *Sources) { src.Counts = &fakeCounts{err: boom} }},
	} {
		b := newCollectBox(t, collectYAML)
		src := Sources{Kernel: b.kernel(), Health: fakeHealth{}}
		tc.break_(b, &src)
		if st, err := Collect(ctx, b.c, src); !errors.Is(err, boom) {
			t.Errorf("%s fails: %v %+v", tc.name, err, st)
		}
	}

	b := newCollectBox(t, collectYAML)
	b.ct.Flows = []ct.FlowRecord{flow(b.c.Links[0].Mark, 1, 1)}
	interrupted := 0
	b.ct.Hook = func() error {
		if interrupted < 2 {
			interrupted++
			return ct.ErrDumpInterrupted
		}
		return nil
	}
	st, err := Collect(ctx, b.c, Sources{Kernel: b.kernel()})
	if err != nil || st.Links[0].Flows != 1 || st.Total.Flows != 1 {
		t.Errorf("after interrupted dumps: %v %+v", err, st)
	}
}

// The flow list: the flows of one link, largest first, ages against the
// clock.
func TestCollectFlows(t *testing.T) {
	b := newCollectBox(t, collectYAML)
	isp1, isp2 := b.c.Links[0].Mark, b.c.Links[1].Mark
	small, big := flow(isp1, 10, 10), flow(isp1, 500, 5000)
	big.Start = collectNow.Add(-90 * time.Second)
	b.ct.Flows = []ct.FlowRecord{small, flow(isp2, 9999, 9999), big}
	fl, err := CollectFlows(b.c, Sources{Kernel: b.kernel(), Now: clock}, FlowQuery{Link: "isp1", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if fl.Matched != 2 || len(fl.Flows) != 2 || fl.Flows[0].Link != "isp1" || fl.Flows[0].BytesIn != 5000 || fl.Flows[1].BytesIn != 10 {
		t.Fatalf("flows of isp1: %+v", fl)
	}
	if fl.Flows[0].AgeSeconds == nil || *fl.Flows[0].AgeSeconds != 90 {
		t.Errorf("age of the big flow: %v, want 90", fl.Flows[0].AgeSeconds)
	}
	if _, err := CollectFlows(b.c, Sources{Kernel: b.kernel()}, FlowQuery{Link: "isp9"}); err == nil || !strings.Contains(err.Error(), `no link "isp9"`) {
		t.Errorf("unknown link: %v", err)
	}
}
