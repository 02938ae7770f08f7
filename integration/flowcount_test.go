package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netns"
)

// daemonCounts is what `flowpin status --json` says when the daemon
// answers from memory.
type daemonCounts struct {
	BytesFrom string `json:"bytes_from"`
	Links     []struct {
		Name     string `json:"name"`
		Flows    int64  `json:"flows"`
		BytesOut uint64 `json:"bytes_out"`
		BytesIn  uint64 `json:"bytes_in"`
	} `json:"links"`
	Total struct {
		Flows int64 `json:"flows"`
	} `json:"total"`
}

func (dm *daemon) counts(t testing.TB) daemonCounts {
	t.Helper()
	out, err := flowpin(t, dm.ns, "status", "--json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var c daemonCounts
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return c
}

// conntrackCount is `conntrack -C`: the kernel's count of entries.
func conntrackCount(t testing.TB, ns string) int64 {
	t.Helper()
	out := strings.TrimSpace(run(t, ns, "conntrack", "-C"))
	n, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		t.Fatalf("conntrack -C: %q", out)
	}
	return n
}

// conntrackMarked counts the entries with (mark & mask) == mark.
func conntrackMarked(t testing.TB, ns string, mark uint32) int64 {
	t.Helper()
	out, _ := tryRun(ns, "sh", "-c", fmt.Sprintf("conntrack -L -m %#x/0xff00 2>/dev/null | wc -l", mark))
	n, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("conntrack -L -m: %q", out)
	}
	return n
}

// matchConntrack waits until the daemon's total agrees with conntrack -C
// within 0.1% (entries come and go: ICMP probes, expiring flows), and its
// per-link counts with conntrack -L -m. It returns the total.
func (dm *daemon) matchConntrack(t testing.TB, what string) int64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dm.counts(t)
		kernel := conntrackCount(t, dm.ns)
		diff := c.Total.Flows - kernel
		ok := c.BytesFrom == "rules" && abs64(diff) <= max(1, kernel/1000)
		var links []string
		for _, l := range c.Links {
			k := conntrackMarked(t, dm.ns, map[string]uint32{"isp1": 0x100, "isp2": 0x200}[l.Name])
			links = append(links, fmt.Sprintf("%s %d (kernel %d)", l.Name, l.Flows, k))
			ok = ok && abs64(l.Flows-k) <= max(1, k/1000)
		}
		if ok {
			t.Logf("%s: daemon counts %d flows, conntrack -C %d; %s", what, c.Total.Flows, kernel, strings.Join(links, ", "))
			return c.Total.Flows
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: daemon counts %d flows (bytes from %q), conntrack -C %d; %s", what, c.Total.Flows, c.BytesFrom, kernel, strings.Join(links, ", "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// createFlows adds n fake UDP flows with conntrack.Create, marked mark,
// from 10.<base>.x.y: no traffic needed.
func createFlows(t testing.TB, ns string, base byte, n int, mark uint32) {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := conntrack.Dial(&netlink.Config{NetNS: int(h)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range n {
		src := netip.AddrFrom4([4]byte{10, base, byte(i >> 8), byte(i)})
		f := conntrack.NewFlow(17, 0, src, netip.MustParseAddr("203.0.113.99"), 1024, 53, 600, mark)
		if err := c.Create(f); err != nil {
			t.Fatalf("create flow %d: %v", i, err)
		}
	}
}

// The daemon's event-driven counts match the kernel's after heavy churn,
// after a restart (flows that began and ended while it was down, and
// flows of before the restart ending after it), and after the kernel
// dropped events (the daemon stopped with SIGSTOP while a burst of flows
// overflows its event socket: a real ENOBUFS, no test hook in the product).
func TestFlowCountsMatchConntrack(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	cfg := checkedConfig(d, d.GW2)
	dm := startDaemon(t, d.Router, cfg, "--metrics", ":9108")

	// Heavy churn: thousands of short connections, then one link's flows
	// deleted at once (as a failover's flush does).
	start := time.Now()
	res := connectN(t, d.LAN, target, srv, 3000, dialOpts{Parallel: 32})
	if res.OK < 2900 {
		t.Fatalf("churn: %d of 3000 connections worked: %v", res.OK, res.Errors[:min(3, len(res.Errors))])
	}
	t.Logf("3000 short connections in %v", time.Since(start).Round(time.Millisecond))
	n := dm.matchConntrack(t, "after churn")
	if n < 3000 {
		t.Errorf("only %d flows counted after 3000 connections", n)
	}
	run(t, d.Router, "sh", "-c", "conntrack -D -m 0x200/0xff00 >/dev/null 2>&1; true")
	dm.matchConntrack(t, "after deleting isp2's flows")

	// Restart: flows begin and end while no daemon runs.
	if _, err := dm.stop(); err != nil {
		t.Fatal(err)
	}
	connectN(t, d.LAN, target, srv, 500, dialOpts{Parallel: 32})
	run(t, d.Router, "sh", "-c", "conntrack -D -m 0x100/0xff00 >/dev/null 2>&1; true")
	connectN(t, d.LAN, target, srv, 500, dialOpts{Parallel: 32})
	dm = startDaemon(t, d.Router, cfg, "--metrics", ":9108")
	dm.matchConntrack(t, "after a restart")
	// Flows of before the restart end after it: their DESTROY events
	// come (apply set nf_conntrack_events=1).
	run(t, d.Router, "sh", "-c", "conntrack -D -p tcp >/dev/null 2>&1; true")
	dm.matchConntrack(t, "after deleting the flows of before the restart")

	// Injected loss: the daemon stopped, a burst larger than its event
	// socket's buffer.
	body, err := scrape(t, d.Router, "127.0.0.1:9108")
	if err != nil {
		t.Fatal(err)
	}
	lossesBefore := metric(body, "flowpin_conntrack_event_losses_total")
	if err := syscall.Kill(dm.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	createFlows(t, d.Router, 200, 60000, 0x100)
	if err := syscall.Kill(dm.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("60000 flows created while the daemon was stopped, in %v", time.Since(start).Round(time.Millisecond))
	deadline := time.Now().Add(10 * time.Second)
	var losses float64
	for {
		if body, err = scrape(t, d.Router, "127.0.0.1:9108"); err == nil {
			losses = metric(body, "flowpin_conntrack_event_losses_total")
		}
		if losses > lossesBefore || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if losses <= lossesBefore {
		t.Fatalf("no event loss reported (losses %v -> %v)", lossesBefore, losses)
	}
	n = dm.matchConntrack(t, "after lost events")
	if n < 60000 {
		t.Errorf("%d flows counted, want at least the 60000 created", n)
	}
	if b, err := scrape(t, d.Router, "127.0.0.1:9108"); err == nil {
		body = b
	}
	t.Logf("losses %v -> %v; recounts %v, corrected %v", lossesBefore, losses,
		metric(body, "flowpin_conntrack_recounts_total"), metric(body, "flowpin_conntrack_recount_corrections_total"))
}

// Status through the daemon (from memory) agrees with what the far end
// saw: as many flows on each link as connections arrived from that link's
// address, plus the daemon's own probe flows, which leave by the link too.
func TestDaemonStatusAgreesWithFarEnd(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	dm := startDaemon(t, d.Router, d.config(1, 1))
	ll := startLongLived(t, d.LAN, target, srv, 40, dialOpts{})
	defer ll.stop()
	time.Sleep(500 * time.Millisecond)
	far := srv.Sources()
	wan := map[string]netip.Addr{"isp1": netip.MustParseAddr(d.WAN1), "isp2": netip.MustParseAddr(d.WAN2)}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dm.counts(t)
		var diffs []string
		for _, l := range c.Links {
			mark := map[string]uint32{"isp1": 0x100, "isp2": 0x200}[l.Name]
			probes, _ := tryRun(d.Router, "sh", "-c", fmt.Sprintf("conntrack -L -p icmp -m %#x/0xff00 2>/dev/null | wc -l", mark))
			n, _ := strconv.Atoi(strings.TrimSpace(probes))
			if want := int64(far[wan[l.Name]] + n); l.Flows != want || l.BytesOut == 0 || l.BytesIn == 0 {
				diffs = append(diffs, fmt.Sprintf("%s: %d flows (want %d connections + %d probe flows), bytes out %d in %d", l.Name, l.Flows, far[wan[l.Name]], n, l.BytesOut, l.BytesIn))
			}
		}
		if c.BytesFrom != "rules" {
			diffs = append(diffs, "not answered from the daemon's memory: bytes_from "+c.BytesFrom)
		}
		if len(diffs) == 0 {
			t.Logf("far end: %d from isp1, %d from isp2; the daemon agrees", far[wan["isp1"]], far[wan["isp2"]])
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon and far end disagree:\n%s", strings.Join(diffs, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
