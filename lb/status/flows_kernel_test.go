package status

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"flowpin/nft/ct"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netns"
)

// statusNetns creates a throwaway network namespace "fp<random>-<role>"
// (never the host's) and deletes it, with every conntrack entry in it, in
// t.Cleanup.
func statusNetns(t testing.TB, role string) netns.NsHandle {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a network namespace: not a unit test (-short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "fp" + hex.EncodeToString(b) + "-" + role
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	// nf_conntrack_acct is per namespace and must be on before flows are
	// created for them to carry counters. /proc/sys/net resolves against
	// the opener's namespace, hence ip netns exec.
	if out, err := exec.Command("ip", "netns", "exec", name, "sh", "-c", "echo 1 > /proc/sys/net/netfilter/nf_conntrack_acct").CombinedOutput(); err != nil {
		t.Fatalf("enable nf_conntrack_acct in %s: %v\n%s", name, err, out)
	}
	return h
}

// seedFlow is one fake flow for conntrack.Create.
func seedFlow(i int, mark uint32) conntrack.Flow {
	src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	dst := netip.MustParseAddr("203.0.113.10")
	proto := uint8(17)
	if i%3 == 0 {
		proto = 6
	}
	if i%7 == 0 {
		src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		dst = netip.MustParseAddr("2001:db8::1:1")
	}
	return conntrack.NewFlow(proto, 0, src, dst, uint16(1024+i%60000), 443, 600, mark)
}

func TestStatusWalkMatchesConntrackDump(t *testing.T) {
	ns := statusNetns(t, "walk")
	other := statusNetns(t, "other")
	c := statusConfig(t, statusLinks)

	lib, err := conntrack.Dial(&netlink.Config{NetNS: int(ns)})
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	// Enough flows for many receive batches (a batch is at most 32 KiB,
	// about 100 flows), with every kind of mark: the two links, none,
	// bits outside the mask only (unpinned), and a mark no link has.
	marks := []uint32{0x100, 0x100, 0x100, 0x200, 0x200, 0, 0x1_0000, 0x1_0200, 0x300}
	const n = 1200
	// Seeded per link, by construction (not by masking, which is what is
	// under test).
	seeded := map[string]int64{}
	byMark := map[uint32]string{0x100: "isp1", 0x200: "isp2", 0: UnpinnedLink, 0x1_0000: UnpinnedLink, 0x1_0200: "isp2", 0x300: "other"}
	for i := range n {
		seeded[byMark[marks[i%len(marks)]]]++
		if err := lib.Create(seedFlow(i, marks[i%len(marks)])); err != nil {
			t.Fatalf("create flow %d: %v", i, err)
		}
	}

	// The reference: ti-mo/conntrack's full Dump, counted by hand.
	flows, err := lib.Dump(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != n {
		t.Fatalf("dump has %d flows, want %d", len(flows), n)
	}
	want := Tally{}
	for _, f := range flows {
		m := f.Mark & c.MarkMask
		if want[m] == nil {
			want[m] = &Counters{}
		}
		want[m].Flows++
		if f.TupleOrig.IP.SourceAddress.Is6() {
			want[m].FlowsIPv6++
		}
		want[m].BytesOut += f.CountersOrig.Bytes
		want[m].BytesIn += f.CountersReply.Bytes
		want[m].PacketsOut += f.CountersOrig.Packets
		want[m].PacketsIn += f.CountersReply.Packets
	}

	conn, err := ct.Open(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got, err := TallyFlows(conn, c)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tally (-conntrack.Dump +Walk):\n%s", diff)
	}
	for _, cnt := range got {
		if cnt.FlowsWithoutCounters != 0 {
			t.Errorf("flows without counters although nf_conntrack_acct was on: %+v", cnt)
		}
	}
	// The same socket again: a second walk sees the same table.
	again, err := TallyFlows(conn, c)
	if err != nil || !cmp.Equal(got, again) {
		t.Errorf("second walk differs: %v\n%s", err, cmp.Diff(got, again))
	}

	s := BuildStatus(c, statusApplied(c), got, time.Now())
	if s.Total.Flows != n || s.Links[0].Flows != seeded["isp1"] || s.Links[1].Flows != seeded["isp2"] || s.Unpinned.Flows != seeded[UnpinnedLink] ||
		len(s.OtherMarks) != 1 || s.OtherMarks[0].Mark != 0x300 || s.OtherMarks[0].Flows != seeded["other"] {
		t.Errorf("seeded %v", seeded)
		t.Errorf("status: links %d/%d unpinned %d other %+v total %d", s.Links[0].Flows, s.Links[1].Flows, s.Unpinned.Flows, s.OtherMarks, s.Total.Flows)
	}

	// The kernel-side filter, per link and for unpinned flows (mark 0
	// under the mask, whatever the bits outside it).
	for _, link := range []string{"isp1", "isp2", UnpinnedLink} {
		wantN := seeded[link]
		fl, err := ListFlows(c, conn, FlowQuery{Link: link, Limit: 5}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if fl.Matched != wantN || len(fl.Flows) != 5 {
			t.Errorf("--link %s: matched %d (want %d), listed %d (want 5)", link, fl.Matched, wantN, len(fl.Flows))
		}
		for _, f := range fl.Flows {
			if f.Link != link {
				t.Errorf("--link %s listed a flow of %s: %+v", link, f.Link, f)
			}
		}
	}
	fl, err := ListFlows(c, conn, FlowQuery{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var v6, tcp int
	for _, f := range fl.Flows {
		if strings.HasPrefix(f.Src, "[2001:db8::") {
			v6++
		}
		if f.Proto == "tcp" {
			tcp++
		}
		if !strings.HasSuffix(f.Dst, ":443") || f.NATSrc != nil {
			t.Errorf("flow decoded wrong: %+v", f)
			break
		}
	}
	if len(fl.Flows) != n || v6 != (n+6)/7 || tcp != n/3 {
		t.Errorf("listed %d flows (want %d), %d IPv6 (want %d), %d tcp (want %d)", len(fl.Flows), n, v6, (n+6)/7, tcp, n/3)
	}

	// More parts than this machine has cores: still every flow once, each
	// in the part its mark says.
	parts := Partition(statusConfig(t, statusLinks+"  - {name: isp3, interface: wan3, gateway: 203.0.113.1}\n"), 8)
	perPart := make([]int, len(parts))
	err = conn.WalkParallel(parts, ct.DetailCounters, func(i int, r *ct.FlowRecord) {
		perPart[i]++
		if r.Mark&parts[i].Mask != parts[i].Mark {
			t.Errorf("flow with mark %#x in part %+v", r.Mark, parts[i])
		}
	})
	total := 0
	for _, k := range perPart {
		total += k
	}
	if err != nil || len(parts) != 8 || total != n {
		t.Errorf("8-part walk: %v, %d parts, %d flows (want %d): %v", err, len(parts), total, n, perPart)
	}

	// Namespace-correct: the other namespace's table is empty.
	oct, err := ct.Open(int(other))
	if err != nil {
		t.Fatal(err)
	}
	defer oct.Close()
	ot, err := TallyFlows(oct, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(ot) != 0 {
		t.Errorf("the other namespace shows flows: %v", fmt.Sprint(ot))
	}
}
