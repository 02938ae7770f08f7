package status

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
	"flowpin/lb/health"
	"flowpin/nft/ct"
	"flowpin/rules"
)

// statusLinks is the dual-WAN config the other tests of this package use.
const statusLinks = configtest.TwoLinks

func statusConfig(t *testing.T, y string) *config.Config {
	t.Helper()
	c, err := config.Parse("test.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var statusAll4 = netip.MustParsePrefix("0.0.0.0/0")

func statusApplied(c *config.Config) *Applied {
	a := &Applied{Table: true, Acct: true}
	var nhs []rules.Nexthop
	for _, l := range c.Links {
		a.Rules = append(a.Rules, rules.Rule{Family: rules.V4, Mark: l.Mark, Mask: c.MarkMask, Table: l.Table})
		nhs = append(nhs, rules.Nexthop{Dev: l.Interface, Gw: l.Gateway, Weight: l.Weight})
	}
	a.Routes = []rules.Route{
		{Family: rules.V4, Table: c.Links[0].Table, Dst: statusAll4, Gw: c.Links[0].Gateway, Dev: c.Links[0].Interface},
		{Family: rules.V4, Table: c.BalanceTable, Dst: statusAll4, Nexthops: nhs},
	}
	return a
}

func TestStatusBuild(t *testing.T) {
	c := statusConfig(t, statusLinks)
	now := time.Unix(1700000000, 0).UTC()
	tally := Tally{
		0x100: {Flows: 6, BytesOut: 600, BytesIn: 6000, PacketsOut: 6, PacketsIn: 60},
		0x200: {Flows: 2, BytesOut: 200, BytesIn: 2000, PacketsOut: 2, PacketsIn: 20, FlowsWithoutCounters: 1},
		0:     {Flows: 5, BytesOut: 50},
		0x700: {Flows: 1},
	}
	s := BuildStatus(c, statusApplied(c), tally, now)

	want := []LinkStatus{
		{Name: "isp1", Interface: "wan1", Gateway: "192.0.2.1", Weight: 3, Mark: 0x100, Table: 101, State: health.StateUnknown,
			Counters:    Counters{Flows: 6, BytesOut: 600, BytesIn: 6000, PacketsOut: 6, PacketsIn: 60},
			InMultipath: true, FlowShare: 0.75, WeightShare: 0.75},
		{Name: "isp2", Interface: "wan2", Gateway: "198.51.100.1", Weight: 1, Mark: 0x200, Table: 102, State: health.StateUnknown,
			Counters:    Counters{Flows: 2, BytesOut: 200, BytesIn: 2000, PacketsOut: 2, PacketsIn: 20, FlowsWithoutCounters: 1},
			InMultipath: true, FlowShare: 0.25, WeightShare: 0.25},
	}
	if diff := cmp.Diff(want, s.Links); diff != "" {
		t.Errorf("links (-want +got):\n%s", diff)
	}
	if s.Unpinned.Flows != 5 || s.Unpinned.BytesOut != 50 {
		t.Errorf("unpinned: %+v", s.Unpinned)
	}
	if diff := cmp.Diff([]MarkCount{{Mark: 0x700, Counters: Counters{Flows: 1}}}, s.OtherMarks); diff != "" {
		t.Errorf("other marks (-want +got):\n%s", diff)
	}
	// Nothing is dropped: the total is every flow of the tally.
	wantTotal := Counters{Flows: 14, BytesOut: 850, BytesIn: 8000, PacketsOut: 8, PacketsIn: 80, FlowsWithoutCounters: 1}
	if s.Total != wantTotal {
		t.Errorf("total %+v, want %+v", s.Total, wantTotal)
	}
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "no configured link") {
		t.Errorf("warnings: %q, want only the one about mark 0x700", s.Warnings)
	}
	if s.Schema != StatusSchema || s.Daemon || !s.Acct || s.MarkMask != 0xff00 || !s.Time.Equal(now) {
		t.Errorf("header fields: %+v", s)
	}
}

func TestStatusBuildAppliedDiffers(t *testing.T) {
	c := statusConfig(t, statusLinks)
	a := statusApplied(c)
	// isp2 was down at apply: the balance table holds one plain route.
	a.Routes[1] = rules.Route{Family: rules.V4, Table: c.BalanceTable, Dst: statusAll4, Gw: c.Links[0].Gateway, Dev: "wan1"}
	a.Rules = a.Rules[:1]
	a.Table = false
	a.Acct = false
	s := BuildStatus(c, a, Tally{}, time.Now())
	if !s.Links[0].InMultipath || s.Links[0].WeightShare != 1 || s.Links[1].InMultipath || s.Links[1].WeightShare != 0 {
		t.Errorf("weight shares from a one-nexthop route: %+v", s.Links)
	}
	for _, want := range []string{"nft table inet flowpin is missing", "nf_conntrack_acct is off", "link isp2: no ip rule for fwmark 0x200/0xff00"} {
		found := false
		for _, w := range s.Warnings {
			found = found || strings.Contains(w, want)
		}
		if !found {
			t.Errorf("no warning %q in %q", want, s.Warnings)
		}
	}
	if s.Links[0].FlowShare != 0 || s.Total.Flows != 0 {
		t.Errorf("empty table: %+v", s)
	}
}

func TestStatusJSONSchema(t *testing.T) {
	c := statusConfig(t, statusLinks)
	s := BuildStatus(c, statusApplied(c), Tally{0x100: {Flows: 1}}, time.Unix(0, 0))
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	// The documented fields (README.md); tools depend on these names.
	for _, k := range []string{"schema", "time", "daemon", "mark_mask", "acct", "links", "unpinned", "other_marks", "total", "warnings"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("top-level field %q missing in %s", k, b)
		}
	}
	link := doc["links"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "interface", "gateway", "weight", "mark", "state", "flows", "bytes_out", "bytes_in",
		"packets_out", "packets_in", "flows_without_counters", "in_multipath", "flow_share", "weight_share"} {
		if _, ok := link[k]; !ok {
			t.Errorf("link field %q missing in %s", k, b)
		}
	}
	if _, ok := link["rate"]; ok {
		t.Errorf("rate present outside --watch: %s", b)
	}
	for _, k := range []string{"flows", "bytes_out", "bytes_in", "packets_out", "packets_in"} {
		if _, ok := doc["total"].(map[string]any)[k]; !ok {
			t.Errorf("total field %q missing in %s", k, b)
		}
	}
}

func TestStatusSetRates(t *testing.T) {
	c := statusConfig(t, statusLinks)
	t0 := time.Unix(1700000000, 0)
	prev := BuildStatus(c, statusApplied(c), Tally{0x100: {Flows: 1, BytesOut: 1000, BytesIn: 5000}, 0x200: {Flows: 1, BytesOut: 900}}, t0)
	// isp2's flow ended and a smaller one began: its counters went down.
	cur := BuildStatus(c, statusApplied(c), Tally{0x100: {Flows: 1, BytesOut: 3000, BytesIn: 5000}, 0x200: {Flows: 1, BytesOut: 100}}, t0.Add(2*time.Second))
	cur.SetRates(prev)
	if cur.Interval != 2 {
		t.Errorf("interval %v, want 2", cur.Interval)
	}
	if r := cur.Links[0].Rate; r == nil || r.BytesOutPerSec != 1000 || r.BytesInPerSec != 0 {
		t.Errorf("isp1 rate %+v, want 1000 B/s out, 0 in", r)
	}
	if r := cur.Links[1].Rate; r == nil || r.BytesOutPerSec != 0 {
		t.Errorf("isp2 rate %+v, want 0 (counters went down)", r)
	}
	var buf bytes.Buffer
	if err := WriteStatus(&buf, cur); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "OUT/s") || !strings.Contains(buf.String(), "1000 B/s") {
		t.Errorf("watch frame lacks rates:\n%s", buf.String())
	}
}

func TestStatusWrite(t *testing.T) {
	c := statusConfig(t, statusLinks)
	s := BuildStatus(c, statusApplied(c), Tally{
		0x100: {Flows: 3, BytesOut: 3 << 20, BytesIn: 1536},
		0:     {Flows: 2, FlowsWithoutCounters: 2},
	}, time.Unix(0, 0))
	var buf bytes.Buffer
	if err := WriteStatus(&buf, s); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	lines := strings.Split(strings.TrimSpace(got), "\n")
	wantPrefixes := []string{"LINK", "isp1", "isp2", "unpinned", "total", "state unknown", "2 flows have no byte counters"}
	if len(lines) != len(wantPrefixes) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(wantPrefixes), got)
	}
	for i, p := range wantPrefixes {
		if !strings.HasPrefix(lines[i], p) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], p)
		}
	}
	for _, f := range [][]string{
		{"isp1", "wan1", "192.0.2.1", "3", "0x100", "unknown", "3", "100.0%", "75.0%", "3.0", "MiB", "1.5", "KiB", "0", "0"},
		{"isp2", "wan2", "198.51.100.1", "1", "0x200", "unknown", "0", "0.0%", "25.0%", "0", "B", "0", "B", "0", "0"},
		{"unpinned", "-", "-", "-", "-", "-", "2", "-", "-", "0", "B", "0", "B", "0", "0"},
		{"total", "5", "3.0", "MiB", "1.5", "KiB", "0", "0"},
	} {
		if !slices.ContainsFunc(lines, func(l string) bool { return slices.Equal(strings.Fields(l), f) }) {
			t.Errorf("no row %q in:\n%s", f, got)
		}
	}
}

func TestStatusHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestStatusCollectorTopN(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var all []uint64
	for _, limit := range []int{0, 1, 20, 1000} {
		t.Run("", func(t *testing.T) {
			col := collector{limit: limit}
			all = all[:0]
			for i := range 500 {
				rec := ct.FlowRecord{Orig: ct.Counter{Bytes: r.Uint64N(1 << 20)}, Reply: ct.Counter{Bytes: r.Uint64N(1 << 20)}, Mark: uint32(i)}
				all = append(all, flowBytes(&rec))
				col.add(&rec)
			}
			slices.Sort(all)
			slices.Reverse(all)
			want := all
			if limit > 0 && limit < len(all) {
				want = all[:limit]
			}
			var got []uint64
			for _, rec := range col.sorted() {
				got = append(got, flowBytes(&rec))
			}
			if col.matched != 500 {
				t.Errorf("matched %d, want 500", col.matched)
			}
			if !slices.Equal(got, want) {
				t.Errorf("limit %d: kept %d flows %v..., want %v...", limit, len(got), got[:min(3, len(got))], want[:min(3, len(want))])
			}
			if limit > 0 && cap(col.kept) > 2*limit {
				t.Errorf("limit %d: heap grew to %d", limit, cap(col.kept))
			}
		})
	}
}

func TestStatusFilterFor(t *testing.T) {
	c := statusConfig(t, statusLinks)
	for link, want := range map[string]*ct.MarkFilter{
		"":           nil,
		"isp2":       {Mark: 0x200, Mask: 0xff00},
		UnpinnedLink: {Mark: 0, Mask: 0xff00},
	} {
		got, err := filterFor(c, link)
		if err != nil || !cmp.Equal(got, want) {
			t.Errorf("filterFor(%q) = %+v, %v; want %+v", link, got, err, want)
		}
	}
	if _, err := filterFor(c, "isp3"); err == nil || !strings.Contains(err.Error(), `no link "isp3" in test.yaml`) {
		t.Errorf("unknown link: %v", err)
	}
}

// Partition's parts must be disjoint and together cover every mark, or
// status would drop or double-count flows.
func TestStatusPartition(t *testing.T) {
	three := statusLinks + `  - name: isp3
    interface: wan3
    gateway: 203.0.113.1
    weight: 4
`
	for _, tc := range []struct {
		name  string
		cfg   string
		n     int
		parts int
	}{
		{"one core", statusLinks, 1, 1},
		{"two cores", statusLinks, 2, 2},
		{"three cores round down", statusLinks, 3, 2},
		{"eight cores", three, 8, 8},
		{"many cores capped", three, 64, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := statusConfig(t, tc.cfg)
			parts := Partition(c, tc.n)
			if len(parts) != tc.parts {
				t.Fatalf("%d parts, want %d: %+v", len(parts), tc.parts, parts)
			}
			marks := []uint32{0, 0x1_0000, 0xff00, 0xffff_ffff, 0x300, 0x8000}
			for _, l := range c.Links {
				marks = append(marks, l.Mark, l.Mark|0x10_0000)
			}
			for _, m := range marks {
				in := 0
				for _, p := range parts {
					if p == nil || m&p.Mask == p.Mark {
						in++
					}
					if p != nil && p.Mask&^c.MarkMask != 0 {
						t.Errorf("part %+v uses bits outside mark_mask %#x", p, c.MarkMask)
					}
				}
				if in != 1 {
					t.Errorf("mark %#x is in %d parts, want exactly 1: %+v", m, in, parts)
				}
			}
			if tc.parts == 2 {
				// Weights 3 and 1: each link alone in its part.
				for _, p := range parts {
					n := 0
					for _, l := range c.Links {
						if l.Mark&p.Mask == p.Mark {
							n++
						}
					}
					if n != 1 {
						t.Errorf("part %+v holds %d links, want 1", p, n)
					}
				}
			}
		})
	}
}

func TestStatusFlowRowNAT(t *testing.T) {
	names := map[uint32]string{0: UnpinnedLink, 0x100: "isp1"}
	now := time.Unix(1700000100, 0)
	masq := ct.FlowRecord{Mark: 0xab_0100, Proto: 6, Counted: true, Orig: ct.Counter{Packets: 10, Bytes: 1000}, Reply: ct.Counter{Packets: 8, Bytes: 5000},
		OrigSrc:  ct.Endpoint{Addr: netip.MustParseAddr("10.77.0.2"), Port: 40000, HasPort: true},
		OrigDst:  ct.Endpoint{Addr: netip.MustParseAddr("203.0.113.10"), Port: 7000, HasPort: true},
		ReplySrc: ct.Endpoint{Addr: netip.MustParseAddr("203.0.113.10"), Port: 7000, HasPort: true},
		ReplyDst: ct.Endpoint{Addr: netip.MustParseAddr("192.0.2.2"), Port: 40000, HasPort: true},
		Start:    time.Unix(1700000000, 0)}
	row := flowRow(&masq, 0xff00, names, now)
	if row.Link != "isp1" || row.Mark != 0x100 || row.NATSrc == nil || *row.NATSrc != "192.0.2.2:40000" || row.NATDst != nil {
		t.Errorf("masqueraded flow: %+v", row)
	}
	if row.AgeSeconds == nil || *row.AgeSeconds != 100 {
		t.Errorf("age: %v, want 100", row.AgeSeconds)
	}
	if row.BytesOut != 1000 || row.BytesIn != 5000 {
		t.Errorf("bytes out/in: %d/%d, want 1000/5000", row.BytesOut, row.BytesIn)
	}
	plain := masq
	plain.Mark = 0x300
	plain.ReplyDst = plain.OrigSrc
	plain.ReplySrc = ct.Endpoint{Addr: netip.MustParseAddr("10.77.0.9"), Port: 22, HasPort: true} // DNAT
	plain.Start = time.Time{}
	row = flowRow(&plain, 0xff00, names, now)
	if row.NATSrc != nil || row.NATDst == nil || *row.NATDst != "10.77.0.9:22" || row.Link != "mark 0x300" || row.AgeSeconds != nil {
		t.Errorf("port-forwarded flow: %+v", row)
	}
}

func TestCountersCountIPv6(t *testing.T) {
	var c Counters
	c.add(&ct.FlowRecord{Family: unix.AF_INET, Counted: true})
	c.add(&ct.FlowRecord{Family: unix.AF_INET6, Counted: true})
	var total Counters
	total.plus(c)
	if c.Flows != 2 || c.FlowsIPv6 != 1 || total.FlowsIPv6 != 1 {
		t.Errorf("counters %+v, total %+v: want 2 flows, 1 of them IPv6", c, total)
	}
}

// The daemon's view of link quality reaches the text and the JSON.
func TestStatusQuality(t *testing.T) {
	c := statusConfig(t, statusLinks)
	s := BuildStatus(c, statusApplied(c), Tally{}, time.Unix(0, 0))
	since := time.Date(2026, 11, 22, 10, 31, 59, 0, time.UTC)
	s.WithHealth([]health.LinkHealth{
		{Name: "isp1", Family: "ipv4", State: health.StateUp, Reason: "up: daemon started", LastChange: since, RTTMillis: 12.345, JitterMillis: 0.8, Loss: 0, Window: 10},
		{Name: "isp2", Family: "ipv4", State: health.StateDown, Reason: "held down until 10:32:05 (down: rtt 250 ms > 150 ms for 3 rounds)", LastChange: since, RTTMillis: 250, JitterMillis: 3.25, Loss: 0.1, Window: 10},
	})
	var buf bytes.Buffer
	if err := WriteStatus(&buf, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"isp1: up: daemon started since 10:31:59; rtt 12.35 ms, jitter 0.80 ms, loss 0.0% over 10 rounds\n",
		"isp2: held down until 10:32:05 (down: rtt 250 ms > 150 ms for 3 rounds) since 10:31:59; rtt 250.00 ms, jitter 3.25 ms, loss 10.0% over 10 rounds\n",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, buf.String())
		}
	}
	js, err := json.Marshal(s.Links[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"rtt_ms":250`, `"jitter_ms":3.25`, `"loss":0.1`, `"window":10`, `"reason":"held down until 10:32:05`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("json lacks %s: %s", want, js)
		}
	}
}

// A down link whose flows the daemon kept says so, and why, in the text
// and the JSON; a link whose flows were not kept says nothing of it.
func TestStatusFlowsKept(t *testing.T) {
	c := statusConfig(t, statusLinks)
	s := BuildStatus(c, statusApplied(c), Tally{}, time.Unix(0, 0))
	since := time.Date(2026, 11, 22, 10, 31, 59, 0, time.UTC)
	kept := "no other IPv4 link is up to take them"
	s.WithHealth([]health.LinkHealth{
		{Name: "isp1", Family: "ipv4", State: health.StateDown, Reason: "down: 1/1 probes lost to 203.0.113.10, 3 rounds in a row", LastChange: since, FlowsKept: kept, FlowsKeptSince: since},
		{Name: "isp2", Family: "ipv4", State: health.StateDown, Reason: "down: carrier lost on wan2", LastChange: since},
	})
	var buf bytes.Buffer
	if err := WriteStatus(&buf, s); err != nil {
		t.Fatal(err)
	}
	want := "isp1: down: 1/1 probes lost to 203.0.113.10, 3 rounds in a row since 10:31:59; flows kept: no other IPv4 link is up to take them;"
	if !strings.Contains(buf.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, buf.String())
	}
	if strings.Count(buf.String(), "flows kept") != 1 {
		t.Errorf("flows kept said of a link whose flows were not kept:\n%s", buf.String())
	}
	js, err := json.Marshal(s.Links)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"flows_kept":"no other IPv4 link is up to take them","flows_kept_since":"2026-11-22T10:31:59Z"`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("json lacks %s: %s", want, js)
		}
	}
	if strings.Count(string(js), "flows_kept") != 2 {
		t.Errorf("json: %s", js)
	}
	// The same status with later health (the daemon serves one again):
	// the link is up, nothing is said to be kept.
	s.WithHealth([]health.LinkHealth{
		{Name: "isp1", Family: "ipv4", State: health.StateUp, Reason: "up: 3 good rounds", LastChange: since},
		{Name: "isp2", Family: "ipv4", State: health.StateUp, Reason: "up: 3 good rounds", LastChange: since},
	})
	if js, _ := json.Marshal(s.Links); strings.Contains(string(js), "flows_kept") {
		t.Errorf("later health without kept flows: %s", js)
	}
}

// A reason that names its own time (an operator's mode) is not given the
// state's time as well.
func TestStatusReasonSinceOnce(t *testing.T) {
	c := statusConfig(t, statusLinks)
	s := BuildStatus(c, statusApplied(c), Tally{}, time.Unix(0, 0))
	up := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	s.WithHealth([]health.LinkHealth{
		{Name: "isp1", Family: "ipv4", State: health.StateUp, Reason: "drained by operator since 10:32:05", LastChange: up, Operator: "drain"},
		{Name: "isp2", Family: "ipv4", State: health.StateUp, Reason: "up: 3 good rounds", LastChange: up},
	})
	var buf bytes.Buffer
	if err := WriteStatus(&buf, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"isp1: drained by operator since 10:32:05;", "isp2: up: 3 good rounds since 09:00:00;"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, buf.String())
		}
	}
	if strings.Contains(buf.String(), "10:32:05 since") {
		t.Errorf("two times for one state:\n%s", buf.String())
	}
}
