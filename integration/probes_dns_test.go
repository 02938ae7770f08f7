package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// probesDNSConfig: isp1 is checked by an exec probe (socat connects to the
// far service out of the link: bound to its interface, with its mark),
// isp2 by an ARP probe of its gateway; each link has a DNS server of its
// own behind the far end.
func probesDNSConfig(d *dualWAN, port int) string {
	return fmt.Sprintf(`links:
  - name: isp1
    interface: wan1
    gateway: %s
    nat: true
    dns: [203.0.113.53]
    check:
      method: exec
      command: 'exec socat -u OPEN:/dev/null TCP4:%s:%d,connect-timeout=1,so-bindtodevice=$FLOWPIN_INTERFACE,setsockopt-int=1:36:$((FLOWPIN_MARK))'
      interval: 500ms
      timeout: 500ms
      fall: 2
      rise: 2
  - name: isp2
    interface: wan2
    gateway: %s
    nat: true
    dns: [203.0.113.54]
    check: {method: arp, interval: 300ms, timeout: 300ms, fall: 3, rise: 2}
`, d.GW1, d.Service, port, d.GW2)
}

// dnsCounters counts, in each ISP's forward path, the queries to each of
// the two servers: where the router's DNS traffic really left.
const dnsCounters = `table inet dnscount {
	counter q53 {}
	counter q54 {}
	chain count {
		type filter hook forward priority 0;
		ip daddr 203.0.113.53 udp dport 53 counter name q53
		ip daddr 203.0.113.54 udp dport 53 counter name q54
	}
}
`

// resolvServers are the nameservers the daemon's resolv file lists.
func resolvServers(path string) string {
	b, _ := os.ReadFile(path)
	var out []string
	for l := range strings.Lines(string(b)) {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "nameserver" {
			out = append(out, f[1])
		}
	}
	return strings.Join(out, " ")
}

func waitResolv(t testing.TB, path, want string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for resolvServers(path) != want {
		if time.Since(start) > limit {
			t.Fatalf("resolv file lists %q after %v, want %q", resolvServers(path), limit, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// startNameServer answers who.test. with answer on addr:53 in ns.
func startNameServer(t testing.TB, ns, addr, answer string) {
	t.Helper()
	var pc net.PacketConn
	inNS(t, ns, func() (err error) { pc, err = net.ListenPacket("udp4", addr+":53"); return err })
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "who.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0}, A: net.ParseIP(answer)})
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown(); <-done })
}

// askLAN asks the router's dnsmasq from the LAN until the answer is want,
// for 5 s at most, and returns the last answer.
func askLAN(t testing.TB, d *dualWAN, want string) string {
	t.Helper()
	got := ""
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		inNS(t, d.LAN, func() error {
			c := &dns.Client{Timeout: 500 * time.Millisecond}
			m := new(dns.Msg)
			m.SetQuestion("who.test.", dns.TypeA)
			in, _, err := c.Exchange(m, d.RouterLAN+":53")
			got = fmt.Sprint(err)
			if err == nil && len(in.Answer) == 1 {
				got = in.Answer[0].(*dns.A).A.String()
			}
			return nil
		})
		if got == want {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
	return got
}

// watchdogPings counts the WATCHDOG=1 datagrams that arrive within d.
func watchdogPings(conn *net.UnixConn, d time.Duration) int {
	n := 0
	buf := make([]byte, 512)
	deadline := time.Now().Add(d)
	for {
		_ = conn.SetReadDeadline(deadline)
		m, err := conn.Read(buf)
		if err != nil {
			return n
		}
		if string(buf[:m]) == "WATCHDOG=1" {
			n++
		}
	}
}

// waitStopped waits until every thread of process pid is stopped (a
// signal is delivered when a thread next runs: on a loaded machine, some
// time after kill returned).
func waitStopped(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		stopped := 0
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			// "tid (comm) state ...": comm may hold anything but the
			// last ')'.
			if i := strings.LastIndexByte(string(b), ')'); err == nil && i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't') {
				stopped++
			}
		}
		if len(tasks) > 0 && stopped == len(tasks) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d: %d of %d threads stopped 5s after SIGSTOP", pid, stopped, len(tasks))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProbesDNSWatchdog: in one dual-WAN topology, an exec probe and an
// ARP probe each take their link down on a silent failure and bring it
// back; the resolv file follows both failures and returns; the router's
// own DNS queries leave by the link of the server they go to; and the
// daemon's systemd watchdog pings stop while the process is stopped
// (SIGSTOP) and resume on SIGCONT.
func TestProbesDNSWatchdog(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	for _, a := range []string{"203.0.113.53/32", "203.0.113.54/32"} {
		addAddr(t, d.Far, "lo", a)
	}
	nft(t, d.ISP1, dnsCounters)
	nft(t, d.ISP2, dnsCounters)
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatal("dnsmasq missing: make deps installs dnsmasq-base")
	}

	// systemd's end of the notify socket, and a watchdog of 1s.
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "1000000")
	resolvDir := t.TempDir()
	resolvFile := filepath.Join(resolvDir, "resolv.conf")
	dm := startDaemon(t, d.Router, probesDNSConfig(d, srv.Port()), "--resolv-dir", resolvDir)
	waitResolv(t, resolvFile, "203.0.113.53 203.0.113.54", 3*time.Second)

	// The router's own queries, then a LAN host's (forwarded): ten
	// sockets to each server, each its own source port, so the multipath
	// hash alone would spread them.
	for _, from := range []string{d.Router, d.LAN} {
		for _, isp := range []string{d.ISP1, d.ISP2} {
			run(t, isp, "nft", "reset", "counters", "table", "inet", "dnscount")
		}
		inNS(t, from, func() error {
			for i := range 20 {
				c, err := net.Dial("udp", fmt.Sprintf("203.0.113.5%d:53", 3+i%2))
				if err != nil {
					return err
				}
				_, err = c.Write([]byte("query"))
				c.Close()
				if err != nil {
					return err
				}
			}
			return nil
		})
		// Until all 20 are counted (a loaded machine forwards late), then
		// where they went.
		var got [4]int
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			got = [4]int{
				nftCounter(t, d.ISP1, "inet", "dnscount", "q53"), nftCounter(t, d.ISP1, "inet", "dnscount", "q54"),
				nftCounter(t, d.ISP2, "inet", "dnscount", "q53"), nftCounter(t, d.ISP2, "inet", "dnscount", "q54"),
			}
			if got[0]+got[1]+got[2]+got[3] >= 20 || time.Now().After(deadline) {
				break
			}
		}
		t.Logf("queries from %s: isp1 carried %d to isp1's server and %d to isp2's; isp2 carried %d to isp1's and %d to its own", from, got[0], got[1], got[2], got[3])
		if got != [4]int{10, 0, 0, 10} {
			t.Errorf("queries from %s did not follow their servers' links: %v, want [10 0 0 10]", from, got)
		}
	}

	// A LAN host asks the router's dnsmasq, which reads the resolv file:
	// isp1's server answers while isp1 is up.
	startNameServer(t, d.Far, "203.0.113.53", "10.0.0.53")
	startNameServer(t, d.Far, "203.0.113.54", "10.0.0.54")
	startDnsmasq(t, d.Router, t.TempDir(), "router", "listen-address="+d.RouterLAN+"\nbind-interfaces\nno-hosts\nresolv-file="+resolvFile+"\nstrict-order\ncache-size=0\n")
	if got := askLAN(t, d, "10.0.0.53"); got != "10.0.0.53" {
		t.Errorf("dnsmasq answered %s, want isp1's server's 10.0.0.53", got)
	}

	// exec: isp1's upstream goes silent; the command's connection fails.
	start := time.Now()
	undo := blackhole(t, d.ISP1)
	l := dm.waitState(t, "isp1", "down", 10*time.Second)
	t.Logf("exec probe: isp1 down %v after the upstream went silent (%s)", time.Since(start).Round(time.Millisecond), l.Reason)
	if !strings.Contains(l.Reason, "command") {
		t.Errorf("isp1's reason %q is not the probe command's", l.Reason)
	}
	took := waitResolv(t, resolvFile, "203.0.113.54", 3*time.Second)
	t.Logf("resolv file without isp1's server %v after isp1 was seen down", took.Round(time.Millisecond))
	start = time.Now()
	if got := askLAN(t, d, "10.0.0.54"); got != "10.0.0.54" {
		t.Errorf("with isp1 down, dnsmasq answered %s, want isp2's server's 10.0.0.54", got)
	}
	t.Logf("dnsmasq answered from isp2's server %v after the file changed", time.Since(start).Round(time.Millisecond))
	undo()
	// A bound, not a figure: the exec probe's 500 ms rounds spawn a shell
	// and socat, which a loaded 2-core machine has taken 5.7 s to see
	// succeed twice.
	start = time.Now()
	dm.waitState(t, "isp1", "up", 15*time.Second)
	t.Logf("exec probe: isp1 up %v after its upstream came back", time.Since(start).Round(time.Millisecond))
	waitResolv(t, resolvFile, "203.0.113.53 203.0.113.54", 3*time.Second)
	if got := askLAN(t, d, "10.0.0.53"); got != "10.0.0.53" {
		t.Errorf("with isp1 back, dnsmasq answered %s, want 10.0.0.53", got)
	}

	// arp: isp2's modem stops answering ARP; IP still flows.
	nft(t, d.ISP2, `table netdev noarp {
	chain in {
		type filter hook ingress device "cust" priority -500;
		ether type arp drop
	}
}
`)
	start = time.Now()
	l = dm.waitState(t, "isp2", "down", 10*time.Second)
	t.Logf("arp probe: isp2 down %v after its gateway stopped answering ARP (%s)", time.Since(start).Round(time.Millisecond), l.Reason)
	if !strings.Contains(l.Reason, "probes lost to "+d.GW2+" (no reply)") {
		t.Errorf("isp2's reason %q is not the ARP probe's", l.Reason)
	}
	waitResolv(t, resolvFile, "203.0.113.53", 3*time.Second)
	run(t, d.ISP2, "nft", "delete", "table", "netdev", "noarp")
	dm.waitState(t, "isp2", "up", 15*time.Second)
	waitResolv(t, resolvFile, "203.0.113.53 203.0.113.54", 3*time.Second)

	// The watchdog: pings while the daemon runs, none while it is
	// stopped (systemd would restart it after WatchdogSec), pings again
	// once it runs.
	if n := watchdogPings(conn, 1500*time.Millisecond); n < 1 {
		t.Fatalf("%d watchdog pings in 1.5s of a running daemon", n)
	}
	if err := dm.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Once every thread is stopped, all it sent is queued on the socket.
	waitStopped(t, dm.cmd.Process.Pid)
	watchdogPings(conn, 10*time.Millisecond) // sent before it stopped
	stopped := watchdogPings(conn, 2*time.Second)
	if err := dm.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	again := watchdogPings(conn, 1500*time.Millisecond)
	t.Logf("watchdog (1s): %d pings in 2s stopped, %d in 1.5s after SIGCONT", stopped, again)
	if stopped != 0 || again < 1 {
		t.Errorf("pings: %d while stopped, %d after", stopped, again)
	}

	// down removes the servers' routes with the rest.
	if _, err := dm.stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := flowpin(t, d.Router, "down", "-c", dm.cfg); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if out := run(t, d.Router, "ip", "route", "show", "table", "all"); strings.Contains(out, "203.0.113.5") {
		t.Errorf("a server's route outlived down:\n%s", out)
	}
}

// TestARPProbeIPv6: the arp method on a dual-stack link asks for the
// IPv6 gateway with NDP: isp2's router stops answering neighbour
// solicitations, and only isp2's IPv6 side goes down (its IPv4 side,
// asked by ARP, stays up); it comes back when they are answered again.
// isp1's IPv6 gateway is link-local (fe80::1, from the RA), asked the
// same way.
func TestARPProbeIPv6(t *testing.T) {
	d := newDualWAN6(t)
	check := "{method: arp, interval: 300ms, timeout: 300ms, fall: 3, rise: 2}"
	cfg := strings.ReplaceAll(d.config6(1, 1), "    nat: true\n", "    nat: true\n    check: "+check+"\n")
	dm := startDaemon(t, d.Router, cfg)
	dm.waitFamilies(t, "isp1", [2]string{"up", "up"})
	dm.waitFamilies(t, "isp2", [2]string{"up", "up"})
	nft(t, d.ISP2, `table netdev nond {
	chain in {
		type filter hook ingress device "cust" priority -500;
		icmpv6 type nd-neighbor-solicit drop
	}
}
`)
	start := time.Now()
	dm.waitFamilies(t, "isp2", [2]string{"up", "down"})
	t.Logf("ndp probe: isp2's IPv6 down %v after its router stopped answering solicitations", time.Since(start).Round(time.Millisecond))
	if st := dm.familyStates(t); st["isp1"] != [2]string{"up", "up"} {
		t.Errorf("isp1: %v", st["isp1"])
	}
	run(t, d.ISP2, "nft", "delete", "table", "netdev", "nond")
	dm.waitFamilies(t, "isp2", [2]string{"up", "up"})
}
