package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// cpuTicks is a process's user+system time in clock ticks (USER_HZ,
// 100 on Linux), from /proc/PID/stat fields 14 and 15 (proc(5)).
func cpuTicks(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name (field 2) may hold spaces; count after its ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("parse /proc/%d/stat: %s", pid, b)
	}
	return ut + st
}

const userHZ = 100

// cpuShare is the share of one core pid used over d.
func cpuShare(t testing.TB, pid int, d time.Duration) float64 {
	before := cpuTicks(t, pid)
	time.Sleep(d)
	return float64(cpuTicks(t, pid)-before) / userHZ / d.Seconds()
}

// sumMetric adds every sample of a metric family (all label values).
func sumMetric(body, name string) float64 {
	sum := 0.0
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// A burst of notifications overflows the daemon's netlink subscriptions.
// It must notice, re-read the kernel and subscribe again: afterwards it
// still fails over, does not spin, and counts the loss.
func TestDaemonNetlinkBurst(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	dm := startDaemon(t, d.Router, checkedConfig(d, d.GW2), "--metrics", ":9108")
	untilAllSucceed(t, d, srv, time.Now(), 5*time.Second)

	var mtu strings.Builder
	for i := range 200 {
		fmt.Fprintf(&mtu, "link set dev wan1 mtu %d\n", 1400+i%100)
	}
	fmt.Fprintf(&mtu, "link set dev wan1 mtu 1500\n")
	if out, err := tryRunStdin(d.Router, mtu.String(), "ip", "-batch", "-"); err != nil {
		t.Fatalf("mtu burst: %v\n%s", err, out)
	}
	// And the neighbour table: 20,000 entries at once.
	var neigh strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&neigh, "neigh add 10.77.%d.%d lladdr 02:00:00:00:%02x:%02x dev lan nud permanent\n", 100+i/250, 1+i%250, i/256%256, i%256)
	}
	run(t, d.Router, "ip", "route", "add", "10.77.64.0/18", "dev", "lan")
	if out, err := tryRunStdin(d.Router, neigh.String(), "ip", "-batch", "-"); err != nil {
		t.Fatalf("neighbour burst: %v\n%s", err, out)
	}
	run(t, d.Router, "ip", "neigh", "flush", "dev", "lan", "nud", "permanent")
	time.Sleep(500 * time.Millisecond)

	start := time.Now()
	blackhole(t, d.ISP2)
	took := untilAllSucceed(t, d, srv, start, 6*time.Second)
	t.Logf("after the burst, silent failure of isp2: new connections all succeed again after %v", took.Round(time.Millisecond))
	dm.waitState(t, "isp2", "down", 2*time.Second)

	pid := dm.cmd.Process.Pid
	if share := cpuShare(t, pid, time.Second); share > 0.5 {
		t.Errorf("daemon uses %.0f%% of a core after the burst", 100*share)
	} else {
		t.Logf("daemon CPU after the burst: %.1f%% of a core", 100*share)
	}
	body, err := scrape(t, d.Router, "127.0.0.1:9108")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(dm.logs(), "\n") {
		if strings.Contains(line, "notifications lost") || strings.Contains(line, "subscribed to kernel notifications again") {
			t.Log(line)
		}
	}
	if n := sumMetric(body, "flowpin_subscription_losses_total"); n < 1 {
		t.Errorf("flowpin_subscription_losses_total = %v after the burst", n)
	} else {
		t.Logf("subscription losses: %v", n)
	}
	for _, m := range []string{"go_goroutines", "process_cpu_seconds_total", "process_open_fds"} {
		if metric(body, m) < 0 {
			t.Errorf("no %s on /metrics", m)
		}
	}
}

// opener opens one connection every 50 ms and records, per connection,
// when it started and whether it worked.
type opener struct {
	mu    sync.Mutex
	start []time.Time
	ok    []bool
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startOpener(t testing.TB, d *dualWAN, srv *echoServer) *opener {
	o := &opener{stop: make(chan struct{})}
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	tick := time.NewTicker(50 * time.Millisecond)
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-o.stop:
				return
			case <-tick.C:
			}
			o.wg.Add(1)
			go func() {
				defer o.wg.Done()
				at := time.Now()
				_, err := echoOnce(d.LAN, target, nil, fmt.Sprintf("open-%d", i), 500*time.Millisecond)
				o.mu.Lock()
				o.start = append(o.start, at)
				o.ok = append(o.ok, err == nil)
				o.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(o.halt)
	return o
}

func (o *opener) halt() {
	select {
	case <-o.stop:
	default:
		close(o.stop)
	}
	o.wg.Wait()
}

// failures counts connections started at or after from, and how many of
// them failed.
func (o *opener) failures(from time.Time) (n, failed int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, at := range o.start {
		if !at.Before(from) {
			n++
			if !o.ok[i] {
				failed++
			}
		}
	}
	return n, failed
}

// A PPP session ending deletes its interface: the link is down at once,
// planning goes on without it, and new connections work within a second.
func TestDaemonInterfaceVanishes(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	// No default route in main to fall back on: when the kernel drops the
	// multipath route with wan2's nexthop, only the daemon's next sync
	// routes new flows again.
	run(t, d.Router, "ip", "route", "del", "default")
	dm := startDaemon(t, d.Router, checkedConfig(d, d.GW2))
	untilAllSucceed(t, d, srv, time.Now(), 5*time.Second)

	o := startOpener(t, d, srv)
	time.Sleep(300 * time.Millisecond)
	gone := time.Now()
	run(t, d.Router, "ip", "link", "del", "wan2")
	time.Sleep(3 * time.Second)
	o.halt()
	n, failed := o.failures(gone.Add(time.Second))
	if n < 20 || failed != 0 {
		t.Errorf("of %d connections opened from 1s after wan2 vanished, %d failed", n, failed)
	}
	all, failedAll := o.failures(gone)
	t.Logf("wan2 deleted: %d of %d connections failed in the first second, %d of %d after", failedAll-failed, all-n, failed, n)
	l := dm.waitState(t, "isp2", "down", time.Second)
	// Deleting a veth first takes it down, then removes it: either
	// notification takes the link down.
	if !strings.Contains(l.Reason, "interface wan2 removed") && !strings.Contains(l.Reason, "carrier lost on wan2") {
		t.Errorf("reason %q", l.Reason)
	}
	if strings.Contains(dm.logs(), "sync failed") {
		t.Errorf("a sync failed with wan2 gone:\n%s", dm.logs())
	}
}

// recreateWAN2 puts back the veth pair of isp2 with its addresses, as a
// new PPP session would.
func recreateWAN2(t testing.TB, d *dualWAN) {
	veth(t, d.Router, "wan2", d.ISP2, "cust")
	addAddr(t, d.Router, "wan2", d.WAN2+"/24")
	addAddr(t, d.ISP2, "cust", "198.51.100.1/24")
	// The ISP's filter was bound to the old device: start it afresh.
	if _, err := tryRun(d.ISP2, "nft", "delete", "table", "netdev", "bcp38"); err != nil {
		t.Logf("bcp38 table was gone with the device: %v", err)
	}
	nft(t, d.ISP2, bcp38Ruleset(d.WAN2))
}

// `flowpin run` starts with a link's interface absent (that link down)
// and adopts the interface when it appears.
func TestDaemonStartsWithoutInterface(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	run(t, d.Router, "ip", "link", "del", "wan2")
	dm := startDaemon(t, d.Router, checkedConfig(d, d.GW2))
	l := dm.linkStates(t)["isp2"]
	if l.State != "down" || !strings.Contains(l.Reason, "interface wan2 does not exist") {
		t.Errorf("isp2 at start: %+v", l)
	}
	if r := connectN(t, d.LAN, target, srv, 30, dialOpts{}); r.Failed != 0 {
		t.Errorf("with wan2 absent: %d of 30 failed", r.Failed)
	}

	recreateWAN2(t, d)
	start := time.Now()
	dm.waitState(t, "isp2", "up", 5*time.Second)
	t.Logf("isp2 up %v after wan2 appeared", time.Since(start).Round(time.Millisecond))
	// The split is of flows dialled once the route has isp2 again.
	waitBalance(t, d.Router, "wan2", true)
	srv.Reset()
	r := connectN(t, d.LAN, target, srv, 240, dialOpts{})
	if r.Failed != 0 {
		t.Fatalf("%d failed once wan2 was back: %v", r.Failed, r.Errors[0])
	}
	checkSplit(t, d, r.PerSource, 1, 1)
}
