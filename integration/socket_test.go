package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The daemon's socket: /run/flowpin/net-DEV-INODE.sock, after the identity
// of the network namespace (README.md), as its locks are named. `ip netns add` bind-mounts the
// namespace at /run/netns/NAME, which has the same identity.
const socketDir = "/run/flowpin"

func socketPath(t testing.TB, ns string) string {
	t.Helper()
	stem, err := nsStem(ns)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(socketDir, stem+".sock")
}

// squatEnv makes this test binary, run again as another user, a squatter
// (see squat) instead of running tests.
const squatEnv = "FLOWPIN_TEST_SQUAT"

// floodEnv makes it open idle connections to a socket instead: "N PATH".
const floodEnv = "FLOWPIN_TEST_FLOOD"

func init() {
	if path := os.Getenv(squatEnv); path != "" {
		squat(path)
		os.Exit(0)
	}
	if arg := os.Getenv(floodEnv); arg != "" {
		flood(arg)
		os.Exit(0)
	}
}

// flood opens N connections to the socket at PATH, says how many it got
// and "ready", and holds them (reconnecting those the server closes)
// until killed.
func flood(arg string) {
	var n int
	var path string
	if _, err := fmt.Sscan(arg, &n, &path); err != nil {
		fmt.Println(err)
		return
	}
	got := 0
	for range n {
		c, err := net.Dial("unix", path)
		if err != nil {
			fmt.Printf("dial: %v\n", err)
			break
		}
		got++
		go func() {
			for {
				_, _ = c.Read(make([]byte, 1))
				c.Close()
				if c, err = net.Dial("unix", path); err != nil {
					return
				}
			}
		}()
	}
	fmt.Printf("connected %d\n", got)
	fmt.Println("ready")
	select {}
}

// forged is the squatter's answer: a link "up" with a reason that would
// clear root's screen if printed raw.
const forged = `[{"name":"isp1","state":"up","last_change":"2020-01-01T00:00:00Z","reason":"forged\u001b[2J","rtt_ms":1,"loss":0},` +
	`{"name":"isp2","state":"up","last_change":"2020-01-01T00:00:00Z","reason":"forged\u001b[2J","rtt_ms":1,"loss":0}]`

// squat is what a local user would try before the daemon starts: take the
// daemon's socket name, in /run/flowpin (creating the directory if it is
// missing) and as the abstract socket @flowpin that flowpin once used, and
// answer there with forged health. It reports each attempt on stdout,
// then "ready", and serves until killed.
func squat(path string) {
	fmt.Printf("uid %d\n", os.Geteuid())
	if err := os.Mkdir(filepath.Dir(path), 0o777); err != nil && !errors.Is(err, os.ErrExist) {
		fmt.Printf("mkdir: %v\n", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, forged) })
	for _, name := range []string{path, "@flowpin"} {
		ln, err := net.Listen("unix", name)
		if err != nil {
			fmt.Printf("listen %s: %v\n", name, err)
			continue
		}
		fmt.Printf("listen %s: ok\n", name)
		go http.Serve(ln, mux)
	}
	fmt.Println("ready")
	select {}
}

// nobodyDir is a directory user nobody can read, with copies of the
// flowpin binary and of this test binary in it (the originals live in
// directories only root may enter).
func nobodyDir(t testing.TB) (flowpinCopy, testCopy string) {
	t.Helper()
	if flowpinBin == "" {
		t.Skip("flowpin binary not built")
	}
	dir, err := os.MkdirTemp("", "flowpin-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{flowpinBin, "flowpin"}, {self, "integration.test"}} {
		b, err := os.ReadFile(c[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, c[1]), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "flowpin"), filepath.Join(dir, "integration.test")
}

// asNobody is the command line that runs args in ns as user nobody, with
// only the given supplementary groups.
func asNobody(groups []int, args ...string) []string {
	cmd := []string{"setpriv", "--reuid=65534", "--regid=65534"}
	if len(groups) == 0 {
		cmd = append(cmd, "--clear-groups")
	} else {
		var g []string
		for _, id := range groups {
			g = append(g, strconv.Itoa(id))
		}
		cmd = append(cmd, "--groups="+strings.Join(g, ","))
	}
	return append(cmd, args...)
}

// flowpinGroup gives namespace ns its own /etc/group with a group flowpin
// that lists members (`ip netns exec` bind-mounts /etc/netns/NS/* over
// /etc), so the host's users and groups stay as they are. It returns the
// group's id.
func flowpinGroup(t testing.TB, ns string, members ...string) int {
	t.Helper()
	etc, err := os.ReadFile("/etc/group")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains("\n"+string(etc), "\nflowpin:") {
		t.Skip("the host has a group flowpin already")
	}
	gid := 64901
	for strings.Contains(string(etc), ":"+strconv.Itoa(gid)+":") {
		gid++
	}
	dir := "/etc/netns/" + ns
	if err := mustOwn(ns); err != nil {
		t.Fatal(err)
	}
	_, statErr := os.Stat("/etc/netns")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(dir)
		if statErr != nil {
			os.Remove("/etc/netns") // ours, if nobody else put anything there
		}
	})
	content := strings.TrimRight(string(etc), "\n") + fmt.Sprintf("\nflowpin:x:%d:%s\n", gid, strings.Join(members, ","))
	if err := os.WriteFile(filepath.Join(dir, "group"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return gid
}

// startSquatter runs squat as nobody in ns and returns what it reported.
func startSquatter(t testing.TB, ns, testCopy, path string) string {
	t.Helper()
	return startHelper(t, ns, asNobody(nil, "env", squatEnv+"="+path, testCopy))
}

// startHelper runs this test binary as a helper (squat, flood) in ns, and
// returns what it reported before "ready".
func startHelper(t testing.TB, ns string, cmdline []string) string {
	t.Helper()
	if err := mustOwn(ns); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"netns", "exec", ns}, cmdline...)
	cmd := exec.Command("ip", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var report strings.Builder
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "ready" {
		report.WriteString(sc.Text() + "\n")
	}
	return report.String()
}

// A local user cannot take the daemon's place: not the socket, not its
// directory; the old abstract name no longer matters; status as that user
// is refused with the reason, and a member of group flowpin gets the
// whole status from the daemon.
func TestSocketUnprivileged(t *testing.T) {
	skipShort(t)
	d := newDualWAN(t)
	flowpinCopy, testCopy := nobodyDir(t)
	gid := flowpinGroup(t, d.Router)
	path := socketPath(t, d.Router)

	// Before any daemon: no daemon is what nobody hears.
	out, err := tryRun(d.Router, asNobody(nil, flowpinCopy, "status")...)
	if err == nil || !strings.Contains(out, "none runs in this network namespace") {
		t.Errorf("status as nobody without a daemon: %v\n%s", err, out)
	}

	report := startSquatter(t, d.Router, testCopy, path)
	t.Logf("squatter as nobody:\n%s", report)
	if !strings.Contains(report, "uid 65534") || !strings.Contains(report, "listen "+path+": ") || strings.Contains(report, "listen "+path+": ok") {
		t.Fatalf("nobody could take %s:\n%s", path, report)
	}
	if !strings.Contains(report, "permission denied") {
		t.Errorf("want permission denied:\n%s", report)
	}

	cfg := d.config(1, 1)
	dm := startDaemon(t, d.Router, cfg)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 0 || int(st.Gid) != gid || st.Mode&0o777 != 0o660 {
		t.Errorf("socket %s: uid %d gid %d mode %o, want 0 %d 0660", path, st.Uid, st.Gid, st.Mode&0o777, gid)
	}
	if err := unix.Lstat(socketDir, &st); err != nil || st.Uid != 0 || st.Mode&0o777 != 0o755 {
		t.Errorf("%s: uid %d mode %o (%v), want root 0755", socketDir, st.Uid, st.Mode&0o777, err)
	}

	// Root sees the daemon's health, not the squatter's.
	text, err := flowpin(t, d.Router, "status", "-c", dm.cfg)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, text)
	}
	if strings.Contains(text, "forged") || strings.Contains(text, "state unknown") || strings.Contains(text, "\x1b") {
		t.Errorf("status as root:\n%s", text)
	}

	// nobody, outside group flowpin: refused, and told why.
	out, err = tryRun(d.Router, asNobody(nil, flowpinCopy, "status")...)
	if err == nil || !strings.Contains(out, "join group flowpin or run as root") {
		t.Errorf("status as nobody: %v\n%s", err, out)
	}
	// --flows reads conntrack itself.
	out, err = tryRun(d.Router, asNobody([]int{gid}, flowpinCopy, "status", "--flows")...)
	if err == nil || !strings.Contains(out, "CAP_NET_ADMIN") {
		t.Errorf("status --flows as nobody: %v\n%s", err, out)
	}

	// A member of group flowpin gets the whole status, as root would.
	out, err = tryRun(d.Router, asNobody([]int{gid}, flowpinCopy, "status", "--json")...)
	if err != nil {
		t.Fatalf("status --json as a member of flowpin: %v\n%s", err, out)
	}
	var s statusDoc
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if s.Schema != 1 || !s.Daemon || len(s.Links) != 2 || s.link(t, "isp1").Interface != "wan1" || s.link(t, "isp2").State == "unknown" {
		t.Errorf("status from the daemon: %+v", s)
	}
	out, err = tryRun(d.Router, asNobody([]int{gid}, flowpinCopy, "status")...)
	if err != nil || !strings.Contains(out, "isp1") || !strings.Contains(out, "wan2") || strings.Contains(out, "state unknown") {
		t.Errorf("status as a member of flowpin: %v\n%s", err, out)
	}

	// A member of flowpin holding every connection the socket serves
	// (and more) cannot lock root out.
	report = startHelper(t, d.Router, asNobody([]int{gid}, "env", fmt.Sprintf("%s=%d %s", floodEnv, 200, path), testCopy))
	t.Logf("flood as a member of flowpin: %s", strings.TrimSpace(report))
	if !strings.Contains(report, "connected 200") {
		t.Fatalf("flood: %s", report)
	}
	for i := range 3 {
		text, err := flowpin(t, d.Router, "status", "-c", dm.cfg)
		if err != nil || strings.Contains(text, "state unknown") || strings.Contains(text, "warning") {
			t.Errorf("status as root during the flood (%d): %v\n%s", i, err, text)
		}
	}
	if fds := openFDs(t, dm.cmd.Process.Pid); fds > 60 {
		t.Errorf("daemon holds %d descriptors during the flood", fds)
	}
}

func pidGone(pid int) bool { return syscall.Kill(pid, 0) == syscall.ESRCH }

// A daemon killed with SIGKILL leaves its socket file behind; the next one
// replaces it. While a daemon lives, a second one refuses to start.
func TestSocketStaleAndLive(t *testing.T) {
	skipShort(t)
	d := newDualWAN(t)
	path := socketPath(t, d.Router)
	cfg := d.config(1, 1)
	dm := startDaemon(t, d.Router, cfg)
	pid := dm.cmd.Process.Pid
	if err := dm.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); !pidGone(pid); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatal("killed daemon still there")
		}
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("after SIGKILL the socket should be left behind: %v", err)
	}
	if out, _ := flowpin(t, d.Router, "status", "-c", dm.cfg); !strings.Contains(out, "state unknown") {
		t.Errorf("status with a dead socket:\n%s", out)
	}

	dm2 := startDaemon(t, d.Router, cfg)
	if out, err := flowpin(t, d.Router, "status", "-c", dm2.cfg); err != nil || strings.Contains(out, "state unknown") {
		t.Errorf("status after the restart: %v\n%s", err, out)
	}
	out, err := flowpin(t, d.Router, "run", "-c", dm2.cfg)
	if err == nil {
		t.Fatalf("a second daemon started:\n%s", out)
	}
	t.Logf("second daemon: %s", strings.TrimSpace(out))
	if out, err := flowpin(t, d.Router, "status", "-c", dm2.cfg); err != nil || strings.Contains(out, "state unknown") {
		t.Errorf("the first daemon stopped answering: %v\n%s", err, out)
	}
	if _, err := dm2.stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after SIGTERM: %v", err)
	}
}

func openFDs(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func vmRSS(t testing.TB, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// Thousands of idle connections to the metrics port cost the daemon a
// bounded number of descriptors; status still answers; idle connections
// are closed after the header timeout.
func TestSocketIdleConnections(t *testing.T) {
	skipShort(t)
	d := newDualWAN(t)
	dm := startDaemon(t, d.Router, d.config(1, 1), "--metrics", ":9108")
	pid := dm.cmd.Process.Pid
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "flowpin" {
		t.Fatalf("pid %d is %q, not the daemon", pid, comm)
	}
	if _, err := scrape(t, d.Router, "127.0.0.1:9108"); err != nil {
		t.Fatal(err)
	}
	baseFDs, baseRSS := openFDs(t, pid), vmRSS(t, pid)

	const idle = 3000
	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	inNS(t, d.Router, func() error {
		for range idle {
			c, err := net.DialTimeout("tcp", "127.0.0.1:9108", 2*time.Second)
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	opened := time.Now()
	time.Sleep(200 * time.Millisecond)
	fds, rss := openFDs(t, pid), vmRSS(t, pid)
	t.Logf("daemon with %d idle connections to metrics: %d fds (%d before), VmRSS %s (%s before)", idle, fds, baseFDs, rss, baseRSS)
	// 16 connections at most, 4 more kept for root (this test connects
	// as root), and a little room for the daemon's own work.
	if fds > baseFDs+16+4+8 {
		t.Errorf("daemon holds %d descriptors with %d idle connections open (%d before)", fds, idle, baseFDs)
	}
	out, err := flowpin(t, d.Router, "status", "-c", dm.cfg)
	if err != nil || strings.Contains(out, "state unknown") || strings.Contains(out, "warning") {
		t.Errorf("status during the flood: %v\n%s", err, out)
	}

	// Every idle connection is closed by the daemon within the header
	// timeout (2s), the ones beyond the cap at once.
	for i, c := range conns {
		_ = c.SetReadDeadline(opened.Add(4 * time.Second))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("idle connection %d still open 4s after it was opened", i)
		}
	}
	t.Logf("all %d idle connections closed by the daemon after %v", idle, time.Since(opened).Round(10*time.Millisecond))
	time.Sleep(100 * time.Millisecond)
	if fds := openFDs(t, pid); fds > baseFDs+2 {
		t.Errorf("daemon holds %d descriptors after the idle connections were closed (%d before)", fds, baseFDs)
	}
	if _, err := scrape(t, d.Router, "127.0.0.1:9108"); err != nil {
		t.Errorf("scrape after the flood: %v", err)
	}
}
