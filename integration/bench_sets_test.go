package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	flowpinnft "flowpin/nft"
)

// bigSetFile writes n IPv4 /24s, every other one so that none merge, and
// 198.18.0.0/15 (the forwarding benchmark's destination) among them.
func bigSetFile(b testing.TB, n int) string {
	var sb strings.Builder
	sb.WriteString("# a country's list, more or less\n")
	for i := range n - 1 {
		j := 2 * i
		fmt.Fprintf(&sb, "%d.%d.%d.0/24\n", 20+j>>16, j>>8&0xff, j&0xff)
	}
	sb.WriteString("198.18.0.0/15\n")
	p := filepath.Join(b.TempDir(), "big.txt")
	if err := os.WriteFile(p, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

// applyMeasured runs flowpin apply in ns and returns its wall time and
// its peak resident memory.
func applyMeasured(b testing.TB, ns, cfg string) (time.Duration, int64) {
	cmd := exec.Command("ip", "netns", "exec", ns, flowpinBin, "apply", "-c", cfg)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		b.Fatalf("apply: %v\n%s", err, out)
	}
	// ip netns exec execs flowpin in place: the child's rusage is flowpin's.
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return took, ru.Maxrss << 10
}

func setsConfig(links int, extra string) string {
	var cfg strings.Builder
	cfg.WriteString("links:\n")
	for i := range links {
		fmt.Fprintf(&cfg, "  - {name: isp%d, interface: wan%d, gateway: 100.64.%d.1, nat: true}\n", i, i, i)
	}
	cfg.WriteString(extra)
	return cfg.String()
}

// BenchmarkSets: a 100k-prefix file set's load by apply (time and peak
// memory, beside an apply of the same router without it), and the rate
// of new flows a router forwards when a rule matches such a set, as a
// share of the same router whose rule matches the same destination by a
// CIDR, measured in one run (interleaved rounds, median of five).
//
//	go test -run '^$' -bench Sets ./integration/
func BenchmarkSets(b *testing.B) {
	if _, err := exec.LookPath("trafgen"); err != nil {
		b.Fatal("trafgen not found: make deps installs netsniff-ng")
	}
	if flowpinBin == "" {
		b.Fatal("flowpin binary not built")
	}
	setsOnce.Do(func() { setsBench(b) })
}

var setsOnce sync.Once

func setsBench(b *testing.B) {
	big := bigSetFile(b, 100_000)
	noSet := setsConfig(2, "rules:\n  - {name: dst, dst: [198.18.0.0/15], policy: isp0}\n")
	withSet := setsConfig(2, fmt.Sprintf("sets:\n  - {name: big, files: [%s]}\nrules:\n  - {name: dst, dst_set: big, policy: isp0}\n", big))
	var loads []string
	var cases []fwdCase
	for _, c := range []struct{ name, cfg string }{{"rule by CIDR", noSet}, {"rule by 100k set", withSet}} {
		cases = append(cases, fwdRouter(b, c.name, 2, func(router string) {
			took, rss := applyMeasured(b, router, writeFile(b, "sets.yaml", c.cfg))
			loads = append(loads, fmt.Sprintf("%-18s first apply %6.0f ms, peak RSS %4d MiB", c.name, took.Seconds()*1000, rss>>20))
			if strings.Contains(c.name, "100k") {
				b.ReportMetric(took.Seconds(), "load_100k_s")
				b.ReportMetric(float64(rss>>20), "load_100k_MiB")
				n := run(b, router, "nft", "list", "set", "inet", "flowpin", "set4_big")
				if c := strings.Count(n, "/24"); c != 100_000-1 {
					b.Fatalf("the kernel's set holds %d of the file's /24s", c)
				}
				// The same config again, the set unchanged: nothing to write.
				again, _ := applyMeasured(b, router, writeFile(b, "sets.yaml", c.cfg))
				loads = append(loads, fmt.Sprintf("%-18s same apply  %6.0f ms", c.name, again.Seconds()*1000))
			}
		}))
	}
	const rounds = 5
	rates, perCPU := map[string][]float64{}, map[string][]float64{}
	for range rounds {
		for i := range cases {
			c := &cases[i]
			routerNS := strings.TrimSuffix(c.lan, "-lan") + "-router"
			mac := func(ns, dev string) string {
				return strings.TrimSpace(run(b, ns, "cat", "/sys/class/net/"+dev+"/address"))
			}
			pps, cpu := c.measure(b, trafgenConf(mac(routerNS, "lan"), mac(c.lan, "lan0"), true), 1500*time.Millisecond)
			rates[c.name] = append(rates[c.name], pps)
			perCPU[c.name] = append(perCPU[c.name], cpu)
			run(b, routerNS, "conntrack", "-F")
		}
	}
	median := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	base, set := median(rates[cases[0].name]), median(rates[cases[1].name])
	cpuBase, cpuSet := median(perCPU[cases[0].name]), median(perCPU[cases[1].name])
	b.ReportMetric(set/base, "new_flows_set/cidr")
	b.ReportMetric(cpuSet/cpuBase, "new_flows_set/cidr_per_cpu")
	fmt.Printf("\n%s\nnew flows forwarded, packets/s (median of %d): rule by CIDR %.0f, rule by 100k set %.0f: ratio %.2f\n"+
		"per second of the sender's CPU (less moved by a neighbour's load): rule by CIDR %.0f, rule by 100k set %.0f: ratio %.2f\n",
		strings.Join(loads, "\n"), rounds, base, set, set/base, cpuBase, cpuSet, cpuSet/cpuBase)
}

// BenchmarkSetMetricsScrape: a scrape of the daemon's /metrics on a
// router with a 100k-range file set and a domain set, beside what each
// scrape cost before: every set's elements listed from the kernel with
// the nftables library's GetSetElements (what nft.Conn.SetCounts did, at
// each scrape), and beside nft.Conn.SetCounts now (status, verify),
// timed in the router's namespace in the same run.
//
//	go test -run '^$' -bench SetMetricsScrape ./integration/
func BenchmarkSetMetricsScrape(b *testing.B) {
	if flowpinBin == "" {
		b.Fatal("flowpin binary not built")
	}
	scrapeOnce.Do(func() { scrapeBench(b) })
}

var scrapeOnce sync.Once

func scrapeBench(b *testing.B) {
	l := newLab(b)
	router, isp := l.addNS("router"), l.addNS("isp")
	for i := range 2 {
		veth(b, router, fmt.Sprintf("wan%d", i), isp, fmt.Sprintf("c%d", i))
		addAddr(b, router, fmt.Sprintf("wan%d", i), fmt.Sprintf("100.64.%d.2/24", i))
		addAddr(b, isp, fmt.Sprintf("c%d", i), fmt.Sprintf("100.64.%d.1/24", i))
	}
	big := bigSetFile(b, 100_000)
	cfg := setsConfig(2, fmt.Sprintf("sets:\n  - {name: big, files: [%s]}\n  - {name: video, domains: [video.example]}\nrules:\n  - {name: dst, dst_set: big, policy: isp0}\n", big))
	applyMeasured(b, router, writeFile(b, "scrape.yaml", cfg))
	nft(b, router, "add element inet flowpin set4_video { 203.0.113.10 }\n")
	startDaemon(b, router, cfg, "--metrics", ":9108")
	deadline := time.Now().Add(10 * time.Second)
	for {
		body, err := scrape(b, router, "127.0.0.1:9108")
		if err == nil && metric(body, `flowpin_set_elements{family="ipv4",kind="file",set="big"}`) == 100_000 {
			if v := metric(body, `flowpin_set_elements{family="ipv4",kind="domains",set="video"}`); v != 1 {
				b.Fatalf("the domain set's count is %v, want 1", v)
			}
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("no scrape with the file set's 100k ranges: %v\n%s", err, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	names := []string{"set4_big", "set6_big", "set4_video", "set6_video"}
	// The collector's count before: the library lists each set.
	libraryCount := func() error {
		nc, err := nftables.New(nftables.AsLasting())
		if err != nil {
			return err
		}
		defer nc.CloseLasting()
		t := &nftables.Table{Name: flowpinnft.TableName, Family: nftables.TableFamilyINet}
		n := 0
		for _, name := range names {
			st, err := nc.GetSetByName(t, name)
			if err != nil {
				return err
			}
			es, err := nc.GetSetElements(st)
			if err != nil {
				return err
			}
			for _, e := range es {
				if name == "set4_big" && !e.IntervalEnd {
					n++
				}
			}
		}
		if n != 100_000 {
			return fmt.Errorf("the library counted %d", n)
		}
		return nil
	}
	const rounds = 5
	var now, before, counts []time.Duration
	for range rounds {
		start := time.Now()
		if _, err := scrape(b, router, "127.0.0.1:9108"); err != nil {
			b.Fatal(err)
		}
		now = append(now, time.Since(start))
		start = time.Now()
		if err := nsDo(router, libraryCount); err != nil {
			b.Fatal(err)
		}
		before = append(before, time.Since(start))
		start = time.Now()
		if err := nsDo(router, func() error {
			c, err := (&flowpinnft.Conn{}).SetCounts(names)
			if err == nil && c["set4_big"] != 100_000 {
				err = fmt.Errorf("counted %v", c)
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
		counts = append(counts, time.Since(start))
	}
	median := func(v []time.Duration) time.Duration {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	b.ReportMetric(float64(median(now).Microseconds())/1000, "scrape_ms")
	b.ReportMetric(float64(median(before).Microseconds())/1000, "sets_listed_ms")
	b.ReportMetric(float64(median(counts).Microseconds())/1000, "setcounts_ms")
	fmt.Printf("\n/metrics with a 100k-range file set (median of %d): a scrape now %v (%v); listing every set's elements with the library, as each scrape did before, %v (%v); nft.Conn.SetCounts now (status, verify) %v (%v)\n",
		rounds, median(now).Round(100*time.Microsecond), now, median(before).Round(100*time.Microsecond), before, median(counts).Round(100*time.Microsecond), counts)
}
