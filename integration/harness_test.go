// Package integration moves real packets through real kernels: every test
// builds its own network namespaces (named "fp<id>-<role>"), runs flowpin
// inside one of them under `ip netns exec`, and asserts on what arrived and on
// what the kernel reports (ip rule, ip route, nft list ruleset, sysctls).
//
// Safety: nothing here touches the host namespace's routes, rules, nftables or
// sysctls, and no packet is addressed outside the test's own namespaces. Every
// command that runs inside a namespace goes through run/tryRun, which refuse a
// namespace the harness did not create itself.
package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"flowpin/lb/nslock"
)

// flowpinBin is the flowpin binary built once by TestMain; empty when
// FLOWPIN_SKIP_BUILD=1 or when not running as root (tests skip then).
var flowpinBin string

// tunpairBin is the point-to-point link helper (./tunpair), built beside it.
var tunpairBin string

// cmdTimeout bounds every external command so a wedged tool fails the test
// instead of hanging the suite.
const cmdTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		// Every test here builds namespaces and moves real traffic: none
		// is a unit test.
		fmt.Println("integration: skipped under -short")
		return 0
	}
	if os.Geteuid() == 0 && os.Getenv("FLOWPIN_SKIP_BUILD") != "1" {
		dir, err := os.MkdirTemp("", "flowpin-integration-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "integration: temp dir:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "flowpin")
		out, err := exec.Command("go", "build", "-o", bin, "../cmd/flowpin").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "integration: build flowpin: %v\n%s", err, out)
			return 1
		}
		flowpinBin = bin
		tp := filepath.Join(dir, "tunpair")
		if out, err := exec.Command("go", "build", "-o", tp, "./tunpair").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: build tunpair: %v\n%s", err, out)
			return 1
		}
		tunpairBin = tp
	}
	return m.Run()
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("integration tests need root (network namespaces, nftables)")
	}
}

// owned records the namespaces this process created and has not deleted yet.
// run/tryRun/nsDo refuse any other name, so a typo can never reach the host
// namespace or someone else's.
var owned sync.Map // name -> struct{}

func mustOwn(ns string) error {
	if !strings.HasPrefix(ns, "fp") {
		return fmt.Errorf("namespace %q: not a harness namespace", ns)
	}
	if _, ok := owned.Load(ns); !ok {
		return fmt.Errorf("namespace %q: not created by this test process", ns)
	}
	return nil
}

// lab is one test's set of namespaces. They share a random id so parallel
// tests and parallel `go test` runs never collide.
type lab struct {
	t  testing.TB
	id string
	// ipv6: the namespaces keep IPv6 (see newLab6).
	ipv6 bool
}

func newLab(t testing.TB) *lab {
	t.Helper()
	requireRoot(t)
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return &lab{t: t, id: hex.EncodeToString(b)}
}

// newLab6 is newLab for dual-stack topologies: IPv6 stays enabled, and
// duplicate address detection is off for every interface created later, so
// an address is usable as soon as it is added instead of staying tentative
// for a second. Call settle6 once the topology is wired.
func newLab6(t testing.TB) *lab {
	t.Helper()
	l := newLab(t)
	l.ipv6 = true
	return l
}

// addNS creates namespace "fp<id>-<role>" with lo up and rp_filter off, and
// deletes it in t.Cleanup (also when the test fails). rp_filter is set
// explicitly because a new namespace inherits the host's values when
// net.core.devconf_inherit_init_net=1; "default" is set before any interface
// exists so every later interface starts at 0.
func (l *lab) addNS(role string) string {
	t := l.t
	t.Helper()
	name := "fp" + l.id + "-" + role
	if out, err := hostIP("netns", "add", name); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	owned.Store(name, struct{}{})
	t.Cleanup(func() { deleteNS(t, name) })
	run(t, name, "ip", "link", "set", "lo", "up")
	setSysctl(t, name, "net.ipv4.conf.all.rp_filter", "0")
	setSysctl(t, name, "net.ipv4.conf.default.rp_filter", "0")
	if l.ipv6 {
		// No DAD: link-local and global addresses are final at once, so
		// nothing appears asynchronously in a before/after snapshot.
		for _, k := range []string{"disable_ipv6", "accept_dad"} {
			setSysctl(t, name, "net.ipv6.conf.all."+k, "0")
			setSysctl(t, name, "net.ipv6.conf.default."+k, "0")
		}
		return name
	}
	// IPv4-only topologies: without IPv6, no link-local address or route
	// appears asynchronously (after DAD) in the middle of a test's
	// before/after snapshots.
	setSysctl(t, name, "net.ipv6.conf.all.disable_ipv6", "1")
	setSysctl(t, name, "net.ipv6.conf.default.disable_ipv6", "1")
	return name
}

// settle6 waits until no address in the namespaces is tentative any more
// and every interface that is up has its link-local address (they appear
// from a work queue shortly after the link comes up, even without DAD).
func settle6(t testing.TB, nss ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, ns := range nss {
		for {
			tentative := strings.TrimSpace(run(t, ns, "ip", "-6", "-o", "addr", "show", "tentative"))
			missing := ""
			for _, line := range strings.Split(strings.TrimSpace(run(t, ns, "ip", "-o", "link", "show", "up")), "\n") {
				f := strings.Fields(line)
				if len(f) < 2 {
					continue
				}
				dev, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
				if dev == "lo" || strings.Contains(line, "NO-CARRIER") {
					continue
				}
				// A device can be moved to another namespace or renamed
				// between the listing and this look (a topology still
				// being built): one that is gone now is not waited for.
				out, err := tryRun(ns, "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "link")
				if err != nil && strings.Contains(out, "does not exist") {
					continue
				}
				if err != nil {
					t.Fatalf("[%s] ip -6 addr show dev %s: %v\n%s", ns, dev, err, out)
				}
				if strings.TrimSpace(out) == "" {
					missing = dev
					break
				}
			}
			if tentative == "" && missing == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("IPv6 in %s did not settle: tentative %q, no link-local address on %q", ns, tentative, missing)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// addAddr6 adds an IPv6 address without duplicate address detection.
func addAddr6(t testing.TB, ns, dev, cidr string) {
	t.Helper()
	run(t, ns, "ip", "-6", "addr", "add", cidr, "dev", dev, "nodad")
}

// addRoute6 runs `ip -6 route add ARGS` inside ns.
func addRoute6(t testing.TB, ns string, args ...string) {
	t.Helper()
	run(t, ns, append([]string{"ip", "-6", "route", "add"}, args...)...)
}

// deleteNS kills what is left running inside ns (only processes the test
// started there: a namespace created by this test has no others), then
// deletes it; the veths inside go with it.
func deleteNS(t testing.TB, name string) {
	if out, err := hostIP("netns", "pids", name); err == nil {
		for _, f := range strings.Fields(out) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
				if p, err := os.FindProcess(pid); err == nil {
					_ = p.Kill()
				}
			}
		}
	}
	removeFlowpinFiles(name)
	out, err := hostIP("netns", "del", name)
	owned.Delete(name)
	if err != nil {
		t.Errorf("ip netns del %s: %v\n%s", name, err, out)
	}
}

// removeFlowpinFiles removes what flowpin keeps for namespace name in the
// host's /run/flowpin (nslock.DefaultDir): a daemon's socket and locks,
// its operator and quota state. A daemon killed with the namespace could
// not remove them, and nothing else would: the namespace is gone. They
// are named after the namespace's inode, which the kernel may give to the
// next namespace made once this one is gone, so they are removed while it
// still exists.
func removeFlowpinFiles(name string) {
	stem, err := nsStem(name)
	if err != nil {
		return
	}
	files, _ := filepath.Glob(filepath.Join(nslock.DefaultDir, stem+".*"))
	for _, f := range files {
		_ = os.Remove(f)
	}
}

// nsStem is the stem of flowpin's file names for namespace name
// (nslock.ID as a process in it sees it): `ip netns add` bind-mounts the
// namespace at /run/netns/NAME, which has the same identity.
func nsStem(name string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join("/run/netns", name), &st); err != nil {
		return "", err
	}
	return nslock.Name(st.Dev, st.Ino), nil
}

// hostIP runs `ip ARGS` in the host namespace. Only the harness uses it, and
// only for `ip netns add|del|pids|list`.
func hostIP(args ...string) (string, error) {
	switch {
	case len(args) >= 2 && args[0] == "netns" && (args[1] == "add" || args[1] == "del" || args[1] == "pids" || args[1] == "list"):
	default:
		return "", fmt.Errorf("hostIP: refusing `ip %s` in the host namespace", strings.Join(args, " "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	return string(out), err
}

// tryRun runs a command inside ns with `ip netns exec` and returns its
// combined output. Use it where failure is an expected outcome.
func tryRun(ns string, args ...string) (string, error) {
	return tryRunStdin(ns, "", args...)
}

func tryRunStdin(ns, stdin string, args ...string) (string, error) {
	if err := mustOwn(ns); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("[%s] %s: %w", ns, strings.Join(args, " "), err)
	}
	return buf.String(), err
}

// run is tryRun that fails the test, showing the output, on error.
func run(t testing.TB, ns string, args ...string) string {
	t.Helper()
	out, err := tryRun(ns, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// nft loads an nft script (as `nft -f -`) inside ns.
func nft(t testing.TB, ns, script string) {
	t.Helper()
	out, err := tryRunStdin(ns, script, "nft", "-f", "-")
	if err != nil {
		t.Fatalf("%v\n%s\nscript:\n%s", err, out, script)
	}
}

// flowpin runs the built binary inside ns. It does not fail the test: the
// caller decides whether an error is expected. Skips when the binary was not
// built (FLOWPIN_SKIP_BUILD=1).
func flowpin(t testing.TB, ns string, args ...string) (string, error) {
	t.Helper()
	if flowpinBin == "" {
		t.Skip("flowpin binary not built (FLOWPIN_SKIP_BUILD=1)")
	}
	return tryRun(ns, append([]string{flowpinBin}, args...)...)
}

// writeFile writes content to a fresh file in the test's temp dir.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// nsDo runs fn on a fresh OS thread that has joined namespace ns, then moves
// the thread back. Sockets created by fn stay in ns for their whole life, so
// a listener or dialer made here can be used from ordinary goroutines
// afterwards. Safe to call from any goroutine (it never calls t.Fatal).
func nsDo(ns string, fn func() error) error {
	if err := mustOwn(ns); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			// setns failed, the thread is still where it was.
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: when this goroutine exits the
			// runtime terminates the thread instead of reusing it in the
			// wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("restore netns after %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// inNS is nsDo that fails the test on error.
func inNS(t testing.TB, ns string, fn func() error) {
	t.Helper()
	if err := nsDo(ns, fn); err != nil {
		t.Fatalf("in netns %s: %v", ns, err)
	}
}

func sysctlPath(key string) string {
	return "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
}

// setSysctl writes a sysctl inside ns. /proc/sys/net resolves against the
// network namespace of the thread that opens it, so this goes through nsDo.
func setSysctl(t testing.TB, ns, key, value string) {
	t.Helper()
	inNS(t, ns, func() error {
		return os.WriteFile(sysctlPath(key), []byte(value), 0o644)
	})
}

func getSysctl(t testing.TB, ns, key string) string {
	t.Helper()
	var v []byte
	inNS(t, ns, func() error {
		var err error
		v, err = os.ReadFile(sysctlPath(key))
		return err
	})
	return strings.TrimSpace(string(v))
}

// Small wrappers over ip(8) inside a namespace.

func linkUp(t testing.TB, ns, dev string) {
	t.Helper()
	run(t, ns, "ip", "link", "set", "dev", dev, "up")
}

func addAddr(t testing.TB, ns, dev, cidr string) {
	t.Helper()
	run(t, ns, "ip", "addr", "add", cidr, "dev", dev)
}

// addRoute runs `ip route add ARGS` inside ns.
func addRoute(t testing.TB, ns string, args ...string) {
	t.Helper()
	run(t, ns, append([]string{"ip", "route", "add"}, args...)...)
}

// veth creates a veth pair with end ifA in nsA and ifB in nsB (both ends are
// created directly inside their namespaces, never in the host one) and sets
// both up.
func veth(t testing.TB, nsA, ifA, nsB, ifB string) {
	t.Helper()
	if err := mustOwn(nsB); err != nil {
		t.Fatal(err)
	}
	run(t, nsA, "ip", "link", "add", "name", ifA, "type", "veth", "peer", "name", ifB, "netns", nsB)
	linkUp(t, nsA, ifA)
	linkUp(t, nsB, ifB)
}

// snapshotSysctls are the global sysctls in a snapshot; per-interface ones
// (snapshotConfKeys) are added for every entry of net/ipv4/conf.
var (
	snapshotSysctls = []string{
		"net.ipv4.ip_forward",
		"net.ipv4.fib_multipath_hash_policy",
		"net.ipv4.fib_multipath_hash_fields",
		"net.ipv4.fib_multipath_use_neigh",
		"net.ipv6.conf.all.forwarding",
		"net.ipv6.fib_multipath_hash_policy",
		"net.ipv6.fib_multipath_hash_fields",
		"net.netfilter.nf_conntrack_acct",
		"net.netfilter.nf_conntrack_timestamp",
	}
	snapshotConfKeys = []string{"rp_filter", "src_valid_mark", "arp_ignore", "arp_announce", "arp_filter"}
)

// snapshot renders the namespace's policy-routing (both families), nftables
// and relevant sysctl state as text, for "exactly as before" comparisons.
func snapshot(t testing.TB, ns string) string {
	t.Helper()
	var b strings.Builder
	for _, c := range [][]string{
		{"ip", "rule", "show"},
		{"ip", "route", "show", "table", "all"},
		{"ip", "-6", "rule", "show"},
		{"ip", "-6", "route", "show", "table", "all"},
		{"ip", "nexthop", "show"},
		{"nft", "list", "ruleset"},
	} {
		fmt.Fprintf(&b, "## %s\n%s", strings.Join(c, " "), run(t, ns, c...))
	}
	b.WriteString("## sysctl\n")
	var lines []string
	inNS(t, ns, func() error {
		for _, k := range snapshotSysctls {
			v, err := os.ReadFile(sysctlPath(k))
			if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(k, "net.netfilter.") {
				// nf_conntrack is not loaded yet; when it is, this
				// reads as the kernel default.
				v, err = []byte("0"), nil
			}
			if err != nil {
				return err
			}
			lines = append(lines, k+" = "+strings.TrimSpace(string(v)))
		}
		ents, err := os.ReadDir("/proc/sys/net/ipv4/conf")
		if err != nil {
			return err
		}
		var conf []string
		for _, e := range ents {
			for _, k := range snapshotConfKeys {
				key := "net.ipv4.conf." + e.Name() + "." + k
				v, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv4/conf", e.Name(), k))
				if err != nil {
					return err
				}
				conf = append(conf, key+" = "+strings.TrimSpace(string(v)))
			}
		}
		sort.Strings(conf)
		lines = append(lines, conf...)
		return nil
	})
	b.WriteString(strings.Join(lines, "\n"))
	b.WriteString("\n")
	return b.String()
}

// nftCounter reads the packet count of a named nft counter inside ns.
func nftCounter(t testing.TB, ns, family, table, counter string) int {
	t.Helper()
	out := run(t, ns, "nft", "list", "counter", family, table, counter)
	i := strings.Index(out, "packets ")
	if i < 0 {
		t.Fatalf("no packet count in:\n%s", out)
	}
	var n int
	if _, err := fmt.Sscan(out[i+len("packets "):], &n); err != nil {
		t.Fatalf("parse counter: %v\n%s", err, out)
	}
	return n
}
