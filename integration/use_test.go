package integration

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// useConnects is a command that opens n connections to target, one after
// the other, each echoing one line.
func useConnects(target netip.AddrPort, n int) []string {
	return []string{"bash", "-c", fmt.Sprintf(`for i in $(seq %d); do
	exec 3<>/dev/tcp/%s/%d || exit 1
	echo "t$i" >&3; read -r x <&3 || exit 2
	exec 3>&-
done`, n, target.Addr(), target.Port())}
}

// appliedForUse is a dual-WAN router with flowpin applied (1:1), and its
// config file; down runs at cleanup.
func appliedForUse(t *testing.T) (*dualWAN, string) {
	t.Helper()
	requireRoot(t)
	d := newDualWAN(t)
	cfg := writeFile(t, "use.yaml", d.config(1, 1))
	if out, err := flowpin(t, d.Router, "apply", "-c", cfg); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = flowpin(t, d.Router, "down") })
	return d, cfg
}

// TestUseLink: under `flowpin use isp2`, all 20 connections of a command
// leave by isp2 (counted at the far end by their NAT source), while the
// same command without it is split by the default policy. The command's
// exit status is passed on, and the table and cgroup are gone after.
func TestUseLink(t *testing.T) {
	d, cfg := appliedForUse(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := netip.AddrPortFrom(netip.MustParseAddr(d.Service), uint16(srv.Port()))
	wan1, wan2 := netip.MustParseAddr(d.WAN1), netip.MustParseAddr(d.WAN2)

	// Without use: the policy spreads them (one in 2^20 would not be).
	if out, err := tryRun(d.Router, useConnects(target, 20)...); err != nil {
		t.Fatalf("connections without use: %v\n%s", err, out)
	}
	base := srv.Sources()
	t.Logf("without use: %v", base)
	if base[wan1] == 0 || base[wan2] == 0 {
		t.Fatalf("the default policy did not split 20 connections: %v", base)
	}
	srv.Reset()

	out, err := flowpin(t, d.Router, append([]string{"use", "-c", cfg, "isp2", "--"}, useConnects(target, 20)...)...)
	if err != nil {
		t.Fatalf("use: %v\n%s", err, out)
	}
	got := srv.Sources()
	t.Logf("under use isp2: %v", got)
	if got[wan2] != 20 || len(got) != 1 {
		t.Errorf("under use isp2: %v, want all 20 from %s", got, wan2)
	}

	// A re-apply while the command runs leaves its table alone.
	out, err = flowpin(t, d.Router, "use", "-c", cfg, "isp2", "--", "sh", "-c", flowpinBin+" apply -c "+cfg+" >/dev/null && nft list ruleset")
	if err != nil {
		t.Fatalf("use ... apply: %v\n%s", err, out)
	}
	// nft shows the cgroup's id where it cannot see the cgroup's path.
	if !useRule.MatchString(out) {
		t.Errorf("the use table after a re-apply:\n%s", out)
	}

	// The exit status, and nothing left behind.
	_, err = flowpin(t, d.Router, "use", "-c", cfg, "isp1", "--", "sh", "-c", "exit 7")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("use ... exit 7: err = %v, want exit status 7", err)
	}
	if tables := run(t, d.Router, "nft", "list", "tables"); strings.Contains(tables, "flowpin_use") {
		t.Errorf("a use table is left:\n%s", tables)
	}
	if left, _ := os.ReadDir(cgroupRoot(t) + "/flowpin"); len(left) > 0 {
		for _, e := range left {
			if e.IsDir() {
				t.Errorf("cgroup left behind: flowpin/%s", e.Name())
			}
		}
	}

	// An unknown link is refused before anything runs.
	if out, err := flowpin(t, d.Router, "use", "-c", cfg, "isp3", "--", "true"); err == nil || !strings.Contains(out, `no link "isp3"`) {
		t.Errorf("use isp3: %v\n%s", err, out)
	}
}

// A use killed with SIGKILL leaves its table and cgroup, and the mount
// point of the cgroup hierarchy it mounted (ip netns exec gives it a
// /sys without one) in /run/flowpin. While the command it started still
// runs, the next use leaves the table and the cgroup alone (the command
// keeps its link) and removes the mount point; once the command has
// ended, the next use removes the table and cgroup too. Nothing is left in
// /tmp.
func TestUseKilledIsSweptLater(t *testing.T) {
	d, cfg := appliedForUse(t)
	tmpBefore, _ := filepath.Glob("/tmp/flowpin-cgroup2-*")
	// ip netns exec execs flowpin: the process's pid is flowpin's.
	cmd := exec.Command("ip", "netns", "exec", d.Router, flowpinBin, "use", "-c", cfg, "isp2", "--", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	table, group := fmt.Sprintf("flowpin_use_%d", pid), filepath.Join(cgroupRoot(t), "flowpin", fmt.Sprintf("use-%d", pid))
	defer func() { _ = os.WriteFile(filepath.Join(group, "cgroup.kill"), []byte("1"), 0) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(run(t, d.Router, "nft", "list", "tables"), table) {
		if time.Now().After(deadline) {
			t.Fatalf("no table %s 5 s after use started", table)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	left := func() (bool, bool) {
		_, err := os.Stat(group)
		return strings.Contains(run(t, d.Router, "nft", "list", "tables"), table), err == nil
	}
	if tbl, grp := left(); !tbl || !grp {
		t.Fatalf("after SIGKILL: table %v, cgroup %v; want both left (nothing could clean up)", tbl, grp)
	}
	mountPoint := fmt.Sprintf("/run/flowpin/cgroup2-%d", pid)
	if _, err := os.Stat(mountPoint); err != nil {
		t.Errorf("after SIGKILL: %v; want the killed use's mount point there", err)
	}

	// sleep still runs in the cgroup: the next use keeps both.
	if out, err := flowpin(t, d.Router, "use", "-c", cfg, "isp1", "--", "true"); err != nil {
		t.Fatalf("use: %v\n%s", err, out)
	}
	if tbl, grp := left(); !tbl || !grp {
		t.Errorf("the command of the killed use still runs, yet table %v, cgroup %v are left; want both", tbl, grp)
	}
	if _, err := os.Stat(mountPoint); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after the next use: %s: %v; want it removed (the killed use needs it no more)", mountPoint, err)
	}

	if err := os.WriteFile(filepath.Join(group, "cgroup.kill"), []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for procs, _ := os.ReadFile(filepath.Join(group, "cgroup.procs")); len(procs) > 0; procs, _ = os.ReadFile(filepath.Join(group, "cgroup.procs")) {
		if time.Now().After(deadline) {
			t.Fatalf("cgroup.kill left %q", procs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := flowpin(t, d.Router, "use", "-c", cfg, "isp1", "--", "true")
	if err != nil {
		t.Fatalf("use: %v\n%s", err, out)
	}
	if tbl, grp := left(); tbl || grp {
		t.Errorf("the killed use's command has ended, yet table %v, cgroup %v are left; want neither\n%s", tbl, grp, out)
	}
	tmpAfter, _ := filepath.Glob("/tmp/flowpin-cgroup2-*")
	for _, p := range tmpAfter {
		if !slices.Contains(tmpBefore, p) {
			t.Errorf("%s is left behind", p)
		}
	}
}

// useRule is the table of a use of isp2 in an IPv4-only config: IPv6 is
// refused, then the mark.
var useRule = regexp.MustCompile(`table inet flowpin_use_\d+ \{\s+chain output \{\s+type route hook output priority mangle - 1; policy accept;\s+` +
	`socket cgroupv2 level 2 \S+ meta nfproto ipv6 meta oiftype != loopback meta l4proto tcp counter packets \d+ bytes \d+ reject with tcp reset\s+` +
	`socket cgroupv2 level 2 \S+ meta nfproto ipv6 meta oiftype != loopback counter packets \d+ bytes \d+ reject with icmpx admin-prohibited\s+` +
	`socket cgroupv2 level 2 \S+ meta mark set meta mark & 0x[0-9a-f]+ \| 0x00000200 ct mark set ct mark & 0x[0-9a-f]+ \| 0x00000200\s`)

// cgroupRoot is where the cgroup v2 hierarchy is mounted.
func cgroupRoot(t testing.TB) string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, " - cgroup2 ") {
			return strings.Fields(line)[4]
		}
	}
	t.Skip("no cgroup v2")
	return ""
}

// TestUseOtherFamilyUnreachable: isp2 has no IPv6 (no gateway6), isp1
// has. Under `flowpin use isp2` the command's IPv4 connections all leave
// by isp2, while its IPv6 TCP connect and UDP sends fail at once instead
// of leaving by isp1: no IPv6 packet of the command arrives at the far
// end.
func TestUseOtherFamilyUnreachable(t *testing.T) {
	requireRoot(t)
	d := newDualWAN6(t)
	cfg := writeFile(t, "use6.yaml", fmt.Sprintf(`links:
  - {name: isp1, interface: wan1, gateway: %s, gateway6: auto, nat: true}
  - {name: isp2, interface: wan2, gateway: %s, nat: true}
`, d.GW1, d.GW2))
	if out, err := flowpin(t, d.Router, "apply", "-c", cfg); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = flowpin(t, d.Router, "down") })
	srv4 := startEchoServer(t, d.Far, d.Service+":0")
	srv6 := startEchoServer(t, d.Far, "["+d.Service6+"]:0")
	t4 := netip.AddrPortFrom(netip.MustParseAddr(d.Service), uint16(srv4.Port()))
	t6 := netip.AddrPortFrom(netip.MustParseAddr(d.Service6), uint16(srv6.Port()))
	// Every IPv6 packet from the router's addresses that reaches far.
	nft(t, d.Far, fmt.Sprintf(`table inet count {
	counter v6 {}
	chain in {
		type filter hook input priority 0;
		ip6 saddr { %s, %s } counter name "v6"
	}
}
`, d.WAN1v6, d.WAN2v6))

	// Without use, the router reaches the IPv6 service (by isp1).
	if out, err := tryRun(d.Router, useConnects(t6, 3)...); err != nil {
		t.Fatalf("IPv6 connections without use: %v\n%s", err, out)
	}
	if got := srv6.Sources(); got[netip.MustParseAddr(d.WAN1v6)] != 3 {
		t.Fatalf("IPv6 without use: %v, want 3 from %s", got, d.WAN1v6)
	}
	srv6.Reset()
	before := nftCounter(t, d.Far, "inet", "count", "v6")

	script := useConnects(t4, 10)[2] + fmt.Sprintf(`
start=$(date +%%s%%N)
if (echo t6 >/dev/tcp/%[1]s/%[2]d); then echo "IPv6 connected"; exit 3; fi
echo "IPv6 refused after $(( ($(date +%%s%%N) - start) / 1000000 )) ms"
exec 4>/dev/udp/%[1]s/%[2]d || exit 4
echo u1 >&4
sleep 0.2
if echo u2 >&4; then echo "IPv6 UDP sent"; exit 5; fi
echo "IPv6 UDP refused"
`, t6.Addr(), t6.Port())
	out, err := flowpin(t, d.Router, "use", "-c", cfg, "isp2", "--", "bash", "-c", script)
	t.Logf("use isp2:\n%s", out)
	if err != nil {
		t.Errorf("use isp2: %v", err)
	}
	if got := srv4.Sources(); got[netip.MustParseAddr(d.WAN2)] != 10 || len(got) != 1 {
		t.Errorf("IPv4 under use isp2: %v, want all 10 from %s", got, d.WAN2)
	}
	if got := srv6.Sources(); len(got) != 0 {
		t.Errorf("IPv6 connections under use isp2 (no IPv6 on isp2) arrived: %v, want none", got)
	}
	if n := nftCounter(t, d.Far, "inet", "count", "v6") - before; n != 0 {
		t.Errorf("%d IPv6 packets of the command arrived at far, want none", n)
	}
	for _, want := range []string{"link isp2 carries no IPv6 now", "Connection refused", "IPv6 UDP refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	m := regexp.MustCompile(`IPv6 refused after (\d+) ms`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal("no refusal time in the output")
	}
	t.Logf("the IPv6 connect failed after %s ms", m[1])
	if ms, _ := strconv.Atoi(m[1]); ms > 5000 {
		t.Errorf("the IPv6 connect took %d ms to fail, want an immediate error", ms)
	}
}

// TestUseRefusesLinkNotApplied: use refuses, in one line and before the
// command runs, where its mark would have no ip rule: flowpin not applied
// at all, or the link not in what was applied (a config that gained a
// link since).
func TestUseRefusesLinkNotApplied(t *testing.T) {
	requireRoot(t)
	d := newDualWAN(t)
	both := writeFile(t, "both.yaml", d.config(1, 1))
	only1 := writeFile(t, "isp1.yaml", fmt.Sprintf("links:\n  - {name: isp1, interface: wan1, gateway: %s, nat: true}\n", d.GW1))
	marker := filepath.Join(t.TempDir(), "ran")

	refused := func(what, cfg, want string) {
		t.Helper()
		out, err := flowpin(t, d.Router, "use", "-c", cfg, "isp2", "--", "touch", marker)
		if err == nil || !strings.Contains(out, want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("use isp2 %s: %v\n%s\nwant one line with %q", what, err, out, want)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("use isp2 %s ran the command", what)
		}
	}
	refused("before any apply", both, "flowpin is not applied in this network namespace")

	if out, err := flowpin(t, d.Router, "apply", "-c", only1); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = flowpin(t, d.Router, "down") })
	refused("with isp2 never applied", both, "link isp2 is not applied in this network namespace")
	if tables := run(t, d.Router, "nft", "list", "tables"); strings.Contains(tables, "flowpin_use") {
		t.Errorf("a refused use left a table:\n%s", tables)
	}

	if out, err := flowpin(t, d.Router, "apply", "-c", both); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if out, err := flowpin(t, d.Router, "use", "-c", both, "isp2", "--", "touch", marker); err != nil {
		t.Errorf("use isp2 once applied: %v\n%s", err, out)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("use isp2 once applied did not run the command: %v", err)
	}
}
