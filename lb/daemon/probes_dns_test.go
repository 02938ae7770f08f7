package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
	"flowpin/lb/daemon/operator"
	"flowpin/lb/health"
)

// notifyListener is systemd's end of NOTIFY_SOCKET: a datagram socket
// whose messages arrive on the channel.
func notifyListener(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	out := make(chan string, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(out)
				return
			}
			out <- string(buf[:n])
		}
	}()
	return out
}

// pinged waits up to d (real time) for a WATCHDOG=1.
func pinged(msgs <-chan string, d time.Duration) bool {
	timeout := time.After(d)
	for {
		select {
		case m := <-msgs:
			if m == sddaemon.SdNotifyWatchdog {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

// The watchdog's pings come from the daemon's loop: while the loop is
// stuck (here in a sync that does not return, as a wedged netlink call
// would), systemd hears nothing, and so restarts the daemon after
// WatchdogSec; once the loop turns again, the pings are back.
func TestWatchdogPingsOnlyWhileTheLoopTurns(t *testing.T) {
	// The pings are counted where the loop makes them (flowpin run's
	// Watchdog sends WATCHDOG=1, tested in cmd/flowpin): each is on the
	// channel before the loop goes on, so none is in flight once the loop
	// is seen stuck. Through a socket, one sent before could still be on
	// its way, and was taken for a ping from the stuck loop.
	pings := make(chan struct{}, 1024)
	pinged := func(d time.Duration) bool {
		select {
		case <-pings:
			return true
		case <-time.After(d):
			return false
		}
	}
	h := newHarness(t)
	h.watchdog = func() { pings <- struct{}{} }
	h.wdInterval = 5 * time.Second
	h.start()
	h.waitTranscript(both)
	// The timer starts at 0: the first ping comes before any advance.
	// Taken here, each advance below is answered by its own ping.
	if !pinged(5 * time.Second) {
		t.Fatal("no first ping")
	}
	for range 3 {
		h.clock.Advance(h.wdInterval)
		if !pinged(5 * time.Second) {
			t.Fatal("no ping from a loop that turns")
		}
	}

	entered, release := h.k.holdNextApply()
	h.events.send(Event{Kind: EventDrift, What: "a route changed"})
	// Not advanceSync: the sync sticks, and the loop would take its no-op
	// notification only once released. The clock is far past the last
	// sync: the request fires at once, whenever the loop takes it.
	h.clock.Advance(MinSyncInterval)
	<-entered
	// The loop is in the sync: every ping it sent before is here.
	for len(pings) > 0 {
		<-pings
	}
	for i := range 3 {
		h.clock.Advance(h.wdInterval)
		if pinged(300 * time.Millisecond) {
			t.Fatalf("a ping %d intervals into a stuck sync", i+1)
		}
	}
	release()
	if !pinged(5 * time.Second) {
		t.Fatal("no ping after the loop turned again")
	}
	h.clock.Advance(h.wdInterval)
	if !pinged(5 * time.Second) {
		t.Fatal("the pings did not go on")
	}
}

// Without WatchdogSec (no Watchdog) the loop sends nothing.
func TestNoWatchdogNoPings(t *testing.T) {
	msgs := notifyListener(t)
	h := newHarness(t)
	h.start()
	h.clock.Advance(time.Minute)
	if pinged(msgs, 300*time.Millisecond) {
		t.Fatal("pinged without a watchdog")
	}
}

const execAndDNS = `links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    dns: [192.0.2.53]
    check: {method: exec, command: 'sleep 60', interval: 1s, timeout: 500ms, fall: 3, rise: 2}
  - name: isp2
    interface: wan2
    gateway: 198.51.100.1
    dns: [198.51.100.53, 192.0.2.99]
    check: {targets: [203.0.113.10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
`

// A probe command that hangs costs its own link only: the other link's
// rounds keep their rhythm, and the hanging link goes down after fall
// rounds, each ended by the timeout.
func TestExecProbeHangsAloneAndTakesItsLinkDown(t *testing.T) {
	h := newHarness(t)
	h.c = configtest.MustParse(t, execAndDNS)
	h.k = newFakeKernel(h.rec, h.c)
	h.probers = newFakeProbers(h.c)
	h.factory = func(l config.Link, v6 bool) (Prober, error) {
		if l.Check.Method == config.ProbeExec {
			return health.NewExecProber(l, v6)
		}
		return h.probers.factory(l, v6)
	}
	h.start()
	for i := range 3 {
		before := h.probers.count("wan2")
		// Both probe loops: with a count of all timers reaching 2, the
		// runner's and isp1's loop's could be all, isp2's not re-armed
		// yet after its round, and the advance would miss it.
		h.eventually("timers armed", func() bool { return h.clock.ArmedBy(probeLoopTimers) >= 2 })
		start := time.Now()
		h.clock.Advance(time.Second)
		h.eventually("a round of isp2", func() bool { return h.probers.count("wan2") > before })
		t.Logf("round %d: isp2 probed %v after the clock moved, isp1's command hanging", i+1, time.Since(start))
	}
	h.eventually("isp1 down", func() bool {
		if h.state("isp1").State == health.StateDown {
			return true
		}
		h.clock.Advance(time.Second)
		time.Sleep(50 * time.Millisecond)
		return false
	})
	if r := h.state("isp1").Reason; !strings.Contains(r, "command timed out after 500ms") {
		t.Errorf("reason %q", r)
	}
	if h.state("isp2").State != health.StateUp {
		t.Errorf("isp2: %+v", h.state("isp2"))
	}
}

// checkedDNS is checked with a DNS server on each link.
var checkedDNS = strings.Replace(strings.Replace(checked,
	"    gateway: 192.0.2.1\n", "    gateway: 192.0.2.1\n    dns: [192.0.2.53]\n", 1),
	"    gateway: 198.51.100.1\n", "    gateway: 198.51.100.1\n    dns: [198.51.100.53]\n", 1)

// startDNSHarness starts a daemon on checkedDNS; servers reads the
// nameservers its resolv file lists, space-separated.
func startDNSHarness(t *testing.T) (h *harness, servers func() string) {
	t.Helper()
	h = newHarness(t)
	h.c = configtest.MustParse(t, checkedDNS)
	h.k = newFakeKernel(h.rec, h.c)
	h.probers = newFakeProbers(h.c)
	h.start()
	file := filepath.Join(h.resolvDir, "resolv.conf")
	return h, func() string {
		b, _ := os.ReadFile(file)
		var out []string
		for l := range strings.Lines(string(b)) {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "nameserver" {
				out = append(out, f[1])
			}
		}
		return strings.Join(out, " ")
	}
}

// The resolv file is written at the start and follows the links' health:
// a link down takes its servers out, its return brings them back, in the
// default policy's order.
func TestResolvFileFollowsTheLinks(t *testing.T) {
	h, servers := startDNSHarness(t)
	h.eventually("written at the start", func() bool { return servers() == "192.0.2.53 198.51.100.53" })
	h.probers.set("wan1", false)
	for range 3 {
		h.round()
	}
	h.waitState("isp1", health.StateDown)
	h.advanceSync()
	h.eventually("isp1's server out", func() bool { return servers() == "198.51.100.53" })
	h.probers.set("wan1", true)
	for range 2 {
		h.round()
	}
	h.waitState("isp1", health.StateUp)
	h.advanceSync()
	h.eventually("isp1's server back, first", func() bool { return servers() == "192.0.2.53 198.51.100.53" })
}

// dns: auto reads the lease at every sync: a renewed lease with other
// servers changes the resolv file and the servers' routes.
func TestDNSAutoFollowsTheLease(t *testing.T) {
	lease := filepath.Join(t.TempDir(), "isp2.lease")
	write := func(s string) {
		if err := os.WriteFile(lease, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("lease {\n  option domain-name-servers 198.51.100.53;\n}\n")
	h := newHarness(t)
	h.c = configtest.MustParse(t, strings.Replace(strings.Replace(checked,
		"    gateway: 192.0.2.1\n", "    gateway: 192.0.2.1\n    dns: [192.0.2.53]\n", 1),
		"    gateway: 198.51.100.1\n", "    gateway: 198.51.100.1\n    dns: auto\n    dns_from: "+lease+"\n", 1))
	h.k = newFakeKernel(h.rec, h.c)
	h.probers = newFakeProbers(h.c)
	h.start()
	file := filepath.Join(h.resolvDir, "resolv.conf")
	servers := func() string {
		b, _ := os.ReadFile(file)
		var out []string
		for l := range strings.Lines(string(b)) {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "nameserver" {
				out = append(out, f[1])
			}
		}
		return strings.Join(out, " ")
	}
	h.eventually("the lease's server", func() bool { return servers() == "192.0.2.53 198.51.100.53" })
	write("lease {\n  option domain-name-servers 198.51.100.53;\n}\nlease {\n  option domain-name-servers 198.51.100.54, 198.51.100.55;\n}\n")
	h.events.send(Event{Kind: EventDrift, What: "an address changed"})
	h.advanceSync()
	h.eventually("the renewed lease's servers", func() bool { return servers() == "192.0.2.53 198.51.100.54 198.51.100.55" })
	h.stop()
	var routes []string
	for _, r := range h.d.applied.Routing.Routes {
		if r.Table == h.c.BalanceTable && r.Dst.Bits() == 32 {
			routes = append(routes, r.Dst.String()+" "+r.Dev)
		}
	}
	if want := "192.0.2.53/32 wan1,198.51.100.54/32 wan2,198.51.100.55/32 wan2"; strings.Join(routes, ",") != want {
		t.Errorf("servers' routes %v, want %s", routes, want)
	}
}

// The resolv file lists the servers of the links in the route, as the
// servers' routes do: a drained link's server has no route through its
// link (its queries would leave by another, whose ISP may refuse them),
// and links that all failed their checks stay in the route (fail open),
// so their servers stay listed rather than none, from which a resolver
// would ask 127.0.0.1.
func TestResolvFileFollowsTheRoute(t *testing.T) {
	h, servers := startDNSHarness(t)
	h.eventually("written at the start", func() bool { return servers() == "192.0.2.53 198.51.100.53" })
	setLink(t, h, "isp1", operator.Drain)
	h.eventually("the drained link's server out", func() bool { return servers() == "198.51.100.53" })
	h.advanceSync()
	setLink(t, h, "isp1", operator.Auto)
	h.eventually("back in auto", func() bool { return servers() == "192.0.2.53 198.51.100.53" })

	h.probers.set("wan1", false)
	h.probers.set("wan2", false)
	for range 3 {
		h.round()
	}
	h.waitState("isp1", health.StateDown)
	h.waitState("isp2", health.StateDown)
	h.advanceSync()
	h.events.send(Event{Kind: EventDrift, What: "resync"})
	h.eventually("every link down: both in the route, both listed", func() bool {
		b, _ := os.ReadFile(filepath.Join(h.resolvDir, "resolv.conf"))
		return servers() == "192.0.2.53 198.51.100.53" && !strings.Contains(string(b), "No link")
	})
}
