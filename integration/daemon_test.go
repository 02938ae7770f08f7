package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// daemon is a `flowpin run` inside a namespace.
type daemon struct {
	t    testing.TB
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan error

	ns, cfg string // namespace, config path

	stopOnce sync.Once
	exitErr  error
	took     time.Duration
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// startDaemon runs flowpin run with cfg in ns and waits until it has
// applied. It is stopped (SIGTERM) in t.Cleanup if still running.
func startDaemon(t testing.TB, ns, cfg string, args ...string) *daemon {
	t.Helper()
	if flowpinBin == "" {
		t.Skip("flowpin binary not built")
	}
	if err := mustOwn(ns); err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, "run.yaml", cfg)
	d := &daemon{t: t, done: make(chan error, 1), ns: ns, cfg: path}
	d.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, flowpinBin, "run", "-c", path}, args...)...)
	w := lockedWriter{&d.mu, &d.log}
	d.cmd.Stdout, d.cmd.Stderr = w, w
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.logs())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.logs(), "msg=running") {
		select {
		case err := <-d.done:
			t.Fatalf("daemon exited: %v\n%s", err, d.logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready:\n%s", d.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

func (d *daemon) logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// stop sends SIGTERM and returns the exit error and how long exiting took.
func (d *daemon) stop() (time.Duration, error) {
	d.stopOnce.Do(func() {
		start := time.Now()
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case d.exitErr = <-d.done:
		case <-time.After(10 * time.Second):
			_ = d.cmd.Process.Kill()
			d.exitErr = fmt.Errorf("did not exit within 10s of SIGTERM")
		}
		d.took = time.Since(start)
	})
	return d.took, d.exitErr
}

// checkedLinks is the dual-WAN config with a health check per link (YAML
// flow mappings), isp2 reached by gw2 and, if tier2 is not 0, in that tier.
func checkedLinks(d *dualWAN, gw2 string, tier2 int, check1, check2 string) string {
	tier := ""
	if tier2 != 0 {
		tier = fmt.Sprintf("    tier: %d\n", tier2)
	}
	return fmt.Sprintf(`links:
  - name: isp1
    interface: wan1
    gateway: %s
    weight: 1
    nat: true
    check: %s
  - name: isp2
    interface: wan2
    gateway: %s
    weight: 1
    nat: true
%s    check: %s
`, d.GW1, check1, gw2, tier, check2)
}

// fastCheck probes the far host every 300 ms, 3 rounds to go down or up.
func fastCheck(d *dualWAN) string {
	return fmt.Sprintf("{targets: [%s], interval: 300ms, timeout: 300ms, fall: 3, rise: 3}", d.Service)
}

// checkedConfig is the dual-WAN config with fast checks against the far
// host, as the scenarios use.
func checkedConfig(d *dualWAN, gw2 string) string {
	return checkedLinks(d, gw2, 0, fastCheck(d), fastCheck(d))
}

// blackhole makes an ISP drop everything from its customer while the
// customer's carrier stays up: a silent upstream failure.
func blackhole(t testing.TB, isp string) func() {
	nft(t, isp, `table netdev outage {
	chain in {
		type filter hook ingress device "cust" priority -500; policy drop;
	}
}
`)
	return func() { run(t, isp, "nft", "delete", "table", "netdev", "outage") }
}

// linkJSON is a link's row of `flowpin status --json`: its state (and
// its IPv6 state), and the probes' figures.
type linkJSON struct {
	Name       string    `json:"name"`
	State      string    `json:"state"`
	State6     string    `json:"state6"`
	Reason     string    `json:"reason"`
	Reason6    string    `json:"reason6"`
	LastChange string    `json:"last_change"`
	StateSince time.Time `json:"state_since"`
	RTTMillis  float64   `json:"rtt_ms"`
	JitterMS   float64   `json:"jitter_ms"`
	Loss       float64   `json:"loss"`
	Window     int       `json:"window"`
	FlowsKept  string    `json:"flows_kept"`
}

// statusLinks asks `flowpin status --json` for the links.
func (dm *daemon) statusLinks(t testing.TB) []linkJSON {
	t.Helper()
	out, err := flowpin(t, dm.ns, "status", "--json", "-c", dm.cfg)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var s struct {
		Links []linkJSON `json:"links"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return s.Links
}

// linkStates is statusLinks by link name.
func (dm *daemon) linkStates(t testing.TB) map[string]linkJSON {
	t.Helper()
	m := map[string]linkJSON{}
	for _, l := range dm.statusLinks(t) {
		m[l.Name] = l
	}
	return m
}

// waitState polls status until link is in state, or fails after limit.
func (dm *daemon) waitState(t testing.TB, link, state string, limit time.Duration) linkJSON {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		l := dm.linkStates(t)[link]
		if l.State == state {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("link %s still %q after %v, want %q (%s)", link, l.State, limit, state, l.Reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// untilAllSucceed makes batches of short LAN connections until one batch
// succeeds completely, and returns how long that took from start.
func untilAllSucceed(t testing.TB, d *dualWAN, srv *echoServer, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	for {
		r := connectN(t, d.LAN, target, srv, 16, dialOpts{Timeout: 250 * time.Millisecond, Parallel: 16})
		if r.Failed == 0 {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("new connections still failing %v after the outage began (%d of 16)", limit, r.Failed)
		}
	}
}

func TestDaemonSilentFailure(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	dm := startDaemon(t, d.Router, checkedConfig(d, d.GW2))
	untilAllSucceed(t, d, srv, time.Now(), 5*time.Second)

	start := time.Now()
	blackhole(t, d.ISP2)
	took := untilAllSucceed(t, d, srv, start, 6*time.Second)
	t.Logf("silent failure: new connections all succeed again after %v", took.Round(time.Millisecond))
	l := dm.waitState(t, "isp2", "down", 2*time.Second)
	if !strings.Contains(l.Reason, "probes lost to "+d.Service) {
		t.Errorf("reason %q does not say what was lost", l.Reason)
	}
	if s := dm.linkStates(t)["isp1"]; s.State != "up" {
		t.Errorf("isp1 is %q", s.State)
	}
}

func TestDaemonCarrierLoss(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	// Slow probes: only the carrier notification can explain a fast
	// failover here.
	cfg := strings.ReplaceAll(checkedConfig(d, d.GW2), "interval: 300ms", "interval: 2s")
	dm := startDaemon(t, d.Router, cfg)
	untilAllSucceed(t, d, srv, time.Now(), 5*time.Second)

	start := time.Now()
	run(t, d.ISP2, "ip", "link", "set", "cust", "down")
	took := untilAllSucceed(t, d, srv, start, 3*time.Second)
	t.Logf("carrier loss: new connections all succeed again after %v", took.Round(time.Millisecond))
	l := dm.waitState(t, "isp2", "down", time.Second)
	if !strings.Contains(l.Reason, "carrier lost on wan2") {
		t.Errorf("reason %q", l.Reason)
	}
}

// While isp2 is out, long-lived connections (all on isp1) carry data; isp2
// comes back; not one breaks; new flows use both links again. Flows pinned
// to isp1 before the outage survive it (selective flush).
func TestDaemonRecoveryAndSelectiveFlush(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	dm := startDaemon(t, d.Router, checkedConfig(d, d.GW2))

	before := startLongLived(t, d.LAN, target, srv, 24, dialOpts{})
	time.Sleep(300 * time.Millisecond)
	restore := blackhole(t, d.ISP2)
	dm.waitState(t, "isp2", "down", 5*time.Second)
	// Status says down a moment before the balance route loses isp2: a
	// flow opened between the two went to the dead link.
	waitBalance(t, d.Router, "wan2", false)

	during := startLongLived(t, d.LAN, target, srv, 16, dialOpts{})
	time.Sleep(500 * time.Millisecond)
	restore()
	dm.waitState(t, "isp2", "up", 5*time.Second)
	time.Sleep(stallAfter + 500*time.Millisecond)

	onISP1, onISP2 := 0, 0
	for i, s := range before.stop() {
		switch s.Remote.Addr() {
		case netip.MustParseAddr(d.WAN1):
			onISP1++
			if s.Stalled || s.Err != nil {
				t.Errorf("connection %d on isp1 broke when isp2 failed: stalled=%v err=%v", i, s.Stalled, s.Err)
			}
		case netip.MustParseAddr(d.WAN2):
			onISP2++ // its link died: it may break, and re-establishes elsewhere
		}
	}
	if onISP1 == 0 || onISP2 == 0 {
		t.Errorf("flows before the outage were %d/%d on isp1/isp2; the test needs both", onISP1, onISP2)
	}
	for i, s := range during.stop() {
		if s.Remote.Addr() != netip.MustParseAddr(d.WAN1) {
			t.Errorf("connection %d opened during the outage went by %v", i, s.Remote.Addr())
		}
		if s.Stalled || s.Err != nil || s.Echoes < 20 {
			t.Errorf("connection %d opened during the outage broke when isp2 returned: stalled=%v err=%v echoes=%d", i, s.Stalled, s.Err, s.Echoes)
		}
	}
	srv.Reset()
	r := connectN(t, d.LAN, target, srv, 240, dialOpts{})
	if r.Failed != 0 {
		t.Fatalf("%d failed after recovery: %v", r.Failed, r.Errors[0])
	}
	checkSplit(t, d, r.PerSource, 1, 1)
}

func TestDaemonRepairsDrift(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	startDaemon(t, d.Router, checkedConfig(d, d.GW2))
	want := run(t, d.Router, "ip", "rule")
	// The rules' counters are masked: the long-lived flows' packets move
	// them in the repaired table too.
	nftTable := func() string {
		out, _ := tryRun(d.Router, "nft", "list", "table", "inet", "flowpin")
		return nftCounters.ReplaceAllString(out, "counter")
	}
	wantNFT := nftTable()
	ll := startLongLived(t, d.LAN, target, srv, 16, dialOpts{})
	time.Sleep(300 * time.Millisecond)

	for _, drift := range []struct {
		name string
		cmd  []string
		got  func() string
		want string
	}{
		{"ip rule flush protocol 201", []string{"ip", "rule", "flush", "protocol", "201"}, func() string { return run(t, d.Router, "ip", "rule") }, want},
		{"nft delete table inet flowpin", []string{"nft", "delete", "table", "inet", "flowpin"}, nftTable, wantNFT},
	} {
		start := time.Now()
		run(t, d.Router, drift.cmd...)
		for drift.got() != drift.want {
			if time.Since(start) > 3*time.Second {
				t.Fatalf("after %s: not repaired in 3s:\n%s", drift.name, drift.got())
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("%s: repaired after %v", drift.name, time.Since(start).Round(time.Millisecond))
	}
	time.Sleep(500 * time.Millisecond)
	for i, s := range ll.stop() {
		if s.Stalled || s.Err != nil {
			t.Errorf("connection %d broke across the repair: stalled=%v err=%v", i, s.Stalled, s.Err)
		}
	}
}

func TestDaemonSIGTERMAndRestart(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	cfg := checkedConfig(d, d.GW2)
	dm := startDaemon(t, d.Router, cfg)
	ll := startLongLived(t, d.LAN, target, srv, 24, dialOpts{})
	time.Sleep(300 * time.Millisecond)

	took, err := dm.stop()
	if err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, dm.logs())
	}
	t.Logf("exited 0 %v after SIGTERM", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("took %v to exit", took)
	}
	// Routing stays as last applied.
	if r := connectN(t, d.LAN, target, srv, 40, dialOpts{}); r.Failed != 0 {
		t.Errorf("%d of 40 new connections failed with the daemon stopped", r.Failed)
	}

	dm2 := startDaemon(t, d.Router, cfg)
	time.Sleep(time.Second)
	if strings.Contains(dm2.logs(), "repaired kernel state") {
		t.Errorf("restart changed the kernel:\n%s", dm2.logs())
	}
	for i, s := range ll.stop() {
		if s.Stalled || s.Err != nil {
			t.Errorf("connection %d broke across the restart: stalled=%v err=%v", i, s.Stalled, s.Err)
		}
	}
}

// gateway: auto follows the interface's default route in main, as a DHCP
// client changes it.
func TestDaemonGatewayAuto(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	// What a DHCP client on wan2 installs: its own default route.
	run(t, d.Router, "ip", "route", "add", "default", "via", d.GW2, "dev", "wan2", "metric", "200")
	dm := startDaemon(t, d.Router, checkedConfig(d, "auto"))
	if got := run(t, d.Router, "ip", "route", "show", "table", "102", "default"); !strings.Contains(got, "via "+d.GW2) {
		t.Fatalf("table 102: %s", got)
	}

	// The ISP renumbers its side; the DHCP client follows.
	newGW := "198.51.100.254"
	// (Deleting first: deleting a primary address takes its
	// secondaries with it.)
	run(t, d.ISP2, "ip", "addr", "del", d.GW2+"/24", "dev", "cust")
	run(t, d.ISP2, "ip", "addr", "add", newGW+"/24", "dev", "cust")
	run(t, d.Router, "ip", "route", "replace", "default", "via", newGW, "dev", "wan2", "metric", "200")
	start := time.Now()
	for !strings.Contains(run(t, d.Router, "ip", "route", "show", "table", "102", "default"), "via "+newGW) {
		if time.Since(start) > 3*time.Second {
			t.Fatalf("table 102 did not follow the gateway: %s", run(t, d.Router, "ip", "route", "show", "table", "all"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("link route followed the new gateway after %v", time.Since(start).Round(time.Millisecond))
	dm.waitState(t, "isp2", "up", 5*time.Second)
	srv.Reset()
	r := connectN(t, d.LAN, target, srv, 120, dialOpts{})
	if r.Failed != 0 || r.PerSource[netip.MustParseAddr(d.WAN2)] == 0 {
		t.Errorf("after the gateway change: %d failed, far saw %v", r.Failed, r.PerSource)
	}
}

// scrape fetches the daemon's /metrics from inside ns. The socket is made
// on nsDo's thread (http.Client would dial from another goroutine, in
// another namespace), then used for one HTTP/1.0 request.
func scrape(t testing.TB, ns, addr string) (string, error) {
	var conn net.Conn
	if err := nsDo(ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// Host: the address scraped, as Prometheus sends it.
	if _, err := io.WriteString(conn, "GET /metrics HTTP/1.0\r\nHost: "+addr+"\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// metric returns the value of the sample whose name and labels are exactly
// series (e.g. `flowpin_link_up{link="isp2"}`), or -1.
func metric(body, series string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

func TestDaemonMetrics(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	// No host: localhost only.
	dm := startDaemon(t, d.Router, checkedConfig(d, d.GW2), "--metrics", ":9108")
	ll := startLongLived(t, d.LAN, target, srv, 12, dialOpts{})
	time.Sleep(300 * time.Millisecond)
	blackhole(t, d.ISP2)
	dm.waitState(t, "isp2", "down", 5*time.Second)

	want := map[string]func(float64) bool{
		`flowpin_link_up{family="ipv4",link="isp1"}`:                    func(v float64) bool { return v == 1 },
		`flowpin_link_up{family="ipv4",link="isp2"}`:                    func(v float64) bool { return v == 0 },
		`flowpin_link_state_changes_total{family="ipv4",link="isp2"}`:   func(v float64) bool { return v == 1 },
		`flowpin_link_loss_ratio{family="ipv4",link="isp2"}`:            func(v float64) bool { return v > 0 },
		`flowpin_link_loss_ratio{family="ipv4",link="isp1"}`:            func(v float64) bool { return v == 0 },
		`flowpin_link_rtt_seconds{family="ipv4",link="isp1"}`:           func(v float64) bool { return v > 0 && v < 0.3 },
		`flowpin_link_jitter_seconds{family="ipv4",link="isp1"}`:        func(v float64) bool { return v >= 0 && v < 0.3 },
		`flowpin_probe_rtt_seconds{family="ipv4",link="isp1"}`:          func(v float64) bool { return v > 0 && v < 1 },
		`flowpin_probes_total{family="ipv4",link="isp2",result="lost"}`: func(v float64) bool { return v >= 3 },
		`flowpin_syncs_total`:                                   func(v float64) bool { return v >= 2 },
		`flowpin_sync_errors_total`:                             func(v float64) bool { return v == 0 },
		`flowpin_link_flows{family="ipv4",link="isp1"}`:         func(v float64) bool { return v >= 1 },
		`flowpin_link_bytes_total{direction="out",link="isp1"}`: func(v float64) bool { return v > 0 },
		`flowpin_link_bytes_total{direction="in",link="isp1"}`:  func(v float64) bool { return v > 0 },
		`flowpin_flow_counts_ready`:                             func(v float64) bool { return v == 1 },
		`flowpin_nft_counter_read_errors`:                       func(v float64) bool { return v == 0 },
		`flowpin_conntrack_event_losses_total`:                  func(v float64) bool { return v >= 0 },
	}
	// The sync after isp2 went down (syncs_total) comes a moment after
	// status says down.
	body := scrapeUntil(t, d.Router, "127.0.0.1:9108", 5*time.Second, func(body string) bool {
		for series, ok := range want {
			if !ok(metric(body, series)) {
				return false
			}
		}
		return true
	})
	for series, ok := range want {
		if v := metric(body, series); !ok(v) {
			t.Errorf("%s = %v", series, v)
		}
	}
	// The selective flush took isp2's flows away; isp1's stay.
	for i, s := range ll.stop() {
		if s.Remote.Addr() == netip.MustParseAddr(d.WAN1) && (s.Stalled || s.Err != nil) {
			t.Errorf("connection %d on isp1 broke", i)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
	// Bound to localhost: the router's LAN address does not answer.
	if _, err := scrape(t, d.Router, d.RouterLAN+":9108"); err == nil {
		t.Error("metrics answer on the LAN address; want localhost only")
	}
}

// A gateway whose neighbour entry fails takes the link down at once, long
// before the (deliberately slow) probes would.
func TestDaemonNeighbourFailure(t *testing.T) {
	d := newDualWAN(t)
	// Fast neighbour unreachability detection on wan2, so the kernel
	// gives up on the gateway's MAC within about a second of silence.
	for k, v := range map[string]string{
		"base_reachable_time_ms": "500", "delay_first_probe_time": "1",
		"retrans_time_ms": "100", "ucast_solicit": "2", "mcast_solicit": "2",
	} {
		setSysctl(t, d.Router, "net.ipv4.neigh.wan2."+k, v)
	}
	cfg := strings.ReplaceAll(checkedConfig(d, d.GW2), "interval: 300ms", "interval: 1500ms")
	cfg = strings.ReplaceAll(cfg, "fall: 3", "fall: 10")
	dm := startDaemon(t, d.Router, cfg)
	dm.waitState(t, "isp2", "up", 5*time.Second)
	blackhole(t, d.ISP2)
	start := time.Now()
	l := dm.waitState(t, "isp2", "down", 8*time.Second)
	t.Logf("down after %v: %s", time.Since(start).Round(time.Millisecond), l.Reason)
	if !strings.Contains(l.Reason, "neighbour failed") {
		t.Errorf("reason %q: want the neighbour failure (probes need 10 rounds of 1.5s)", l.Reason)
	}
}

// A WAN whose address is not there yet when the daemon starts (DHCP not
// done at boot) is simply down, not an error; when it gets its address,
// the daemon routes it, its probes rise, and it takes new flows.
func TestDaemonLinkNotReadyAtStart(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	run(t, d.Router, "ip", "addr", "flush", "dev", "wan2")
	dm := startDaemon(t, d.Router, checkedConfig(d, d.GW2))
	l := dm.linkStates(t)["isp2"]
	if l.State != "down" || !strings.Contains(l.Reason, "no IPv4 address yet") {
		t.Errorf("isp2 at start: %+v", l)
	}
	if r := connectN(t, d.LAN, target, srv, 30, dialOpts{}); r.Failed != 0 || r.PerSource[netip.MustParseAddr(d.WAN1)] != 30 {
		t.Errorf("with isp2 not ready: %d failed, far saw %v", r.Failed, r.PerSource)
	}
	run(t, d.Router, "ip", "addr", "add", d.WAN2+"/24", "dev", "wan2")
	dm.waitState(t, "isp2", "up", 5*time.Second)
	// The split is of flows dialled once the route has isp2 again.
	waitBalance(t, d.Router, "wan2", true)
	srv.Reset()
	r := connectN(t, d.LAN, target, srv, 240, dialOpts{})
	if r.Failed != 0 {
		t.Fatalf("%d failed once isp2 was ready: %v", r.Failed, r.Errors[0])
	}
	checkSplit(t, d, r.PerSource, 1, 1)
}
