package integration

import (
	"encoding/json"
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

// setsLab is the dual-WAN NAT box with a DNS service in the test network:
//
//	lan --- router (dnsmasq on 10.77.0.1:53) ==wan1/wan2== isps --- far
//	                                                            (upstream dnsmasq on 203.0.113.53,
//	                                                             the named hosts on 203.0.113.2x..5x)
//
// The upstream answers video.example, www.video.example (a subdomain of
// the domain set's name), other.example (in no set) and bank.example.
type setsLab struct {
	*dualWAN
	dir     string // config, set file, dnsmasq files
	cfg     string
	office  string // the file set's file
	servers map[string]*echoServer
}

const (
	setsDNS     = "203.0.113.53"
	videoAddr   = "203.0.113.20"
	videoSub    = "203.0.113.21"
	otherAddr   = "203.0.113.30"
	officeAddr  = "203.0.113.40"
	officeAddr2 = "203.0.113.41"
	bankAddr    = "203.0.113.50"
)

func newSetsLab(t *testing.T) *setsLab {
	t.Helper()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatalf("dnsmasq is not installed (make deps: dnsmasq-base): %v", err)
	}
	l := &setsLab{dualWAN: newDualWAN(t), dir: t.TempDir(), servers: map[string]*echoServer{}}
	for _, a := range []string{setsDNS, videoAddr, videoSub, otherAddr, officeAddr, officeAddr2, bankAddr} {
		if a != setsDNS {
			addAddr(t, l.Far, "lo", a+"/32")
			l.servers[a] = startEchoServer(t, l.Far, a+":0")
		} else {
			addAddr(t, l.Far, "lo", a+"/32")
		}
	}
	startDnsmasq(t, l.Far, l.dir, "upstream", fmt.Sprintf(`listen-address=%s
bind-interfaces
no-resolv
no-hosts
local-ttl=600
host-record=video.example,%s,2001:db8:ff::20
host-record=www.video.example,%s
host-record=other.example,%s
host-record=bank.example,%s
`, setsDNS, videoAddr, videoSub, otherAddr, bankAddr))
	l.office = filepath.Join(l.dir, "office.txt")
	l.writeOffice(t, "# the office's networks\n"+officeAddr+"\n192.0.2.128/25\n2001:db8:40::/48\n")
	return l
}

func (l *setsLab) writeOffice(t *testing.T, content string) {
	t.Helper()
	// Written aside and renamed into place, as editors and downloaders do.
	tmp := l.office + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, l.office); err != nil {
		t.Fatal(err)
	}
}

// config: video by isp2, the office file by isp1, the rest balanced;
// extra is appended to the sets.
func (l *setsLab) config(t *testing.T, extraSets, extraRules string) string {
	t.Helper()
	y := l.dualWAN.config(1, 1) + fmt.Sprintf(`sets:
  - name: video
    domains: [Video.Example.]
  - name: office
    files: [%s]
%srules:
%s  - {name: video-by-isp2, dst_set: video, policy: isp2}
  - {name: office-by-isp1, dst_set: office, proto: tcp, policy: isp1}
`, l.office, extraSets, extraRules)
	l.cfg = filepath.Join(l.dir, "flowpin.yaml")
	if err := os.WriteFile(l.cfg, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return y
}

// startDnsmasq runs dnsmasq in ns, in the foreground, with conf; it is
// stopped in t.Cleanup.
func startDnsmasq(t testing.TB, ns, dir, name, conf string) *exec.Cmd {
	t.Helper()
	if err := mustOwn(ns); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file="+path,
		"--pid-file="+filepath.Join(dir, name+".pid"), "--log-facility=-", "--user=root", "--port=53")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("dnsmasq %s:\n%s", name, out.String())
		}
	})
	return cmd
}

// lookup asks server (from ns) for name's A record and returns the
// addresses.
func lookup(t *testing.T, ns, server, name string) []string {
	t.Helper()
	return lookupType(t, ns, server, name, dns.TypeA)
}

func lookupType(t *testing.T, ns, server, name string, qtype uint16) []string {
	t.Helper()
	var got []string
	err := nsDo(ns, func() error {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), qtype)
		var last error
		for range 50 { // dnsmasq may still be starting
			r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(m, net.JoinHostPort(server, "53"))
			if err != nil {
				last = err
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for _, rr := range r.Answer {
				switch a := rr.(type) {
				case *dns.A:
					got = append(got, a.A.String())
				case *dns.AAAA:
					got = append(got, a.AAAA.String())
				}
			}
			return nil
		}
		return last
	})
	if err != nil {
		t.Fatalf("lookup %s at %s: %v", name, server, err)
	}
	return got
}

// flows opens n connections from the LAN to addr and counts them by link.
func (l *setsLab) flows(t *testing.T, addr string, n int) (isp1, isp2 int) {
	t.Helper()
	srv := l.servers[addr]
	srv.Reset()
	r := connectN(t, l.LAN, fmt.Sprintf("%s:%d", addr, srv.Port()), srv, n, dialOpts{})
	if r.Failed != 0 {
		t.Fatalf("%d of %d flows to %s failed: %v", r.Failed, n, addr, r.Errors[0])
	}
	return onLinks(l.dualWAN, r.PerSource)
}

func (l *setsLab) wantAll(t *testing.T, step, addr, link string) {
	t.Helper()
	a, b := l.flows(t, addr, 30)
	if link == "isp1" && a != 30 || link == "isp2" && b != 30 {
		t.Errorf("%s: flows to %s: %d on isp1, %d on isp2; want 30 of 30 on %s", step, addr, a, b, link)
	}
}

func (l *setsLab) wantBalanced(t *testing.T, step, addr string) {
	t.Helper()
	a, b := l.flows(t, addr, 30)
	// Weights 1:1: all 30 on one link by chance is 2 in 2^30.
	if a == 0 || b == 0 {
		t.Errorf("%s: flows to %s: %d on isp1, %d on isp2; want them balanced", step, addr, a, b)
	}
}

func (l *setsLab) apply(t *testing.T, step string) {
	t.Helper()
	if out, err := flowpin(t, l.Router, "apply", "-c", l.cfg); err != nil {
		t.Fatalf("%s: apply: %v\n%s", step, err, out)
	}
}

// The end-to-end test: a real dnsmasq on the router fills the
// domain set from a real upstream, flows follow the sets, resolved
// elements survive apply (same and changed config), the daemon's start,
// drift repair and reload, a changed file is followed, and down removes
// the sets.
func TestSetsEndToEnd(t *testing.T) {
	start := time.Now()
	l := newSetsLab(t)
	// bank is resolved by the daemon itself, through the router's
	// resolv.conf (ip netns exec mounts /etc/netns/NS/resolv.conf over
	// it); no client asks dnsmasq for it.
	etc := filepath.Join("/etc/netns", l.Router)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver "+setsDNS+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bank := "  - {name: bank, domains: [bank.example], resolve: true}\n"
	bankRule := "  - {name: bank-by-isp2, dst_set: bank, proto: tcp, policy: isp2}\n"
	l.config(t, bank, bankRule)
	l.apply(t, "first apply")

	out, err := flowpin(t, l.Router, "dnsmasq", "-c", l.cfg)
	if err != nil {
		t.Fatalf("flowpin dnsmasq: %v\n%s", err, out)
	}
	if !strings.Contains(out, "nftset=/video.example/4#inet#flowpin#set4_video,6#inet#flowpin#set6_video") {
		t.Fatalf("flowpin dnsmasq:\n%s", out)
	}
	startDnsmasq(t, l.Router, l.dir, "router", fmt.Sprintf("listen-address=%s\nbind-interfaces\nno-resolv\nno-hosts\nserver=%s\n%s", l.RouterLAN, setsDNS, out))

	l.wantBalanced(t, "before video.example is resolved", videoAddr)
	if got := lookup(t, l.LAN, l.RouterLAN, "video.example"); len(got) != 1 || got[0] != videoAddr {
		t.Fatalf("video.example resolved to %v", got)
	}
	lookup(t, l.LAN, l.RouterLAN, "WWW.video.example")
	// An AAAA answer goes to the IPv6 set (one set per family).
	if got := lookupType(t, l.LAN, l.RouterLAN, "video.example", dns.TypeAAAA); len(got) != 1 || got[0] != "2001:db8:ff::20" {
		t.Fatalf("video.example AAAA: %v", got)
	}
	if _, err := tryRun(l.Router, "nft", "get", "element", "inet", "flowpin", "set6_video", "{ 2001:db8:ff::20 }"); err != nil {
		t.Errorf("the AAAA answer is not in set6_video: %v", err)
	}
	lookup(t, l.LAN, l.RouterLAN, "other.example")
	// dnsmasq adds with no timeout of its own: the set's applies, so an
	// address that moved away stops matching.
	if out := run(t, l.Router, "nft", "list", "set", "inet", "flowpin", "set4_video"); !strings.Contains(out, videoAddr+" expires") || !strings.Contains(out, videoSub+" expires") {
		t.Errorf("set4_video after the lookups:\n%s", out)
	}
	l.wantAll(t, "resolved", videoAddr, "isp2")
	l.wantAll(t, "resolved subdomain", videoSub, "isp2")
	l.wantBalanced(t, "a resolved name in no set", otherAddr)
	l.wantAll(t, "file set", officeAddr, "isp1")

	// From here on no DNS query: the elements dnsmasq added must stay.
	l.apply(t, "the same config")
	l.wantAll(t, "after apply of the same config", videoAddr, "isp2")
	l.writeOffice(t, officeAddr2+"\n")
	l.config(t, bank, bankRule+"  - {name: dns-by-isp1, proto: udp, dst_ports: [53], policy: isp1}\n")
	l.apply(t, "a changed config and file")
	l.wantAll(t, "after apply of a changed config", videoAddr, "isp2")
	l.wantAll(t, "after apply of a changed config", videoSub, "isp2")
	l.wantAll(t, "the changed file after apply", officeAddr2, "isp1")
	l.wantBalanced(t, "an address gone from the file", officeAddr)
	// A file set's element deleted by hand: its flows would escape the
	// rule. verify names the set, plan and apply put it back.
	nft(t, l.Router, "delete element inet flowpin set4_office { "+officeAddr2+" }\n")
	if out, err := flowpin(t, l.Router, "verify", "-c", l.cfg); err == nil || !strings.Contains(out, "set4_office: 1 of its 1 ranges missing, 0 not written by flowpin") {
		t.Errorf("verify after an element of a file set was deleted by hand: %v\n%s", err, out)
	}
	if out, err := flowpin(t, l.Router, "plan", "-c", l.cfg); err != nil || !strings.Contains(out, "flush set inet flowpin set4_office") {
		t.Errorf("plan after an element of a file set was deleted by hand: %v\n%s", err, out)
	}
	l.apply(t, "a file set's element deleted by hand")
	l.wantAll(t, "apply puts back a file set's element deleted by hand", officeAddr2, "isp1")

	l.wantBalanced(t, "resolve: true before the daemon runs", bankAddr)
	dm := startDaemon(t, l.Router, mustRead(t, l.cfg))
	dm.waitState(t, "isp2", "up", 5*time.Second)
	l.wantAll(t, "after the daemon started", videoAddr, "isp2")
	waitFor(t, 5*time.Second, "the daemon resolves bank.example", func() bool {
		_, err := tryRun(l.Router, "nft", "get", "element", "inet", "flowpin", "set4_bank", "{ "+bankAddr+" }")
		return err == nil
	})
	l.wantAll(t, "resolve: true, no dnsmasq involved", bankAddr, "isp2")
	l.checkSurfaces(t)
	// Drift: a rule deleted by hand is put back; the elements stay.
	nft(t, l.Router, "flush chain inet flowpin classify\n")
	waitFor(t, 5*time.Second, "drift repair", func() bool {
		return strings.Contains(run(t, l.Router, "nft", "list", "chain", "inet", "flowpin", "classify"), "@set4_video")
	})
	l.wantAll(t, "after drift repair", videoAddr, "isp2")
	// A file set flushed or an element deleted by hand is drift too; the
	// domain sets' elements stay as dnsmasq left them.
	for _, script := range []string{"flush set inet flowpin set4_office", "delete element inet flowpin set4_office { " + officeAddr2 + " }"} {
		nft(t, l.Router, script+"\n")
		waitFor(t, 5*time.Second, "the daemon repairs "+script, func() bool {
			_, err := tryRun(l.Router, "nft", "get", "element", "inet", "flowpin", "set4_office", "{ "+officeAddr2+" }")
			return err == nil
		})
	}
	if !strings.Contains(dm.logs(), "elements of set set4_office changed") {
		t.Errorf("the daemon's log does not say why it repaired:\n%s", dm.logs())
	}
	l.wantAll(t, "after the file set's repair", officeAddr2, "isp1")

	// The daemon's config is its own copy: change its file and reload.
	if err := os.WriteFile(l.office, []byte(officeAddr+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := flowpin(t, l.Router, "reload"); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	l.wantAll(t, "the changed file after reload", officeAddr, "isp1")
	l.wantBalanced(t, "an address gone from the file after reload", officeAddr2)
	l.wantAll(t, "after reload", videoAddr, "isp2")

	// The daemon watches the file: replaced by rename, no reload.
	l.writeOffice(t, officeAddr2+"\n")
	waitFor(t, 5*time.Second, "the watcher applies the changed file", func() bool {
		_, err := tryRun(l.Router, "nft", "get", "element", "inet", "flowpin", "set4_office", "{ "+officeAddr2+" }")
		return err == nil
	})
	l.wantAll(t, "the changed file, watched", officeAddr2, "isp1")
	// A bad line: one error naming file, line and value; nothing applied.
	l.writeOffice(t, officeAddr+"\n10.0.0.300\n")
	waitFor(t, 5*time.Second, "the bad line's error", func() bool {
		return strings.Contains(dm.logs(), l.office+`:2: sets[1].files[0]: \"10.0.0.300\" is not an address`)
	})
	l.wantAll(t, "a bad line changes nothing", officeAddr2, "isp1")
	l.wantBalanced(t, "a bad line changes nothing", officeAddr)
	// A FIFO in the file's place (whoever may write the directory can
	// make one): open(2) blocked for ever, and the daemon's reload with
	// it. Refused at once; the daemon goes on reloading and answering.
	if err := os.Remove(l.office); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(l.office, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the FIFO's error", func() bool {
		return strings.Contains(dm.logs(), l.office+" is not a regular file but a FIFO")
	})
	fifoStart := time.Now()
	if out, err := flowpin(t, l.Router, "reload"); err == nil || !strings.Contains(out, "is not a regular file") {
		t.Errorf("reload with a FIFO for a set file: %v\n%s", err, out)
	}
	t.Logf("reload refused the FIFO in %v", time.Since(fifoStart).Round(time.Millisecond))
	l.wantAll(t, "a FIFO changes nothing", officeAddr2, "isp1")
	l.writeOffice(t, officeAddr+"\n")
	waitFor(t, 5*time.Second, "the watcher applies the file that replaced the FIFO", func() bool {
		_, err := tryRun(l.Router, "nft", "get", "element", "inet", "flowpin", "set4_office", "{ "+officeAddr+" }")
		return err == nil
	})
	l.writeOffice(t, officeAddr2+"\n")

	if _, err := dm.stop(); err != nil {
		t.Fatalf("daemon stop: %v", err)
	}
	dm2 := startDaemon(t, l.Router, mustRead(t, l.cfg))
	dm2.waitState(t, "isp2", "up", 5*time.Second)
	l.wantAll(t, "after a daemon restart", videoAddr, "isp2")
	if _, err := dm2.stop(); err != nil {
		t.Fatalf("daemon stop: %v", err)
	}
	// No daemon, a set file with a bad line: status still shows what the
	// kernel holds (it reads no set file).
	l.writeOffice(t, "10.0.0.300\n")
	if out, err := flowpin(t, l.Router, "status", "-c", l.cfg); err != nil || !strings.Contains(out, "office") {
		t.Errorf("status with a bad set file and no daemon: %v\n%s", err, out)
	}
	l.writeOffice(t, officeAddr2+"\n")

	if out, err := flowpin(t, l.Router, "down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if out, _ := tryRun(l.Router, "nft", "list", "sets"); strings.Contains(out, "set4_") {
		t.Errorf("sets left after down:\n%s", out)
	}
	t.Logf("TestSetsEndToEnd took %v", time.Since(start).Round(100*time.Millisecond))
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkSurfaces: status (JSON) counts each set's elements, explain names
// the set an address is in and the rule it decides, verify finds the sets.
func (l *setsLab) checkSurfaces(t *testing.T) {
	t.Helper()
	out, err := flowpin(t, l.Router, "status", "--json", "-c", l.cfg)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var st struct {
		Sets []struct {
			Name      string   `json:"name"`
			Kind      string   `json:"kind"`
			Rules     []string `json:"rules"`
			Elements4 int      `json:"elements_ipv4"`
			Elements6 int      `json:"elements_ipv6"`
		} `json:"sets"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, s := range st.Sets {
		got[s.Name] = fmt.Sprintf("%s %v %d/%d", s.Kind, s.Rules, s.Elements4, s.Elements6)
	}
	// video: the two names the LAN resolved; office: one address after
	// the change; bank: what the daemon resolved.
	want := map[string]string{"video": "domains [video-by-isp2] 2/1", "office": "file [office-by-isp1] 1/0", "bank": "domains [bank-by-isp2] 1/0"}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("status: set %s: %q, want %q", name, got[name], w)
		}
	}
	out, err = flowpin(t, l.Router, "explain", "-c", l.cfg, "--iif", "lan", "--from", l.LANHost, "--proto", "tcp", "--sport", "40000", "--dport", "80", videoAddr)
	if err != nil || !strings.Contains(out, "destination "+videoAddr+" is in set video (set4_video)") || !strings.Contains(out, "rule video-by-isp2") {
		t.Errorf("explain: %v\n%s", err, out)
	}
	out, _ = flowpin(t, l.Router, "verify", "-c", l.cfg)
	if !strings.Contains(out, "set video") || !strings.Contains(out, "matched by rule video-by-isp2") {
		t.Errorf("verify names no set:\n%s", out)
	}
	t.Logf("status:\n%s", run(t, l.Router, flowpinBin, "status", "-c", l.cfg))
}
