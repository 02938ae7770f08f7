package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// haPair is two routers, fw-a and fw-b, sharing the LAN and both WAN
// segments (bridges in a switch namespace), with a dedicated sync link
// between them, as README's "HA pair" section and examples/ha describe:
//
//	lan 10.9.0.10 ──brlan── a lan 10.9.0.2, b lan 10.9.0.3, VIP 10.9.0.1
//	isp1 192.0.2.1 ──brw1── a wan1 192.0.2.3, b wan1 192.0.2.4, VIP 192.0.2.2
//	isp2 198.51.100.1 ──brw2── a wan2 198.51.100.3, b .4, VIP 198.51.100.2
//	a sync0 10.255.0.1/30 ── b sync0 10.255.0.2/30
//	isp1, isp2 ── far (203.0.113.10)
//
// Each ISP drops what its customer segment sends from outside its
// customer prefix, so a flow that left by the other link dies.
type haPair struct {
	LAN, A, B, ISP1, ISP2, Far, SW string
	// dirs: each node's /etc (keepalived.conf, conntrackd.conf,
	// primary-backup.sh, flowpin.yaml, pid and lock files).
	dirs map[string]string
	cfg  string // flowpin.yaml, the same on both nodes
}

const (
	haVIP1   = "192.0.2.2"
	haVIP2   = "198.51.100.2"
	haLANVIP = "10.9.0.1"
	haFar    = "203.0.113.10"
)

// The files of README's example, which the pair runs as they are; only
// the paths of files a node owns are moved into the node's directory, as
// two nodes on one host cannot share /etc and /var/run.
const (
	haExamples    = "../examples/ha"
	primaryBackup = "/usr/share/doc/conntrackd/examples/sync/primary-backup.sh"
)

func newHAPair(t *testing.T) *haPair {
	t.Helper()
	start := time.Now()
	for _, bin := range []string{"keepalived", "conntrackd"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed (make deps): %v", bin, err)
		}
	}
	l := newLab(t)
	p := &haPair{
		LAN: l.addNS("lan"), A: l.addNS("a"), B: l.addNS("b"),
		ISP1: l.addNS("isp1"), ISP2: l.addNS("isp2"), Far: l.addNS("far"), SW: l.addNS("sw"),
		dirs: map[string]string{},
	}
	for _, br := range []string{"brlan", "brw1", "brw2"} {
		run(t, p.SW, "ip", "link", "add", br, "type", "bridge", "mcast_snooping", "0")
		linkUp(t, p.SW, br)
	}
	port := func(ns, dev, swPort, br string) {
		veth(t, ns, dev, p.SW, swPort)
		run(t, p.SW, "ip", "link", "set", swPort, "master", br)
	}
	port(p.LAN, "eth0", "lan-c", "brlan")
	port(p.ISP1, "cust", "w1-i", "brw1")
	port(p.ISP2, "cust", "w2-i", "brw2")
	for i, n := range []string{p.A, p.B} {
		s := string(rune('a' + i))
		port(n, "lan", "lan-"+s, "brlan")
		port(n, "wan1", "w1-"+s, "brw1")
		port(n, "wan2", "w2-"+s, "brw2")
		addAddr(t, n, "lan", fmt.Sprintf("10.9.0.%d/24", 2+i))
		addAddr(t, n, "wan1", fmt.Sprintf("192.0.2.%d/24", 3+i))
		addAddr(t, n, "wan2", fmt.Sprintf("198.51.100.%d/24", 3+i))
		setSysctl(t, n, "net.ipv4.ip_forward", "1")
		// What a box has before flowpin: one default route.
		addRoute(t, n, "default", "via", "192.0.2.1", "dev", "wan1")
	}
	veth(t, p.A, "sync0", p.B, "sync0")
	addAddr(t, p.A, "sync0", "10.255.0.1/30")
	addAddr(t, p.B, "sync0", "10.255.0.2/30")

	addAddr(t, p.LAN, "eth0", "10.9.0.10/24")
	addRoute(t, p.LAN, "default", "via", haLANVIP)

	veth(t, p.ISP1, "core", p.Far, "isp1")
	veth(t, p.ISP2, "core", p.Far, "isp2")
	for _, isp := range []struct{ ns, cust, core, far, prefix string }{
		{p.ISP1, "192.0.2.1/24", "100.64.1.1/30", "100.64.1.2", "192.0.2.0/24"},
		{p.ISP2, "198.51.100.1/24", "100.64.2.1/30", "100.64.2.2", "198.51.100.0/24"},
	} {
		addAddr(t, isp.ns, "cust", isp.cust)
		addAddr(t, isp.ns, "core", isp.core)
		setSysctl(t, isp.ns, "net.ipv4.ip_forward", "1")
		addRoute(t, isp.ns, "203.0.113.0/24", "via", isp.far)
		nft(t, isp.ns, bcp38Ruleset(isp.prefix))
	}
	addAddr(t, p.Far, "isp1", "100.64.1.2/30")
	addAddr(t, p.Far, "isp2", "100.64.2.2/30")
	addAddr(t, p.Far, "lo", haFar+"/32")
	addRoute(t, p.Far, "192.0.2.0/24", "via", "100.64.1.1", "src", haFar)
	addRoute(t, p.Far, "198.51.100.0/24", "via", "100.64.2.1", "src", haFar)

	cfg, err := os.ReadFile(filepath.Join(haExamples, "flowpin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p.cfg = string(cfg)
	for _, n := range []string{"a", "b"} {
		p.dirs[n] = p.nodeFiles(t, n)
	}
	t.Logf("HA pair topology (%s) up in %v", strings.TrimSuffix(p.A, "-a"), time.Since(start).Round(time.Millisecond))
	return p
}

// nodeFiles writes node n's copy of the example files into a directory of
// its own and returns it.
func (p *haPair) nodeFiles(t *testing.T, n string) string {
	t.Helper()
	dir := t.TempDir()
	local := strings.NewReplacer(
		"/etc/conntrackd/", dir+"/",
		"/etc/keepalived/", dir+"/",
		"/var/run/conntrackd.ctl", dir+"/conntrackd.ctl",
		"/var/lock/conntrack.lock", dir+"/conntrack.lock",
	)
	for _, f := range []struct {
		from, to string
		mode     os.FileMode // keepalived refuses an executable config
	}{
		{filepath.Join(haExamples, "keepalived-"+n+".conf"), "keepalived.conf", 0o644},
		{filepath.Join(haExamples, "conntrackd-"+n+".conf"), "conntrackd.conf", 0o644},
		{primaryBackup, "primary-backup.sh", 0o755},
	} {
		b, err := os.ReadFile(f.from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.to), []byte(local.Replace(string(b))), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// bgProc is a daemon of the pair's (keepalived, conntrackd) run in a
// namespace; its output is kept for a failing test's log.
type bgProc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func startBG(t *testing.T, ns, name string, args ...string) *bgProc {
	t.Helper()
	if err := mustOwn(ns); err != nil {
		t.Fatal(err)
	}
	b := &bgProc{name: name, done: make(chan struct{})}
	b.cmd = exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	w := lockedWriter{&b.mu, &b.out}
	b.cmd.Stdout, b.cmd.Stderr = w, w
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	t.Cleanup(func() {
		b.kill()
		if t.Failed() {
			t.Logf("%s log:\n%s", b.name, b.logs())
		}
	})
	return b
}

func (b *bgProc) logs() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.String()
}

// kill ends the process with SIGKILL, by its own pid.
func (b *bgProc) kill() {
	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
	}
}

// haNode is one router's daemons.
type haNode struct {
	ns, dir    string
	flowpin    *daemon
	conntrackd *bgProc
	keepalived *bgProc
}

func (p *haPair) startConntrackd(t *testing.T, n string, ns string) *bgProc {
	t.Helper()
	dir := p.dirs[n]
	b := startBG(t, ns, "conntrackd "+n, "conntrackd", "-C", filepath.Join(dir, "conntrackd.conf"))
	waitFor(t, 5*time.Second, "conntrackd "+n+" socket", func() bool {
		_, err := os.Stat(filepath.Join(dir, "conntrackd.ctl"))
		return err == nil
	})
	return b
}

// startKeepalived runs keepalived's VRRP part in the foreground, with pid
// files of the node's own.
func (p *haPair) startKeepalived(t *testing.T, n string, ns string) *bgProc {
	t.Helper()
	dir := p.dirs[n]
	b := startBG(t, ns, "keepalived "+n, "keepalived", "-n", "-l", "-D", "-P",
		"-f", filepath.Join(dir, "keepalived.conf"),
		"-p", filepath.Join(dir, "keepalived.pid"), "-r", filepath.Join(dir, "vrrp.pid"))
	return b
}

// killKeepalived SIGKILLs keepalived and its VRRP child (by their pid
// files): a dead box sends no last advert with priority 0.
func (p *haPair) killKeepalived(t *testing.T, n string, b *bgProc) {
	t.Helper()
	if raw, err := os.ReadFile(filepath.Join(p.dirs[n], "vrrp.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	b.kill()
}

// synced says whether node n's conntrackd has every flow of ll,
// established, in its external cache (the peer's flows, which it commits
// on promotion), by the flow's original tuple.
func (p *haPair) synced(t *testing.T, n string, ll *longLived, port int) bool {
	t.Helper()
	ns := map[string]string{"a": p.A, "b": p.B}[n]
	out, _ := tryRun(ns, "conntrackd", "-C", filepath.Join(p.dirs[n], "conntrackd.conf"), "-e")
	for _, st := range ll.status {
		found := false
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "ESTABLISHED") && strings.Contains(line, fmt.Sprintf("src=%s dst=%s sport=%d dport=%d ", st.Local.Addr(), haFar, st.Local.Port(), port)) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// holds says which of the VIPs ns has.
func holds(t *testing.T, ns string) map[string]bool {
	t.Helper()
	out := run(t, ns, "ip", "-o", "-4", "addr", "show")
	m := map[string]bool{}
	for _, v := range []string{haLANVIP, haVIP1, haVIP2} {
		m[v] = strings.Contains(out, " "+v+"/")
	}
	return m
}

func holdsAll(t *testing.T, ns string) bool {
	for _, ok := range holds(t, ns) {
		if !ok {
			return false
		}
	}
	return true
}

// haStatus is the part of `flowpin status --json` this test reads.
type haStatus struct {
	Links []struct {
		Name  string `json:"name"`
		Mark  uint32 `json:"mark"`
		Table int    `json:"table"`
		State string `json:"state"`
	} `json:"links"`
	HA *struct {
		Role string `json:"role"`
		VIPs []struct {
			Addr  string `json:"addr"`
			Iface string `json:"interface"`
		} `json:"vips"`
	} `json:"ha"`
}

func readHAStatus(t *testing.T, dm *daemon) haStatus {
	t.Helper()
	out, err := flowpin(t, dm.ns, "status", "--json", "-c", dm.cfg)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var s haStatus
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return s
}

func (s haStatus) role() string {
	if s.HA == nil {
		return ""
	}
	return s.HA.Role
}

// verifyCheck is one check of `flowpin verify --json`.
type verifyCheck struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Skip   bool   `json:"skipped"`
	Detail string `json:"detail"`
}

// verifyChecks runs flowpin verify --json in ns and returns its checks by
// name (the last of a name).
func verifyChecks(t *testing.T, ns, cfg string, args ...string) map[string]verifyCheck {
	t.Helper()
	out, _ := flowpin(t, ns, append([]string{"verify", "--json", "--no-probe", "-c", cfg}, args...)...)
	var rep struct {
		Checks []verifyCheck `json:"checks"`
	}
	// A failed check adds its one-line error after the JSON.
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&rep); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, out)
	}
	m := map[string]verifyCheck{}
	for _, c := range rep.Checks {
		m[c.Name] = c
	}
	return m
}

// farEstablished are the remote addresses of the far end's established
// connections to port.
func farEstablished(t *testing.T, ns string, port int) map[netip.AddrPort]bool {
	t.Helper()
	out := run(t, ns, "ss", "-Htn", "state", "established", "sport", "= :"+strconv.Itoa(port))
	m := map[netip.AddrPort]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		if ap, err := netip.ParseAddrPort(f[len(f)-1]); err == nil {
			m[ap] = true
		}
	}
	return m
}

var ctReply = regexp.MustCompile(`src=` + regexp.QuoteMeta(haFar) + ` dst=(\S+) sport=(\d+) dport=(\d+) .*mark=(\d+)`)

// ctMarks are the ct marks of ns's flows to the far end, by the NAT
// source (the reply's destination) the far end sees.
func ctMarks(t *testing.T, ns string) map[netip.AddrPort]uint32 {
	t.Helper()
	out := run(t, ns, "conntrack", "-L", "-p", "tcp")
	m := map[netip.AddrPort]uint32{}
	for _, line := range strings.Split(out, "\n") {
		g := ctReply.FindStringSubmatch(line)
		if g == nil {
			continue
		}
		ap, err := netip.ParseAddrPort(g[1] + ":" + g[3])
		if err != nil {
			continue
		}
		mark, _ := strconv.ParseUint(g[4], 10, 32)
		m[ap] = uint32(mark)
	}
	return m
}

// rstCounters count TCP resets: sent by ns itself (output), and received
// by ns (input). An endpoint's input count covers resets from anyone.
const rstCounters = `table inet hatest {
	counter rst_sent {}
	counter rst_received {}
	chain out {
		type filter hook output priority 0; policy accept;
		tcp flags & rst == rst counter name "rst_sent"
	}
	chain in {
		type filter hook input priority 0; policy accept;
		tcp flags & rst == rst counter name "rst_received"
	}
}
`

// TestHATakeover is issue 21's "Done when": A and B run keepalived,
// conntrackd and flowpin run with the same config (README's example,
// examples/ha); 30 long-lived flows exchange data both ways every 200 ms;
// A is killed hard; B holds the VIPs in under 2 s, at least 29 flows go
// on with the same link and NAT source address and port as the far end
// saw them, and no reset is sent for a mid-stream packet; then 40 new
// flows spread over both links, and a silent death of isp2 moves new
// flows to isp1. Along the way: both nodes give the links the same marks
// and tables, status shows each node's role, and verify compares the
// pair through the sync link.
func TestHATakeover(t *testing.T) {
	p := newHAPair(t)
	a := &haNode{ns: p.A, dir: p.dirs["a"]}
	b := &haNode{ns: p.B, dir: p.dirs["b"]}

	// B first: a backup that comes up before its master holds nothing.
	// And its wan2 is down at boot: the link is down until it is back.
	run(t, p.B, "ip", "link", "set", "wan2", "down")
	b.conntrackd = p.startConntrackd(t, "b", p.B)
	b.flowpin = startDaemon(t, p.B, p.cfg, "--metrics", "10.255.0.2:9108", "--public-status")
	b.flowpin.waitState(t, "isp2", "down", 5*time.Second)
	linkUp(t, p.B, "wan2")
	a.conntrackd = p.startConntrackd(t, "a", p.A)
	a.flowpin = startDaemon(t, p.A, p.cfg, "--metrics", "10.255.0.1:9108", "--public-status")
	b.keepalived = p.startKeepalived(t, "b", p.B)
	a.keepalived = p.startKeepalived(t, "a", p.A)
	waitFor(t, 10*time.Second, "A holds the VIPs", func() bool { return holdsAll(t, p.A) })
	waitFor(t, 5*time.Second, "B holds none of the VIPs", func() bool {
		for _, ok := range holds(t, p.B) {
			if ok {
				return false
			}
		}
		return true
	})
	waitFor(t, 5*time.Second, "A's status says primary", func() bool { return readHAStatus(t, a.flowpin).role() == "primary" })
	// A steady pair. (The kill below takes A's links down one by one, so
	// A's daemon sees wan1 go while the sync link is still up: before
	// ha kept a down link's flows, it deleted them, conntrackd synced the
	// deletion to B, and every isp1 flow died with A.)
	time.Sleep(time.Second)
	stA, stB := readHAStatus(t, a.flowpin), readHAStatus(t, b.flowpin)
	if stB.role() != "backup" {
		t.Fatalf("B's status role %q, want backup", stB.role())
	}
	marks := map[string]uint32{} // by VIP
	for i, l := range stA.Links {
		lb := stB.Links[i]
		if l.Name != lb.Name || l.Mark != lb.Mark || l.Table != lb.Table {
			t.Fatalf("the nodes pin differently: A %+v, B %+v", l, lb)
		}
	}
	marks[haVIP1], marks[haVIP2] = stA.Links[0].Mark, stA.Links[1].Mark
	for _, n := range []*haNode{a, b} {
		if l := n.flowpin.waitState(t, "isp2", "up", 5*time.Second); l.State != "up" {
			t.Fatal(l)
		}
	}
	// The routes do not name the VIP: B, which does not hold it, has
	// them all.
	for _, ns := range []string{p.A, p.B} {
		if out := run(t, ns, "ip", "route", "show", "table", "all"); strings.Contains(out, "src "+haVIP1) || strings.Contains(out, "src "+haVIP2) {
			t.Errorf("%s: a route depends on holding a VIP:\n%s", ns, out)
		}
	}
	vA := verifyChecks(t, p.A, a.flowpin.cfg, "--peer", "http://10.255.0.2:9108")
	for _, name := range []string{"ha layout", "ha guard", "ha nat_source", "ha role", "ha conntrackd", "ha peer layout", "ha peer role"} {
		if c := vA[name]; !c.OK {
			t.Errorf("verify on A: %s: %+v", name, c)
		}
	}
	t.Logf("verify on A: %s; %s", vA["ha role"].Detail, vA["ha peer role"].Detail)
	if c := verifyChecks(t, p.B, b.flowpin.cfg)["ha role"]; !c.OK || !strings.HasPrefix(c.Detail, "backup") {
		t.Errorf("verify on B: ha role: %+v", c)
	}

	// A reload on the backup changes nothing of the pair: still backup,
	// the same layout, no flow deleted (conntrackd's cache is in
	// userspace; the kernel's own flows of B stay).
	if out, err := b.flowpin.reload(t, p.cfg, true); err != nil {
		t.Fatalf("reload on B: %v\n%s", err, out)
	}
	if st := readHAStatus(t, b.flowpin); st.role() != "backup" || st.Links[0].Mark != stA.Links[0].Mark || st.Links[1].Table != stA.Links[1].Table {
		t.Fatalf("after a reload, B: %+v", st)
	}

	srv := startEchoServer(t, p.Far, haFar+":0")
	target := hostPort(haFar, srv.Port())
	nft(t, p.B, rstCounters)
	nft(t, p.Far, rstCounters)
	nft(t, p.LAN, rstCounters)

	const n = 30
	ll := startLongLived(t, p.LAN, target, srv, n, dialOpts{Interval: 200 * time.Millisecond})
	before := map[netip.Addr]int{}
	for _, st := range ll.status {
		before[st.Remote.Addr()]++
	}
	t.Logf("30 long-lived flows by NAT source: %v", before)
	if before[netip.MustParseAddr(haVIP1)] == 0 || before[netip.MustParseAddr(haVIP2)] == 0 {
		t.Fatalf("the flows did not spread over both links: %v", before)
	}
	// conntrackd has them in B's external cache before A dies.
	waitFor(t, 5*time.Second, "B's conntrackd has the flows", func() bool { return p.synced(t, "b", ll, srv.Port()) })
	time.Sleep(500 * time.Millisecond)

	repairsBefore := strings.Count(b.flowpin.logs(), "repaired kernel state")
	cacheB, _ := tryRun(p.B, "conntrackd", "-C", filepath.Join(b.dir, "conntrackd.conf"), "-e")
	// A dies: its links go, then its daemons, without a word. It is dead
	// from its first link down (its adverts stop).
	killed := time.Now()
	for _, dev := range []string{"lan", "wan1", "wan2", "sync0"} {
		run(t, p.A, "ip", "link", "set", dev, "down")
	}
	p.killKeepalived(t, "a", a.keepalived)
	a.conntrackd.kill()
	_ = a.flowpin.cmd.Process.Kill()
	took := waitFor(t, 5*time.Second, "B holds the VIPs", func() bool { return holdsAll(t, p.B) })
	t.Logf("takeover: B holds the VIPs %v after A died", took.Round(time.Millisecond))
	if took >= 2*time.Second {
		t.Errorf("takeover took %v, want under 2 s", took)
	}
	waitFor(t, 3*time.Second, "B's status says primary", func() bool { return readHAStatus(t, b.flowpin).role() == "primary" })
	// The promotion is an address change and nothing more: B's daemon
	// writes nothing for it (no route names a VIP, nothing is flushed).
	if logs := b.flowpin.logs(); strings.Count(logs, "repaired kernel state") != repairsBefore || strings.Contains(logs, "flushed") {
		t.Errorf("B's daemon wrote to the kernel for its promotion:\n%s", logs)
	}

	// The flows go on for 3 s after the takeover.
	time.Sleep(took + 3*time.Second)
	far := farEstablished(t, p.Far, srv.Port())
	ct := ctMarks(t, p.B)
	rstB := nftCounter(t, p.B, "inet", "hatest", "rst_sent")
	rstFar := nftCounter(t, p.Far, "inet", "hatest", "rst_received")
	rstLAN := nftCounter(t, p.LAN, "inet", "hatest", "rst_received")
	sts := ll.stop()
	kept := 0
	for i, st := range sts {
		alive := st.Err == nil && st.LastEcho.After(killed.Add(took+2*time.Second))
		switch {
		case !alive:
			t.Logf("flow %d (%v as %v) did not survive: %v, %d echoes, last %v after the kill", i, st.Local, st.Remote, st.Err, st.Echoes, st.LastEcho.Sub(killed).Round(time.Millisecond))
		case !far[st.Remote]:
			t.Errorf("flow %d goes on, but the far end has no connection from %v any more", i, st.Remote)
		case ct[st.Remote] != marks[st.Remote.Addr().String()]:
			// It goes on, but no longer pinned: not kept.
			t.Logf("flow %d (NAT source %v) goes on, but has mark %#x on B, not its link's %#x; in B's external cache before the takeover: %q",
				i, st.Remote, ct[st.Remote], marks[st.Remote.Addr().String()], cacheLine(cacheB, st.Local, srv.Port()))
		default:
			kept++
		}
	}
	t.Logf("flows kept: %d of %d (same NAT source address and port at the far end, same link's mark on B); max stall %v",
		kept, n, maxRTT(sts).Round(time.Millisecond))
	if kept < n-1 {
		t.Errorf("%d of %d flows kept, want at least %d", kept, n, n-1)
	}
	t.Logf("resets: sent by B %d, received by the far end %d, by the LAN host %d", rstB, rstFar, rstLAN)
	if rstB+rstFar+rstLAN != 0 {
		t.Errorf("resets during the takeover: sent by B %d, received by the far end %d, by the LAN host %d; want none", rstB, rstFar, rstLAN)
	}
	// verify on dead A: its conntrackd is gone, and verify says so (while
	// it ran, the check passed above).
	if c := verifyChecks(t, p.A, a.flowpin.cfg)["ha conntrackd"]; c.OK || !strings.Contains(c.Detail, "no conntrackd runs in this network namespace") {
		t.Errorf("verify on A without its conntrackd: %+v", c)
	}
	guarded := guardDrops(t, p.B)
	t.Logf("B's guard rule dropped %d TCP packets that would have started a flow without a SYN", guarded)

	// What the guard is for, made certain: a flow whose entry B does not
	// have (as before conntrackd's commit) sends on. Its packets from the
	// far end are for the VIP, so B's own stack would answer them with a
	// reset; from the LAN, they would start a new flow mid-stream.
	one := startLongLived(t, p.LAN, target, srv, 1, dialOpts{Interval: 100 * time.Millisecond})
	natPort := strconv.Itoa(int(one.status[0].Remote.Port()))
	time.Sleep(300 * time.Millisecond)
	run(t, p.B, "conntrack", "-D", "-p", "tcp", "--reply-port-dst", natPort)
	time.Sleep(time.Second)
	one.stop()
	if sent := nftCounter(t, p.B, "inet", "hatest", "rst_sent"); sent != 0 {
		t.Errorf("B sent %d resets for mid-stream packets of a flow it had no entry for, want none", sent)
	}
	if g := guardDrops(t, p.B); g <= guarded {
		t.Errorf("the guard rule dropped nothing of a flow B had no entry for (%d before, %d after)", guarded, g)
	} else {
		t.Logf("the guard dropped %d mid-stream packets of a flow whose entry B did not have; no reset sent", g-guarded)
	}

	// New flows after the takeover spread over both links.
	srv.Reset()
	res := connectN(t, p.LAN, target, srv, 40, dialOpts{})
	t.Logf("40 new flows after the takeover: %d ok, by NAT source %v", res.OK, res.PerSource)
	if res.Failed > 0 || res.PerSource[netip.MustParseAddr(haVIP1)] == 0 || res.PerSource[netip.MustParseAddr(haVIP2)] == 0 {
		t.Fatalf("new flows after the takeover: %d failed (%v), by NAT source %v", res.Failed, res.Errors, res.PerSource)
	}

	// B's own failover: isp2 dies silently, with connection attempts
	// under way. Those the route sends by isp2 before it is judged down
	// get no answer and are pinned there; B deletes them (they never saw
	// a reply) once isp2 is out of the route, and a SYN retransmit goes by
	// isp1. Kept, they would retry on isp2 until they time out. (A
	// client's SYNs go at 0, 1, 3 and 7 s: the timeout leaves isp2's
	// detection up to about 7 s on a loaded machine.)
	revive := blackhole(t, p.ISP2)
	died := time.Now()
	srv.Reset()
	pinned := make(chan int, 1)
	stopWatch := make(chan struct{})
	go func() { pinned <- maxSynSent(p.B, marks[haVIP2], stopWatch) }()
	res = connectN(t, p.LAN, target, srv, 16, dialOpts{Parallel: 16, Timeout: 10 * time.Second})
	lastDone := time.Since(died)
	close(stopWatch)
	onDead := <-pinned
	t.Logf("16 connection attempts as isp2 died silently: %d ok, by NAT source %v; %d were pinned to isp2 unanswered; the last done %v after isp2 died",
		res.OK, res.PerSource, onDead, lastDone.Round(time.Millisecond))
	if onDead == 0 {
		t.Fatal("no connection attempt was pinned to isp2 as it died: the check proves nothing")
	}
	if res.Failed > 0 || res.PerSource[netip.MustParseAddr(haVIP1)] != 16 {
		t.Fatalf("connection attempts as isp2 died: %d failed (%v), by NAT source at the far end %v; want all 16 by isp1", res.Failed, res.Errors, res.PerSource)
	}
	b.flowpin.waitState(t, "isp2", "down", 5*time.Second)
	// status says down a few ms before the balance route (table 100)
	// loses isp2; a flow started between the two would be pinned to the
	// dead link until its first SYN retransmit (as above). New flows are
	// dialed once the route has moved, so each connects at once by isp1.
	waitFor(t, 2*time.Second, "B's balance route without isp2", func() bool {
		return !strings.Contains(run(t, p.B, "ip", "-4", "route", "show", "table", "100", "default"), "wan2")
	})
	srv.Reset()
	res = connectN(t, p.LAN, target, srv, 20, dialOpts{})
	t.Logf("20 new flows with isp2 dead: %d ok, by NAT source %v", res.OK, res.PerSource)
	if res.Failed > 0 || res.PerSource[netip.MustParseAddr(haVIP2)] != 0 {
		t.Fatalf("new flows with isp2 dead: %d failed (%v), by NAT source %v", res.Failed, res.Errors, res.PerSource)
	}
	revive()
	b.flowpin.waitState(t, "isp2", "up", 5*time.Second)

	// A comes back, as from a reboot: without the VIPs its killed
	// keepalived may have left on its interfaces (they would answer ARP)
	// and without its old conntrack entries. As README says, its
	// keepalived starts once its conntrackd has the flows; then it takes
	// the VIPs back (the higher priority), and the flows started on B
	// meanwhile go on.
	for _, vip := range []struct{ cidr, dev string }{{haLANVIP + "/24", "lan"}, {haVIP1 + "/24", "wan1"}, {haVIP2 + "/24", "wan2"}} {
		_, _ = tryRun(p.A, "ip", "addr", "del", vip.cidr, "dev", vip.dev) // keepalived's fault state may have removed it
	}
	run(t, p.A, "conntrack", "-F")
	for _, dev := range []string{"lan", "wan1", "wan2", "sync0"} {
		linkUp(t, p.A, dev)
	}
	a.conntrackd = p.startConntrackd(t, "a", p.A)
	a.flowpin = startDaemon(t, p.A, p.cfg, "--metrics", "10.255.0.1:9108", "--public-status")
	if r := readHAStatus(t, a.flowpin).role(); r != "backup" {
		t.Fatalf("A back: role %q", r)
	}
	const m = 10
	back := startLongLived(t, p.LAN, target, srv, m, dialOpts{Interval: 200 * time.Millisecond})
	// What keepalived runs on entering backup: among others, conntrackd
	// -n, which asks the master for a resync.
	run(t, p.A, filepath.Join(a.dir, "primary-backup.sh"), "backup")
	waitFor(t, 5*time.Second, "A's conntrackd has B's flows", func() bool { return p.synced(t, "a", back, srv.Port()) })
	started := time.Now()
	a.keepalived = p.startKeepalived(t, "a", p.A)
	took = waitFor(t, 5*time.Second, "A holds the VIPs again", func() bool { return holdsAll(t, p.A) })
	time.Sleep(3 * time.Second)
	far = farEstablished(t, p.Far, srv.Port())
	kept = 0
	for i, st := range back.stop() {
		if st.Err == nil && st.LastEcho.After(started.Add(took+2*time.Second)) && far[st.Remote] {
			kept++
			continue
		}
		t.Logf("flow %d started on B (%v as %v) did not survive: %v, %d echoes, last %v after A's keepalived started, at far: %v",
			i, st.Local, st.Remote, st.Err, st.Echoes, st.LastEcho.Sub(started).Round(time.Millisecond), far[st.Remote])
	}
	t.Logf("and back: A took the VIPs back %v after its keepalived started; flows started on B kept: %d of %d", took.Round(time.Millisecond), kept, m)
	if kept < m {
		t.Errorf("%d of the %d flows started on B kept after A took the VIPs back", kept, m)
	}
}

// maxSynSent polls ns's conntrack table until stop and returns the most
// TCP flows to the far end at once that were in SYN_SENT with ct mark
// mark: connection attempts pinned to that link and unanswered.
func maxSynSent(ns string, mark uint32, stop <-chan struct{}) int {
	most := 0
	for {
		out, _ := tryRun(ns, "conntrack", "-L", "-p", "tcp", "--state", "SYN_SENT", "-d", haFar, "-m", strconv.FormatUint(uint64(mark), 10))
		most = max(most, strings.Count(out, "SYN_SENT"))
		select {
		case <-stop:
			return most
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cacheLine is the line of conntrackd's cache dump for the flow from
// local to the far end's port.
func cacheLine(dump string, local netip.AddrPort, port int) string {
	want := fmt.Sprintf("src=%s dst=%s sport=%d dport=%d ", local.Addr(), haFar, local.Port(), port)
	for _, line := range strings.Split(dump, "\n") {
		if strings.Contains(line, want) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

func maxRTT(sts []connStatus) time.Duration {
	var m time.Duration
	for _, s := range sts {
		m = max(m, s.MaxRTT)
	}
	return m
}

var guardCounter = regexp.MustCompile(`counter packets (\d+) bytes \d+ drop comment "ha guard`)

// guardDrops reads the guard rule's counter in ns.
func guardDrops(t *testing.T, ns string) int {
	t.Helper()
	g := guardCounter.FindStringSubmatch(run(t, ns, "nft", "list", "chain", "inet", "flowpin", "prerouting"))
	if g == nil {
		t.Errorf("%s: no guard rule in prerouting", ns)
		return 0
	}
	v, _ := strconv.Atoi(g[1])
	return v
}

// TestNATSourceFixed: nat_source without ha, a fixed public address that
// is not the interface's first: the link's new flows leave with it, the
// other link still masquerades, the router's own connections keep their
// source, explain says so, and status does not warn while the address is
// on the interface.
func TestNATSourceFixed(t *testing.T) {
	d := newDualWAN(t)
	run(t, d.ISP1, "nft", "delete", "table", "netdev", "bcp38")
	nft(t, d.ISP1, bcp38Ruleset("192.0.2.0/24"))
	addAddr(t, d.Router, "wan1", "192.0.2.9/24")
	cfg := writeFile(t, "f.yaml", strings.Replace(d.config(1, 1), "    nat: true\n", "    nat: true\n    nat_source: 192.0.2.9\n", 1))
	if out, err := flowpin(t, d.Router, "apply", "-c", cfg); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	// The table read back is the one planned: a second apply writes nothing.
	if out, err := flowpin(t, d.Router, "apply", "-c", cfg); err != nil || !strings.Contains(out, ", 0 kernel writes") {
		t.Errorf("second apply: %v\n%s", err, out)
	}
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := hostPort(d.Service, srv.Port())
	res := connectN(t, d.LAN, target, srv, 30, dialOpts{})
	t.Logf("30 flows from the LAN by NAT source: %v", res.PerSource)
	if res.Failed > 0 || res.PerSource[netip.MustParseAddr("192.0.2.9")] == 0 || res.PerSource[netip.MustParseAddr(d.WAN2)] == 0 || res.PerSource[netip.MustParseAddr(d.WAN1)] != 0 {
		t.Errorf("%d failed (%v); by NAT source %v: want isp1's flows from 192.0.2.9, isp2's from %s", res.Failed, res.Errors, res.PerSource, d.WAN2)
	}
	srv.Reset()
	own := connectN(t, d.Router, target, srv, 10, dialOpts{Src: d.WAN1})
	if own.Failed > 0 || own.PerSource[netip.MustParseAddr(d.WAN1)] != 10 {
		t.Errorf("the router's own connections from %s: %d failed, by source %v; want their own source kept", d.WAN1, own.Failed, own.PerSource)
	}
	found := false
	for sport := 40000; sport < 40064 && !found; sport++ {
		out, err := flowpin(t, d.Router, "explain", "-c", cfg, "--iif", "lan", "--from", d.LANHost, "--proto", "tcp", "--sport", strconv.Itoa(sport), "--dport", "443", d.Service)
		if err != nil {
			t.Fatalf("explain: %v\n%s", err, out)
		}
		found = strings.Contains(out, "snat on wan1 to its nat_source: source becomes 192.0.2.9")
	}
	if !found {
		t.Error("explain never names the SNAT to nat_source for a flow leaving by wan1")
	}
	out, err := flowpin(t, d.Router, "status", "-c", cfg)
	if err != nil || strings.Contains(out, "nat_source") {
		t.Errorf("status: %v\n%s", err, out)
	}
	run(t, d.Router, "ip", "addr", "del", "192.0.2.9/24", "dev", "wan1")
	if out, _ := flowpin(t, d.Router, "status", "-c", cfg); !strings.Contains(out, "warning: nat_source 192.0.2.9 is on no interface of this host") {
		t.Errorf("status does not warn of the missing nat_source:\n%s", out)
	}
}

// TestHABothAtOnce: the pair's hostile starts. Before keepalived runs,
// neither node holds a VIP: both say backup, and verify says the pair is
// not consistent. Then both keepalived start in the same instant: one
// node ends up holding every VIP and the other none (with nopreempt,
// whichever won the election keeps them), and verify on each side,
// comparing with the peer, agrees.
func TestHABothAtOnce(t *testing.T) {
	p := newHAPair(t)
	var dms [2]*daemon
	for i, n := range []string{"a", "b"} {
		ns := []string{p.A, p.B}[i]
		p.startConntrackd(t, n, ns)
		dms[i] = startDaemon(t, ns, p.cfg, "--metrics", fmt.Sprintf("10.255.0.%d:9108", i+1), "--public-status")
	}
	for _, dm := range dms {
		if r := readHAStatus(t, dm).role(); r != "backup" {
			t.Errorf("%s without keepalived: role %q, want backup", dm.ns, r)
		}
	}
	if c := verifyChecks(t, p.A, dms[0].cfg, "--peer", "http://10.255.0.2:9108")["ha peer role"]; c.OK || !strings.Contains(c.Detail, "this node is backup and the peer backup") {
		t.Errorf("verify with no node holding the VIPs: %+v", c)
	}
	p.startKeepalived(t, "a", p.A)
	p.startKeepalived(t, "b", p.B)
	none := func(ns string) bool { return !slices.Contains(slices.Collect(maps.Values(holds(t, ns))), true) }
	primary := -1
	took := waitFor(t, 10*time.Second, "one node holds every VIP, the other none", func() bool {
		switch {
		case holdsAll(t, p.A) && none(p.B):
			primary = 0
		case holdsAll(t, p.B) && none(p.A):
			primary = 1
		}
		return primary >= 0
	})
	t.Logf("both started at once: %s holds the VIPs after %v", dms[primary].ns, took.Round(time.Millisecond))
	waitFor(t, 3*time.Second, "the roles settle", func() bool {
		return readHAStatus(t, dms[primary]).role() == "primary" && readHAStatus(t, dms[1-primary]).role() == "backup"
	})
	for i, peer := range []string{"http://10.255.0.2:9108", "http://10.255.0.1:9108"} {
		v := verifyChecks(t, dms[i].ns, dms[i].cfg, "--peer", peer)
		for _, name := range []string{"ha peer layout", "ha peer role"} {
			if !v[name].OK {
				t.Errorf("verify on %s: %s: %+v", dms[i].ns, name, v[name])
			}
		}
	}
}
