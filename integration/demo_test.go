package integration

import (
	"context"
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

// TestDemo runs `make demo`'s script as a newcomer would (without the
// status page's hold), and checks what it shows: each capability it walks
// through did what it says, counted at its far end, and it left no
// namespace behind.
func TestDemo(t *testing.T) {
	requireRoot(t)
	if flowpinBin == "" {
		t.Skip("flowpin binary not built (FLOWPIN_SKIP_BUILD=1)")
	}
	for _, tool := range []string{"nft", "perl", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../scripts/demo.sh", flowpinBin)
	prefix := "fpdemo" + strconv.Itoa(os.Getpid())
	cmd.Env = append(os.Environ(), "DEMO_HOLD=0", "TUNPAIR="+tunpairBin, "DEMO_NS="+prefix)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("demo took %v", time.Since(start).Round(time.Second))
	text := string(out)
	defer func() {
		if t.Failed() {
			t.Logf("demo output:\n%s", text)
		}
	}()
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), prefix+"-") {
		t.Errorf("the demo left namespaces:\n%s", ns)
	}
	if left := demoProcesses("DEMO_NS=" + prefix); len(left) > 0 {
		t.Errorf("the demo left processes running (a namespace whose name is gone lives on in them):\n%s", strings.Join(left, "\n"))
	}
	section := func(heading string) string {
		i := strings.Index(text, "==> "+heading)
		if i < 0 {
			t.Errorf("no section %q", heading)
			return ""
		}
		rest := text[i+4:]
		if j := strings.Index(rest, "==> "); j >= 0 {
			rest = rest[:j]
		}
		return rest
	}
	counts := regexp.MustCompile(`(\d+)/(\d+) connections ok; seen at far: isp1 \(\S+\) (\d+), isp2 \(\S+\) (\d+), other (\d+)`)
	// each is every traffic line of a section: ok, of, isp1, isp2, other.
	each := func(sec string) [][5]int {
		var out [][5]int
		for _, m := range counts.FindAllStringSubmatch(sec, -1) {
			var v [5]int
			for i := range v {
				v[i], _ = strconv.Atoi(m[i+1])
			}
			out = append(out, v)
		}
		return out
	}
	expect := func(heading string, want ...string) string {
		sec := section(heading)
		for _, w := range want {
			if !strings.Contains(sec, w) {
				t.Errorf("section %q: no %q", heading, w)
			}
		}
		return sec
	}

	if c := each(section("Before flowpin")); len(c) != 2 || c[0][0] != 0 || c[1][0] != 0 {
		t.Errorf("before flowpin, connections got through: %v", c)
	}
	if c := each(section("60 connections lan -> far")); len(c) != 1 || c[0][0] != 60 || c[0][2] <= c[0][3] || c[0][3] == 0 {
		t.Errorf("3:1 balance: %v", c)
	}
	v6 := each(expect("IPv6: dual-stack", "IPv6 2 of 2 links"))
	if len(v6) != 2 || v6[0][0] != 60 || v6[0][2] == 0 || v6[0][3] == 0 || v6[0][4] != 0 || v6[1][0] != 60 {
		t.Errorf("dual stack (IPv6, then IPv4): %v; want all 60 of each, IPv6 over both links", v6)
	}
	ops := expect("Operating it", "reloaded", "reload refused", "links[0].weight: -2 is out of range",
		"hook: isp2 (wan2, ipv4) is down", "hook: isp2 (wan2, ipv4) is up")
	if c := each(ops); len(c) != 2 || c[0][0] != 40 || c[1][0] != 40 || c[1][3] <= c[0][3] {
		t.Errorf("reload from 3:1 to 1:1: %v; want all 40 each time, more on isp2 after", c)
	}
	expect("flowpin use isp2", "seen at far: isp1 (192.0.2.2) 0, isp2 (198.51.100.2) 20")
	od := expect("On-demand backup", "(isp2: standby, ", "wan2: state DOWN", "wan2: state UP")
	if c := each(od); len(c) != 3 || c[0][3] != 0 || c[2][3] != 0 {
		t.Errorf("on-demand: %v; want nothing over isp2 while isp1 is up", c)
	}
	ppp := expect("A PPP-like uplink", "POINTOPOINT", "peer 198.51.100.1/32",
		"default dev wan2 proto 201 src 198.51.100.2", "nexthop dev wan2 weight 1", "(isp2: down, ",
		"default dev wan2 proto 201 src 198.51.100.7", "from 198.51.100.7 lookup 102")
	if c := each(ppp); len(c) != 3 || c[0][0] != 40 || c[0][2] == 0 || c[0][3] == 0 ||
		c[1][0] != 20 || c[1][3] != 0 || c[2][0] != 40 || c[2][3] != 0 || c[2][4] != 0 {
		t.Errorf("point-to-point: %v; want 40 over both links, 20 over isp1 between sessions, 40 with none from the old address", c)
	}
	if m := regexp.MustCompile(`from the new address 198\.51\.100\.7: (\d+)`).FindStringSubmatch(ppp); m == nil || m[1] == "0" {
		t.Errorf("point-to-point: no flow from the new session's address (%v)", m)
	}
	checkDemoP2P6(t, text)
	checkOperatorDemo(t, expect("Operator control", "drained by operator since", "ok   daemon: flowpin run runs here; checked against its plan: isp2 out of the IPv4 multipath route (drained by operator since ", "(exit 1: root only)", "(isp2: standby, ", "isp2 quota: ", "warning: link isp2 used all of its quota"), each)
	checkDemoDNS(t, text)
	checkDemoPrefixes6(t, expect("IPv6 with each ISP's own prefix"))
	checkSetsDemo(t, section("Traffic by name"), each)
	checkHADemo(t, expect)
	if !strings.Contains(text, "==> Done") {
		t.Error("the demo did not reach its end")
	}
}

// demoProcesses lists the live processes whose environment has env: every
// process the demo starts inherits it, ip netns exec included.
func demoProcesses(env string) []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil || !slices.Contains(strings.Split(string(b), "\x00"), env) {
			continue
		}
		if st, _ := os.ReadFile(filepath.Join(d, "stat")); strings.Contains(string(st), ") Z ") {
			continue // a zombie, its parent's to reap
		}
		cmd, _ := os.ReadFile(filepath.Join(d, "cmdline"))
		out = append(out, filepath.Base(d)+": "+strings.ReplaceAll(string(cmd), "\x00", " "))
	}
	return out
}
