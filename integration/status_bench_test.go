package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// statusBenchFlows is how many fake flows BenchmarkStatus seeds; override
// with FLOWPIN_BENCH_FLOWS. The host-wide nf_conntrack_max (262144 here)
// bounds it.
func statusBenchFlows() int {
	if v, err := strconv.Atoi(os.Getenv("FLOWPIN_BENCH_FLOWS")); err == nil && v > 0 {
		return v
	}
	return 200_000
}

// seedConntrack creates n fake flows in ns with conntrack.Create: 45% on
// each link mark, 10% unmarked. Two connections, one per core.
func seedConntrack(tb testing.TB, ns string, n int) {
	tb.Helper()
	seedConntrackRange(tb, ns, 0, n, 2)
}

// seedConntrackRange creates the fake flows from to to-1 of
// seedConntrack's series, on workers connections.
func seedConntrackRange(tb testing.TB, ns string, from, to, workers int) {
	tb.Helper()
	if err := mustOwn(ns); err != nil {
		tb.Fatal(err)
	}
	h, err := netns.GetFromName(ns)
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Close()
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := conntrack.Dial(&netlink.Config{NetNS: int(h)})
			if err != nil {
				errs[w] = err
				return
			}
			defer c.Close()
			for i := from + w; i < to; i += workers {
				mark := uint32(0x100)
				switch i % 20 {
				case 0, 1:
					mark = 0
				case 2, 3, 4, 5, 6, 7, 8, 9, 10:
					mark = 0x200
				}
				// 10.x.y.z:port -> 203.0.113.10:443, unique per i.
				src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				// A long timeout: nothing expires while the benchmark runs;
				// deleting the namespace frees them all.
				f := conntrack.NewFlow(17, 0, src, netip.MustParseAddr("203.0.113.10"), uint16(1024+i%50000), 443, 3600, mark)
				if err := c.Create(f); err != nil {
					errs[w] = fmt.Errorf("create flow %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// childRun is one timed run of a command inside a namespace.
type childRun struct {
	wall time.Duration
	// peakRSS is the VmHWM (KiB) of the program that ran last in the
	// child (flowpin itself after `ip netns exec` execs it), read just
	// before it exited.
	peakRSS int64
}

// runMeasured runs args inside ns via `ip netns exec` with output to
// /dev/null, and measures it.
//
// Why not ProcessState.SysUsage().Maxrss: Go starts children with
// CLONE_VM|CLONE_VFORK, and execve records the high-water RSS of the mm it
// leaves into the new program's ru_maxrss. That mm is the test process's
// own, so Maxrss reports at least the test binary's peak (14 MiB here for
// every command, flowpin or not). VmHWM belongs to the new mm only, so the
// child is traced just far enough to stop at its exit (PTRACE_O_TRACEEXIT)
// and read it; the traced program otherwise runs at full speed.
func runMeasured(tb testing.TB, ns string, args ...string) childRun {
	tb.Helper()
	if err := mustOwn(ns); err != nil {
		tb.Fatal(err)
	}
	// Every ptrace request must come from the thread that started the
	// tracee.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer devnull.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	// Files, not buffers: os/exec then starts no copying goroutines, and
	// the child can be reaped with wait4 below instead of cmd.Wait.
	cmd.Stdout, cmd.Stderr = devnull, devnull
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	defer cmd.Process.Release()
	pid := cmd.Process.Pid
	var ws syscall.WaitStatus
	// The first stop is the SIGTRAP after the exec of ip.
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || !ws.Stopped() {
		tb.Fatalf("%v: no initial ptrace stop: %v (status %v)", args, err, ws)
	}
	if err := syscall.PtraceSetOptions(pid, syscall.PTRACE_O_TRACEEXIT|syscall.PTRACE_O_TRACEEXEC|unix.PTRACE_O_EXITKILL); err != nil {
		tb.Fatal(err)
	}
	var hwm int64
	sig := 0
	for {
		if err := syscall.PtraceCont(pid, sig); err != nil {
			tb.Fatal(err)
		}
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
			tb.Fatal(err)
		}
		if ws.Exited() || ws.Signaled() {
			break
		}
		sig = 0
		switch {
		case ws.StopSignal() == syscall.SIGTRAP && ws.TrapCause() == syscall.PTRACE_EVENT_EXIT:
			hwm = vmHWM(tb, pid)
		case ws.StopSignal() == syscall.SIGTRAP && ws.TrapCause() == syscall.PTRACE_EVENT_EXEC:
		default:
			sig = int(ws.StopSignal()) // a signal for the tracee: deliver it
		}
	}
	wall := time.Since(start)
	if !ws.Exited() || ws.ExitStatus() != 0 {
		out, _ := tryRun(ns, args...)
		tb.Fatalf("%v: %v\n%s", args, ws, out)
	}
	return childRun{wall: wall, peakRSS: hwm}
}

func vmHWM(tb testing.TB, pid int) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatalf("parse VmHWM %q: %v", v, err)
			}
			return kib
		}
	}
	tb.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// BenchmarkStatus seeds 200k flows in a throwaway namespace where flowpin
// is applied and times, in the same run:
//   - flowpin status (the summary), and with --json;
//   - flowpin status --flows --limit 20;
//   - each paired with the baseline, conntrack -L -o extended | awk
//     counting flows per mark, run right after it.
//
// It reports wall times, the speed-up (median of the paired ratios) and
// flowpin's peak RSS, and prints them as a table. Nothing is asserted on
// time.
//
//	go test ./integration/ -run '^$' -bench Status -benchtime 5x -timeout 30m
func BenchmarkStatus(b *testing.B) {
	if flowpinBin == "" {
		b.Skip("flowpin binary not built (FLOWPIN_SKIP_BUILD=1 or not root)")
	}
	if _, err := exec.LookPath("conntrack"); err != nil {
		b.Skip("conntrack(8) is not installed: it is the baseline (apt-get install conntrack)")
	}
	n := statusBenchFlows()
	l := newLab(b)
	router, peer := l.addNS("router"), l.addNS("peer")
	for i, dev := range []string{"wan1", "wan2"} {
		veth(b, router, dev, peer, "p"+dev)
		addAddr(b, router, dev, fmt.Sprintf("100.64.%d.2/24", i+1))
		addAddr(b, peer, "p"+dev, fmt.Sprintf("100.64.%d.1/24", i+1))
	}
	cfg := writeFile(b, "flowpin.yaml", `links:
  - {name: isp1, interface: wan1, gateway: 100.64.1.1, weight: 1, nat: true}
  - {name: isp2, interface: wan2, gateway: 100.64.2.1, weight: 1, nat: true}
`)
	if out, err := tryRun(router, flowpinBin, "apply", "-c", cfg); err != nil {
		b.Fatalf("flowpin apply: %v\n%s", err, out)
	}
	start := time.Now()
	seedConntrack(b, router, n)
	b.Logf("seeded %d flows in %v", n, time.Since(start).Round(time.Millisecond))

	// The figures only mean something if every tool saw every flow.
	var st struct {
		Total struct{ Flows int } `json:"total"`
	}
	out, err := tryRun(router, flowpinBin, "status", "--json", "-c", cfg)
	if err != nil {
		b.Fatal(err, out)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		b.Fatal(err)
	}
	if st.Total.Flows != n {
		b.Fatalf("flowpin status counts %d flows, %d were seeded", st.Total.Flows, n)
	}

	const awk = `{ for (i = 1; i <= NF; i++) if ($i ~ /^mark=/) n[$i]++ } END { for (m in n) print m, n[m] }`
	baseline := []string{"sh", "-c", "conntrack -L -o extended 2>/dev/null | awk '" + awk + "'"}
	cases := []struct {
		name string
		args []string
	}{
		{"status", []string{flowpinBin, "status", "-c", cfg}},
		{"status-json", []string{flowpinBin, "status", "--json", "-c", cfg}},
		{"flows-limit-20", []string{flowpinBin, "status", "--flows", "--limit", "20", "-c", cfg}},
	}
	type figure struct {
		median, baseMedian time.Duration
		speedup            float64 // median of the paired ratios
		maxRSS             int64
	}
	medianOf := func(ds []time.Duration) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	figures := map[string]figure{}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var walls, bases []time.Duration
			var ratios []float64
			var rss int64
			for range b.N {
				r := runMeasured(b, router, c.args...)
				// The baseline right after, untimed, so each ratio compares
				// two runs under the same load (other work on the machine
				// comes and goes).
				b.StopTimer()
				base := runMeasured(b, router, baseline...)
				b.StartTimer()
				walls, bases = append(walls, r.wall), append(bases, base.wall)
				ratios = append(ratios, float64(base.wall)/float64(r.wall))
				rss = max(rss, r.peakRSS)
			}
			slices.Sort(ratios)
			f := figure{median: medianOf(walls), baseMedian: medianOf(bases), speedup: ratios[len(ratios)/2], maxRSS: rss}
			figures[c.name] = f
			b.ReportMetric(float64(f.median.Microseconds())/1000, "median-ms")
			b.ReportMetric(float64(f.baseMedian.Microseconds())/1000, "conntrack-awk-ms")
			b.ReportMetric(f.speedup, "x-faster")
			b.ReportMetric(float64(rss)/1024, "peak-RSS-MiB")
		})
	}
	var tbl strings.Builder
	fmt.Fprintf(&tbl, "BenchmarkStatus: %d flows, %d CPUs. Medians of paired runs against conntrack -L -o extended | awk (per-mark count); peak RSS is flowpin's VmHWM\n", n, runtime.NumCPU())
	fmt.Fprintf(&tbl, "  %-16s %10s %16s %9s %10s\n", "case", "flowpin", "conntrack|awk", "speed-up", "peak RSS")
	for _, c := range cases {
		f, ok := figures[c.name]
		if !ok {
			continue // filtered out by -bench
		}
		fmt.Fprintf(&tbl, "  %-16s %7.0f ms %13.0f ms %8.2fx %6.1f MiB\n", c.name,
			float64(f.median.Microseconds())/1000, float64(f.baseMedian.Microseconds())/1000, f.speedup, float64(f.maxRSS)/1024)
	}
	// Printed, not logged: the table is the point of the run, -v or not.
	fmt.Print(tbl.String())
}

// procStatusKiB reads a field (VmRSS, VmHWM) of /proc/PID/status in KiB.
func procStatusKiB(tb testing.TB, pid int, field string) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatalf("parse %s %q: %v", field, v, err)
			}
			return kib
		}
	}
	tb.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// metricSum adds up every sample of a metric.
func metricSum(body, name string) float64 {
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// BenchmarkStatusDaemon: 200k fake flows, half created before the daemon
// starts and half while it runs. It prints, from one run:
//   - flowpin status through the daemon and a metrics scrape, against
//     flowpin status without a daemon (the daemon stopped), as ratios of
//     medians;
//   - the daemon's flow count against conntrack -C;
//   - the daemon's RSS (VmRSS, VmHWM);
//   - the rate of new flows the daemon kept up with: the second half is
//     created as fast as 4 connections can, and the rate is the flows
//     over the time until the daemon's count caught up, with the event
//     losses that took (0: it kept up by events alone).
//
// Nothing is asserted on time.
//
//	go test ./integration/ -run '^$' -bench StatusDaemon -benchtime 5x
func BenchmarkStatusDaemon(b *testing.B) {
	if flowpinBin == "" {
		b.Skip("flowpin binary not built (FLOWPIN_SKIP_BUILD=1 or not root)")
	}
	if _, err := exec.LookPath("conntrack"); err != nil {
		b.Skip("conntrack(8) is not installed (apt-get install conntrack)")
	}
	n := statusBenchFlows()
	l := newLab(b)
	router, peer := l.addNS("router"), l.addNS("peer")
	for i, dev := range []string{"wan1", "wan2"} {
		veth(b, router, dev, peer, "p"+dev)
		addAddr(b, router, dev, fmt.Sprintf("100.64.%d.2/24", i+1))
		addAddr(b, peer, "p"+dev, fmt.Sprintf("100.64.%d.1/24", i+1))
	}
	// Probes every 10s: the daemon's own flows do not move the figures.
	cfg := `links:
  - {name: isp1, interface: wan1, gateway: 100.64.1.1, weight: 1, nat: true, check: {interval: 10s, timeout: 1s}}
  - {name: isp2, interface: wan2, gateway: 100.64.2.1, weight: 1, nat: true, check: {interval: 10s, timeout: 1s}}
`
	cfgPath := writeFile(b, "flowpin.yaml", cfg)
	if out, err := tryRun(router, flowpinBin, "apply", "-c", cfgPath); err != nil {
		b.Fatalf("flowpin apply: %v\n%s", err, out)
	}
	seedConntrackRange(b, router, 0, n/2, 2)

	dm := startDaemon(b, router, cfg, "--metrics", ":9108")
	pid := dm.cmd.Process.Pid
	daemonFlows := func() float64 {
		body, err := scrape(b, router, "127.0.0.1:9108")
		if err != nil || metric(body, "flowpin_flow_counts_ready") != 1 {
			return -1
		}
		return metricSum(body, "flowpin_link_flows")
	}
	for daemonFlows() < float64(n/2) {
		time.Sleep(50 * time.Millisecond)
	}
	body, _ := scrape(b, router, "127.0.0.1:9108")
	lossesBefore := metric(body, "flowpin_conntrack_event_losses_total")

	// The second half, as fast as it goes, while the daemon follows.
	start := time.Now()
	seedConntrackRange(b, router, n/2, n, 4)
	seeded := time.Since(start)
	for daemonFlows() < float64(n) {
		time.Sleep(5 * time.Millisecond)
	}
	caughtUp := time.Since(start)
	body, _ = scrape(b, router, "127.0.0.1:9108")
	losses := metric(body, "flowpin_conntrack_event_losses_total") - lossesBefore

	kernel := conntrackCount(b, router)
	counted := int64(daemonFlows())
	rss, hwm := procStatusKiB(b, pid, "VmRSS"), procStatusKiB(b, pid, "VmHWM")

	medianOf := func(ds []time.Duration) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	var viaDaemon, scrapes, direct []time.Duration
	for range b.N {
		viaDaemon = append(viaDaemon, runMeasured(b, router, flowpinBin, "status").wall)
		t0 := time.Now()
		if _, err := scrape(b, router, "127.0.0.1:9108"); err != nil {
			b.Fatal(err)
		}
		scrapes = append(scrapes, time.Since(t0))
	}
	// The daemon's RSS after serving, too.
	hwm = max(hwm, procStatusKiB(b, pid, "VmHWM"))
	if _, err := dm.stop(); err != nil {
		b.Fatal(err)
	}
	for range b.N {
		direct = append(direct, runMeasured(b, router, flowpinBin, "status", "-c", cfgPath).wall)
	}
	md, ms, mx := medianOf(viaDaemon), medianOf(scrapes), medianOf(direct)
	ms2 := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms2(md), "daemon-status-ms")
	b.ReportMetric(ms2(ms), "scrape-ms")
	b.ReportMetric(ms2(mx), "direct-status-ms")
	b.ReportMetric(float64(hwm)/1024, "daemon-HWM-MiB")

	var tbl strings.Builder
	fmt.Fprintf(&tbl, "BenchmarkStatusDaemon: %d flows (%d before the daemon started, %d after), %d CPUs, medians of %d runs\n", n, n/2, n-n/2, runtime.NumCPU(), b.N)
	fmt.Fprintf(&tbl, "  %-34s %9.1f ms  (%.1fx faster)\n", "flowpin status through the daemon", ms2(md), float64(mx)/float64(md))
	fmt.Fprintf(&tbl, "  %-34s %9.1f ms  (%.1fx faster)\n", "metrics scrape", ms2(ms), float64(mx)/float64(ms))
	fmt.Fprintf(&tbl, "  %-34s %9.1f ms  (baseline)\n", "flowpin status without a daemon", ms2(mx))
	fmt.Fprintf(&tbl, "  counts: daemon %d, conntrack -C %d (off by %d, %.3f%%)\n", counted, kernel, counted-kernel, 100*float64(abs64(counted-kernel))/float64(kernel))
	fmt.Fprintf(&tbl, "  daemon memory: VmRSS %.1f MiB, VmHWM %.1f MiB\n", float64(rss)/1024, float64(hwm)/1024)
	fmt.Fprintf(&tbl, "  events: %d new flows created in %v (%.0f/s); the daemon caught up after %v: %.0f flows/s kept up, %v event losses\n",
		n-n/2, seeded.Round(time.Millisecond), float64(n-n/2)/seeded.Seconds(), caughtUp.Round(time.Millisecond), float64(n-n/2)/caughtUp.Seconds(), losses)
	fmt.Print(tbl.String())
}
