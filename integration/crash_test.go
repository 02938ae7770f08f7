package integration

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// uplinks builds a router namespace with n veth uplinks to one peer
// namespace: router l<i> 100.64.<i>.2/24, gateway 100.64.<i>.1 on the peer
// (the shape of manyLinks, for tests). It returns the router namespace and
// a config with every link.
func uplinks(t testing.TB, n int) (string, string) {
	t.Helper()
	l := newLab(t)
	router, peer := l.addNS("router"), l.addNS("peer")
	var cfg strings.Builder
	cfg.WriteString("links:\n")
	for i := range n {
		dev := fmt.Sprintf("l%d", i)
		veth(t, router, dev, peer, dev)
		addAddr(t, router, dev, fmt.Sprintf("100.64.%d.2/24", i))
		addAddr(t, peer, dev, fmt.Sprintf("100.64.%d.1/24", i))
		fmt.Fprintf(&cfg, "  - {name: isp%d, interface: %s, gateway: 100.64.%d.1, weight: %d, nat: true}\n", i, dev, i, 1+i%4)
	}
	return router, cfg.String()
}

// startFlowpin starts the built binary inside ns without waiting for it.
func startFlowpin(t testing.TB, ns string, args ...string) *exec.Cmd {
	t.Helper()
	if flowpinBin == "" {
		t.Skip("flowpin binary not built (FLOWPIN_SKIP_BUILD=1)")
	}
	if err := mustOwn(ns); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, flowpinBin}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// leftBehind lists flowpin state still in ns: rules and routes with its
// protocol, its nft table.
func leftBehind(t testing.TB, ns string) []string {
	t.Helper()
	var out []string
	for _, c := range [][]string{{"ip", "rule", "show"}, {"ip", "route", "show", "table", "all"}} {
		for _, line := range strings.Split(run(t, ns, c...), "\n") {
			if strings.Contains(line, "proto 201") {
				out = append(out, strings.Join(c, " ")+": "+line)
			}
		}
	}
	if s, err := tryRun(ns, "nft", "list", "table", "inet", "flowpin"); err == nil {
		out = append(out, "nft table inet flowpin:\n"+s)
	}
	return out
}

// SIGKILL at a random moment during an apply, then apply and down: every
// sysctl must be back to its value from before flowpin, and nothing of
// flowpin left. The links start with strict rp_filter, which apply makes
// loose, so a lost original shows as rp_filter 2 after down.
func TestApplySIGKILLThenApplyAndDown(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root, network namespaces and real traffic")
	}
	const links, rounds = 64, 12
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	router, cfg := uplinks(t, links)
	for i := range links {
		setSysctl(t, router, fmt.Sprintf("net.ipv4.conf.l%d.rp_filter", i), "1")
	}
	path := writeFile(t, "flowpin.yaml", cfg)
	before := state(t, router)

	// How long a whole apply takes (the median of three; the first one
	// also loads nf_conntrack): the kills land inside it.
	var times []time.Duration
	for range 3 {
		start := time.Now()
		if out, err := flowpin(t, router, "apply", "-c", path); err != nil {
			t.Fatal(err, out)
		}
		times = append(times, time.Since(start))
		if out, err := flowpin(t, router, "down"); err != nil {
			t.Fatal(err, out)
		}
		if diff := cmp.Diff(strings.Split(before, "\n"), strings.Split(state(t, router), "\n")); diff != "" {
			t.Fatalf("apply+down without a kill is not clean (-before +after):\n%s", diff)
		}
	}
	slices.Sort(times)
	full := times[1]
	t.Logf("%d links: one apply takes %v", links, full.Round(time.Millisecond))

	dirty := 0
	for round := range rounds {
		if ctx.Err() != nil {
			t.Fatalf("out of time after %d rounds", round)
		}
		after := time.Duration(mrand.Int64N(int64(full)))
		cmd := startFlowpin(t, router, "apply", "-c", path)
		time.Sleep(after)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if out, err := flowpin(t, router, "apply", "-c", path); err != nil {
			t.Fatalf("round %d: apply after the kill: %v\n%s", round, err, out)
		}
		if out, err := flowpin(t, router, "down"); err != nil {
			t.Fatalf("round %d: down: %v\n%s", round, err, out)
		}
		diff := cmp.Diff(strings.Split(before, "\n"), strings.Split(state(t, router), "\n"))
		left := leftBehind(t, router)
		if diff == "" && len(left) == 0 {
			continue
		}
		dirty++
		t.Errorf("round %d, killed after %v: apply+down left the namespace different (-before +after):\n%s\n%s", round, after.Round(time.Millisecond), diff, strings.Join(left, "\n"))
		// Start the next round clean.
		restoreSysctls(t, router, before)
		_, _ = flowpin(t, router, "down")
	}
	t.Logf("%d of %d rounds left something behind", dirty, rounds)
}

// restoreSysctls sets every sysctl of a state() snapshot back to its value
// there, where it differs now.
func restoreSysctls(t testing.TB, ns, snap string) {
	t.Helper()
	_, sysctls, _ := strings.Cut(snap, "## sysctl\n")
	for _, line := range strings.Split(strings.TrimSpace(sysctls), "\n") {
		key, val, ok := strings.Cut(line, " = ")
		if !ok {
			continue
		}
		inNS(t, ns, func() error {
			now, err := os.ReadFile(sysctlPath(key))
			if err != nil || strings.TrimSpace(string(now)) == val {
				return nil // nf_conntrack not loaded: its keys are missing
			}
			return os.WriteFile(sysctlPath(key), []byte(val), 0o644)
		})
	}
}
