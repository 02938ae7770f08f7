package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkIdle measures what `flowpin run` costs with 32 links and
// nothing happening: user+system CPU of the process over 20s, from
// /proc/PID/stat, as a share of one core. Probes run as configured (the
// default interval); notifications are the trigger for syncs and the
// backstop re-reads the kernel every 30s.
//
// The baseline, from the same daemon in the same run, is what re-reading
// the kernel every second (the old backstop) would cost on top of that:
// the cost of one sync that finds nothing to change, times one per second.
// It is measured two ways: the CPU ticks 20 triggered syncs took beyond
// idling, and the syncs' mean wall time from flowpin_sync_duration_seconds
// (a sync is netlink and nftables dumps in the daemon's own syscalls, so
// its wall time is close to its CPU time).
//
//	go test -run '^$' -bench Idle ./integration/
func BenchmarkIdle(b *testing.B) {
	const links = 32
	const window = 20 * time.Second
	for range b.N {
		l := newLab(b)
		router, isp := l.addNS("router"), l.addNS("isp")
		var cfg strings.Builder
		cfg.WriteString("links:\n")
		for i := range links {
			veth(b, router, fmt.Sprintf("wan%d", i), isp, fmt.Sprintf("cust%d", i))
			addAddr(b, router, fmt.Sprintf("wan%d", i), fmt.Sprintf("10.100.%d.2/24", i))
			addAddr(b, isp, fmt.Sprintf("cust%d", i), fmt.Sprintf("10.100.%d.1/24", i))
			fmt.Fprintf(&cfg, "  - {name: isp%d, interface: wan%d, gateway: 10.100.%d.1, weight: 1, nat: true}\n", i, i, i)
		}
		run(b, router, "ip", "link", "add", "lan", "type", "veth", "peer", "name", "lanpeer")
		linkUp(b, router, "lan")
		dm := startDaemon(b, router, cfg.String(), "--metrics", ":9108")
		// Syncs that change nothing, for the baseline: a route each in
		// main (not flowpin's) is a notification, hence a sync.
		pid := dm.cmd.Process.Pid
		time.Sleep(time.Second)
		t0, ticks0 := time.Now(), cpuTicks(b, pid)
		for i := range 20 {
			run(b, router, "ip", "route", "add", fmt.Sprintf("10.200.%d.0/24", i), "dev", "lan")
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(time.Second)
		busy, busyTicks := time.Since(t0), cpuTicks(b, pid)-ticks0
		body, err := scrape(b, router, "127.0.0.1:9108")
		if err != nil {
			b.Fatal(err)
		}
		n, sum := metric(body, "flowpin_sync_duration_seconds_count"), metric(body, "flowpin_sync_duration_seconds_sum")
		if n < 10 {
			b.Fatalf("only %v syncs for the baseline", n)
		}
		perSync := sum / n

		b.ResetTimer()
		idle := cpuShare(b, pid, window)
		b.StopTimer()
		body, err = scrape(b, router, "127.0.0.1:9108")
		if err != nil {
			b.Fatal(err)
		}
		// CPU per sync: what the triggered syncs cost beyond idling.
		cpuPerSync := (float64(busyTicks)/userHZ - idle*busy.Seconds()) / 20
		b.ReportMetric(100*idle, "%core-idle")
		b.ReportMetric(100*(idle+perSync), "%core-1s-resync-wall")
		b.ReportMetric(100*(idle+cpuPerSync), "%core-1s-resync-cpu")
		b.Logf("%d links, %v idle: %.2f%% of a core. Baseline, a full re-read every second on top: %.2f%% by sync wall time (%.2f ms per sync, mean of %v), %.2f%% by CPU ticks of 20 triggered syncs (%.2f ms each). Syncs during the idle window: %v",
			links, window, 100*idle, 100*(idle+perSync), 1000*perSync, n, 100*(idle+cpuPerSync), 1000*cpuPerSync, metric(body, "flowpin_sync_duration_seconds_count")-n)
	}
}
