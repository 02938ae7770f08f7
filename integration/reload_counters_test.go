package integration

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ruleBytes reads the byte counter of the rule of flowpin's chain whose
// comment begins with why (e.g. "restore isp1"), as the kernel has it.
func ruleBytes(t testing.TB, ns, chain, why string) uint64 {
	t.Helper()
	out := run(t, ns, "nft", "list", "chain", "inet", "flowpin", chain)
	re := regexp.MustCompile(`counter packets \d+ bytes (\d+).*comment "` + regexp.QuoteMeta(why) + ` #`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no rule %q in chain %s:\n%s", why, chain, out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// TestReloadKeepsLinkBytes: a reload that adds a traffic rule rewrites
// flowpin's table, and every rule's counter starts again in the kernel;
// flowpin_link_bytes_total and _packets_total, the rules' hit counters and
// status's rule hits do not go backwards, and go on counting.
func TestReloadKeepsLinkBytes(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := hostPort(d.Service, srv.Port())
	rule := fmt.Sprintf("rules:\n  - {name: echo, proto: tcp, dst_ports: [%d], policy: default}\n", srv.Port())
	cfg := checkedConfig(d, d.GW2) + rule
	dm := startDaemon(t, d.Router, cfg, "--metrics", ":9108")
	held := startLongLived(t, d.LAN, target, srv, 12, dialOpts{})
	defer held.stop()
	if r := connectN(t, d.LAN, target, srv, 20, dialOpts{}); r.Failed != 0 {
		t.Fatalf("%d of 20 connections failed", r.Failed)
	}
	time.Sleep(time.Second)

	type reading struct {
		series map[string]float64
		hits   uint64
	}
	read := func() reading {
		t.Helper()
		body, err := scrape(t, d.Router, "127.0.0.1:9108")
		if err != nil {
			t.Fatal(err)
		}
		r := reading{series: map[string]float64{}}
		for _, l := range []string{"isp1", "isp2"} {
			for _, dir := range []string{"out", "in"} {
				for _, m := range []string{"flowpin_link_bytes_total", "flowpin_link_packets_total"} {
					s := fmt.Sprintf(`%s{direction="%s",link="%s"}`, m, dir, l)
					r.series[s] = metric(body, s)
				}
			}
		}
		r.series["hits"] = metric(body, `flowpin_rule_hits_total{policy="default",rule="echo"}`)
		out, err := flowpin(t, d.Router, "status", "--json")
		if err != nil {
			t.Fatalf("status: %v\n%s", err, out)
		}
		var st struct {
			Rules []struct {
				Name string `json:"name"`
				Hits uint64 `json:"hits"`
			} `json:"rules"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Rules) == 0 {
			t.Fatalf("status --json rules: %v\n%s", err, out)
		}
		r.hits = st.Rules[0].Hits
		return r
	}
	before := read()
	kernelBefore := ruleBytes(t, d.Router, "restore_isp1", "restore isp1")
	for s, v := range before.series {
		if v <= 0 {
			t.Fatalf("%s is %v before the reload: no traffic counted", s, v)
		}
	}

	// A second rule: the table is written again.
	cfg2 := cfg + fmt.Sprintf("  - {name: other, proto: udp, dst_ports: [%d], policy: isp1}\n", srv.Port()+1)
	if out, err := dm.reload(t, cfg2, false); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	after := read()
	kernelAfter := ruleBytes(t, d.Router, "restore_isp1", "restore isp1")
	t.Logf("kernel counter of restore isp1: %d bytes before the reload, %d after (rewritten)", kernelBefore, kernelAfter)
	if kernelAfter >= kernelBefore {
		t.Fatalf("the reload did not rewrite the table's counters (%d then %d): the test proves nothing", kernelBefore, kernelAfter)
	}
	for s, v := range before.series {
		t.Logf("%s: %v before the reload, %v after", s, v, after.series[s])
		if after.series[s] < v {
			t.Errorf("%s went backwards across the reload: %v then %v", s, v, after.series[s])
		}
	}
	if after.hits < before.hits {
		t.Errorf("status rule hits went backwards: %d then %d", before.hits, after.hits)
	}

	// And they go on counting.
	if r := connectN(t, d.LAN, target, srv, 10, dialOpts{}); r.Failed != 0 {
		t.Fatalf("%d of 10 connections failed after the reload", r.Failed)
	}
	time.Sleep(500 * time.Millisecond)
	later := read()
	for _, s := range []string{`flowpin_link_bytes_total{direction="out",link="isp1"}`, `flowpin_link_bytes_total{direction="in",link="isp2"}`, "hits"} {
		if later.series[s] <= after.series[s] {
			t.Errorf("%s did not go on counting: %v then %v", s, after.series[s], later.series[s])
		}
	}
	if later.hits < before.hits+10 {
		t.Errorf("status rule hits %d after 10 more connections, had %d before the reload", later.hits, before.hits)
	}
	if !strings.Contains(dm.logs(), "reloaded the config") {
		t.Error("no reload in the log")
	}
}
