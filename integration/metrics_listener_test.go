package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fetchEnv makes this test binary, run again as another user, send one
// GET instead of running tests: "ADDR HOST PATH".
const fetchEnv = "FLOWPIN_TEST_FETCH"

// trickleEnv makes it a hostile client of the metrics port instead:
// "N ADDR" (see trickle).
const trickleEnv = "FLOWPIN_TEST_TRICKLE"

func init() {
	if arg := os.Getenv(fetchEnv); arg != "" {
		f := strings.Fields(arg)
		if len(f) != 3 {
			fmt.Println("want ADDR HOST PATH")
			os.Exit(2)
		}
		code, body, err := httpGet(f[0], f[1], f[2])
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Printf("status %d\n%s", code, body)
		os.Exit(0)
	}
	if arg := os.Getenv(trickleEnv); arg != "" {
		trickle(arg)
		os.Exit(0)
	}
}

// httpGet sends one HTTP/1.0 GET of path to addr with the Host header host
// and returns the answer's code and body.
func httpGet(addr, host, path string) (int, string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, "", err
	}
	return getOn(conn, host, path)
}

func getOn(conn net.Conn, host, path string) (int, string, error) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// getIn is httpGet from inside ns, as root; the socket is made on nsDo's
// thread, as scrape does.
func getIn(ns, addr, host, path string) (int, string, error) {
	var conn net.Conn
	if err := nsDo(ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	}); err != nil {
		return 0, "", err
	}
	return getOn(conn, host, path)
}

// short is the start of an answer's body, for a message.
func short(body string) string {
	if len(body) > 120 {
		return body[:120] + "..."
	}
	return body
}

// asUser is the command line that runs args in ns as the user with that
// uid (and gid), with no supplementary groups: what the daemon believes
// of its groups comes from the user database, not from the process.
func asUser(uid int, args ...string) []string {
	id := strconv.Itoa(uid)
	return append([]string{"setpriv", "--reuid=" + id, "--regid=" + id, "--clear-groups"}, args...)
}

// getAs is httpGet from inside ns as the user uid, through a copy of this
// test binary that user may run.
func getAs(t *testing.T, ns, testCopy string, uid int, addr, host, path string) int {
	t.Helper()
	out, err := tryRun(ns, asUser(uid, "env", fmt.Sprintf("%s=%s %s %s", fetchEnv, addr, host, path), testCopy)...)
	if err != nil {
		t.Fatalf("GET %s as uid %d: %v\n%s", path, uid, err, out)
	}
	var code int
	if _, err := fmt.Sscanf(out, "status %d", &code); err != nil {
		t.Fatalf("GET %s as uid %d: %q", path, uid, out)
	}
	return code
}

// The --metrics listener on the live daemon: a request naming another
// site in its Host header (DNS rebinding) is refused on every path, one
// naming the listener is served; the status page and /status.json answer
// root and group flowpin on the router as the socket does, others (local
// users outside the group, hosts on the LAN) get 403 until the operator
// opens the status to all, while /metrics answers every client, as
// Prometheus expects. A bad --metrics-host is refused before anything is
// applied.
func TestMetricsListenerHostAndAccess(t *testing.T) {
	d := newDualWAN(t)
	_, testCopy := nobodyDir(t)
	daemonUser, err := user.Lookup("daemon")
	if err != nil {
		t.Fatal(err)
	}
	member, _ := strconv.Atoi(daemonUser.Uid)
	flowpinGroup(t, d.Router, daemonUser.Username)
	const nobody = 65534
	cfg := d.config(1, 1)

	before := state(t, d.Router)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--metrics", ":9108", "--metrics-host", "router.lan,a/b"}, `--metrics-host "a/b": want NAME or NAME:PORT`},
		{[]string{"--metrics", ":9108", "--metrics-host", "router.lan:http"}, `--metrics-host "router.lan:http": want NAME or NAME:PORT`},
		{[]string{"--metrics-host", "router.lan"}, "--metrics-host and --public-status need --metrics"},
		{[]string{"--public-status"}, "--metrics-host and --public-status need --metrics"},
	} {
		out, err := flowpin(t, d.Router, append([]string{"run", "-c", writeFile(t, "flowpin.yaml", cfg)}, c.args...)...)
		checkRejected(t, out, err, c.want)
	}
	if diff := cmp.Diff(before, state(t, d.Router)); diff != "" {
		t.Errorf("flowpin run with a bad flag changed the kernel (-before +after):\n%s", diff)
	}

	dm := startDaemon(t, d.Router, cfg, "--metrics", "0.0.0.0:9108")
	lo, lan := "127.0.0.1:9108", d.RouterLAN+":9108"
	foreign := []string{"evil.example:9108", "evil.example", "127.0.0.1.evil.example:9108", "localhost:9109", "router.lan:9108"}
	hostChecks := func(own []string) {
		t.Helper()
		for _, path := range []string{"/", "/status.json", "/metrics"} {
			for _, host := range foreign {
				code, body, err := getIn(d.Router, lo, host, path)
				if err != nil || code != http.StatusMisdirectedRequest || !strings.Contains(body, "--metrics-host") {
					t.Errorf("GET %s, Host %q: %d %q %v, want 421", path, host, code, short(body), err)
				}
			}
			for _, host := range own {
				if code, body, err := getIn(d.Router, lo, host, path); err != nil || code != http.StatusOK {
					t.Errorf("GET %s, Host %q as root: %d %q %v, want 200", path, host, code, short(body), err)
				}
			}
		}
	}
	hostChecks([]string{lo, "localhost:9108", "[::1]:9108"})
	code, body, err := getIn(d.Router, lo, lo, "/status.json")
	var st statusDoc
	if err != nil || code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || !st.Daemon || len(st.Links) != 2 {
		t.Errorf("status.json as root: %d %v\n%s", code, err, body)
	}

	// Local users: the socket's rule. (uid daemon is listed in group
	// flowpin; nobody is not.)
	for _, c := range []struct {
		uid        int
		path, host string
		want       int
	}{
		{nobody, "/status.json", lo, http.StatusForbidden},
		{nobody, "/", lo, http.StatusForbidden},
		{nobody, "/metrics", lo, http.StatusOK},
		{nobody, "/metrics", "evil.example:9108", http.StatusMisdirectedRequest},
		{member, "/status.json", lo, http.StatusOK},
		{member, "/", lo, http.StatusOK},
		{member, "/status.json", "evil.example:9108", http.StatusMisdirectedRequest},
	} {
		if got := getAs(t, d.Router, testCopy, c.uid, lo, c.host, c.path); got != c.want {
			t.Errorf("GET %s, Host %q as uid %d: %d, want %d", c.path, c.host, c.uid, got, c.want)
		}
	}
	out, err := tryRun(d.Router, asUser(nobody, "env", fmt.Sprintf("%s=%s %s %s", fetchEnv, lo, lo, "/status.json"), testCopy)...)
	if err != nil || !strings.Contains(out, "for root and group flowpin") {
		t.Errorf("403 as nobody does not say who may read the status: %v %q", err, out)
	}

	// A host on the LAN: metrics by the router's address, as a
	// Prometheus scrape by IP; no status; another site's name refused.
	lanChecks := func(statusWant int) {
		t.Helper()
		for _, c := range []struct {
			path, host string
			want       int
		}{
			{"/metrics", lan, http.StatusOK},
			{"/metrics", "evil.example:9108", http.StatusMisdirectedRequest},
			{"/status.json", lan, statusWant},
			{"/", lan, statusWant},
			{"/status.json", "evil.example:9108", http.StatusMisdirectedRequest},
		} {
			if code, body, err := getIn(d.LAN, lan, c.host, c.path); err != nil || code != c.want {
				t.Errorf("GET %s from the LAN, Host %q: %d %q %v, want %d", c.path, c.host, code, short(body), err, c.want)
			}
		}
	}
	lanChecks(http.StatusForbidden)

	// A name the operator gives, and the status opened to all.
	if _, err := dm.stop(); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, d.Router, cfg, "--metrics", "0.0.0.0:9108", "--metrics-host", "router.lan", "--public-status")
	foreign = foreign[:len(foreign)-1]
	hostChecks([]string{lo, "router.lan", "router.lan:9108", "Router.LAN.:9108"})
	lanChecks(http.StatusOK)
	if got := getAs(t, d.Router, testCopy, nobody, lo, lo, "/status.json"); got != http.StatusOK {
		t.Errorf("status.json as nobody with --public-status: %d", got)
	}
}

// trickle is a hostile local user on the metrics port: N connections,
// from as many loopback addresses as it cares to use (32), each sending
// its requests a byte at a time: half a header that never ends, half one
// slow but complete request after another on a kept-alive connection. It
// reconnects 100 ms after the server closes one. It says how many it
// runs and "ready", and goes on until killed.
func trickle(arg string) {
	var n int
	var addr string
	if _, err := fmt.Sscan(arg, &n, &addr); err != nil {
		fmt.Println(err)
		return
	}
	for i := range n {
		go func() {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%32))}, Timeout: 2 * time.Second}
			for {
				if c, err := d.Dial("tcp", addr); err == nil {
					trickleOn(c, addr, i%2 == 0)
					c.Close()
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	fmt.Printf("trickling on %d connections\n", n)
	fmt.Println("ready")
	select {}
}

func trickleOn(c net.Conn, host string, endless bool) {
	send := func(s string) error {
		for i := range len(s) {
			if _, err := c.Write([]byte{s[i]}); err != nil {
				return err
			}
			time.Sleep(25 * time.Millisecond)
		}
		return nil
	}
	request := "GET /metrics HTTP/1.1\r\nHost: " + host + "\r\n"
	if endless {
		if send(request) != nil {
			return
		}
		for send("X-Trickle: 1\r\n") == nil {
		}
		return
	}
	br := bufio.NewReader(c)
	for {
		// About 1.2 s a request: within the 2 s header timeout.
		if send(request+"\r\n") != nil {
			return
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// A local user holding and trickling on 64 connections to the metrics
// port, from 32 loopback addresses, takes at most its share: a scrape from
// the LAN still succeeds every time, root's status answers, the daemon
// holds a bounded number of descriptors, and a silent failure of isp2 is
// routed around as fast as without the flood.
func TestMetricsPortHostileLocalUser(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	_, testCopy := nobodyDir(t)
	dm := startDaemon(t, d.Router, checkedConfig(d, d.GW2), "--metrics", "0.0.0.0:9108")
	pid := dm.cmd.Process.Pid
	untilAllSucceed(t, d, srv, time.Now(), 5*time.Second)
	lan := d.RouterLAN + ":9108"
	if _, _, err := getIn(d.LAN, lan, lan, "/metrics"); err != nil {
		t.Fatal(err)
	}
	baseFDs := openFDs(t, pid)

	// The same failure without the flood, to compare.
	start := time.Now()
	restore := blackhole(t, d.ISP2)
	quiet := untilAllSucceed(t, d, srv, start, 6*time.Second)
	dm.waitState(t, "isp2", "down", 2*time.Second)
	restore()
	dm.waitState(t, "isp2", "up", 5*time.Second)
	untilAllSucceed(t, d, srv, time.Now(), 5*time.Second)

	report := startHelper(t, d.Router, asNobody(nil, "env", fmt.Sprintf("%s=%d 127.0.0.1:9108", trickleEnv, 64), testCopy))
	t.Logf("hostile user (nobody): %s", strings.TrimSpace(report))
	// Let it take what it can.
	time.Sleep(2 * time.Second)

	scrapes := func(when string) {
		t.Helper()
		failed := 0
		for i := range 10 {
			if code, body, err := getIn(d.LAN, lan, lan, "/metrics"); err != nil || code != http.StatusOK || !strings.Contains(body, "flowpin_link_up") {
				failed++
				t.Logf("scrape %d from the LAN %s: %d %v", i, when, code, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if failed > 0 {
			t.Errorf("%d of 10 scrapes from the LAN failed %s", failed, when)
		} else {
			t.Logf("10 of 10 scrapes from the LAN succeeded %s", when)
		}
	}
	scrapes("during the flood")
	if fds := openFDs(t, pid); fds > baseFDs+16+4+8 {
		t.Errorf("daemon holds %d descriptors during the flood (%d before)", fds, baseFDs)
	} else {
		t.Logf("daemon descriptors during the flood: %d (%d before)", fds, baseFDs)
	}
	if text, err := flowpin(t, d.Router, "status", "-c", dm.cfg); err != nil || strings.Contains(text, "state unknown") {
		t.Errorf("status as root during the flood: %v\n%s", err, text)
	}
	share := cpuShare(t, pid, time.Second)
	t.Logf("daemon CPU during the flood: %.1f%% of a core", 100*share)

	start = time.Now()
	blackhole(t, d.ISP2)
	flooded := untilAllSucceed(t, d, srv, start, 6*time.Second)
	t.Logf("silent failure of isp2: new connections all succeed again after %v during the flood, %v without it",
		flooded.Round(time.Millisecond), quiet.Round(time.Millisecond))
	if flooded > 2500*time.Millisecond {
		t.Errorf("failover took %v during the flood (%v without it), want within 2.5s", flooded, quiet)
	}
	dm.waitState(t, "isp2", "down", 2*time.Second)
	scrapes("after the failover")
}
