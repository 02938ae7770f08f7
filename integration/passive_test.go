package integration

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowChecks probes the far host every 5 s with fall 3: 15 s to notice
// a silent failure by probes alone.
func slowChecks(d *dualWAN) string {
	slow := fmt.Sprintf("{targets: [%s], interval: 5s, timeout: 1s, fall: 3, rise: 2}", d.Service)
	return checkedLinks(d, d.GW2, 0, slow, slow)
}

// newFlow is one connection attempt of a flowStream.
type newFlow struct {
	start  time.Time
	took   time.Duration
	failed bool
	target string
}

// flowStream opens a new TCP connection every `every` from the LAN, to
// targets in turn, each waiting up to 3 s for its SYN-ACK, and records
// how each went.
type flowStream struct {
	mu    sync.Mutex
	flows []newFlow
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startFlowStream(t testing.TB, d *dualWAN, every time.Duration, targets ...string) *flowStream {
	s := &flowStream{stop: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			target := targets[i%len(targets)]
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				f := newFlow{start: time.Now(), target: target}
				c, err := dialIn(d.LAN, target, nil, 3*time.Second)
				f.took = time.Since(f.start)
				f.failed = err != nil
				if c != nil {
					c.Close()
				}
				s.mu.Lock()
				s.flows = append(s.flows, f)
				s.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(s.end)
	return s
}

// end stops starting flows and waits for those under way.
func (s *flowStream) end() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
}

func (s *flowStream) result() []newFlow {
	s.end()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.flows)
	slices.SortFunc(out, func(a, b newFlow) int { return a.start.Compare(b.start) })
	return out
}

// costly: a flow that failed or whose SYN had to be sent again (the first
// retransmission is after 1 s, so such a flow takes 1 s at least). Below
// that is the machine's own delay (namespace switch, scheduling), which
// load stretches: 500 ms was a bound on that, not on the link.
func (f newFlow) costly() bool { return f.failed || f.took > 900*time.Millisecond }

// With probes every 5 s (fall 3), a silent upstream death stops costing
// new flows (one every 50 ms) within about a second: the link's own new
// flows go unanswered, a burst of probes confirms, the link is out.
func TestPassiveFailover(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	dm := startDaemon(t, d.Router, slowChecks(d), "--metrics", ":9108")
	stream := startFlowStream(t, d, 50*time.Millisecond, target)
	time.Sleep(3 * time.Second) // a baseline of answered flows on both links

	death := time.Now()
	blackhole(t, d.ISP2)
	l := dm.waitState(t, "isp2", "down", 5*time.Second)
	down := time.Since(death)
	time.Sleep(3 * time.Second)
	flows := stream.result()

	var lastCostly time.Duration
	costly, after := 0, 0
	for _, f := range flows {
		if f.start.Before(death) {
			if f.costly() {
				t.Errorf("a flow before the death cost %v (failed %v)", f.took, f.failed)
			}
			continue
		}
		after++
		if f.costly() {
			costly++
			lastCostly = max(lastCostly, f.start.Sub(death))
		}
	}
	fmt.Printf("passive failover: isp2 down %v after a silent death (probes every 5 s, fall 3); the last new flow that cost anything started %v after it; %d of %d new flows since cost (failed or slow)\n",
		down.Round(time.Millisecond), lastCostly.Round(time.Millisecond), costly, after)
	if !strings.Contains(l.Reason, "burst probes lost to "+d.Service) || !strings.Contains(l.Reason, "new flows went unanswered") {
		t.Errorf("isp2 down for %q, want the passive detection", l.Reason)
	}
	// Generous: by probes alone it would be 10-15 s.
	if lastCostly > 5*time.Second {
		t.Errorf("new flows cost for %v after the death", lastCostly)
	}
	if s := dm.linkStates(t)["isp1"]; s.State != "up" {
		t.Errorf("isp1 is %q", s.State)
	}
}

// One far server dies; it is reached over every link, so its unanswered
// flows raise every link's share alike: no link goes down.
func TestPassiveDeadServerControl(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	const dead = "203.0.113.20"
	addAddr(t, d.Far, "lo", dead+"/32")
	live := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	deadTarget := fmt.Sprintf("%s:%d", dead, srv.Port())
	// Fast probes: a link wrongly taken down would not be hidden by slow
	// ones, and a false suspicion shows as a burst in the metrics.
	dm := startDaemon(t, d.Router, checkedConfig(d, d.GW2), "--metrics", ":9108")
	stream := startFlowStream(t, d, 50*time.Millisecond, live, deadTarget)
	time.Sleep(2 * time.Second) // both answer: the baseline
	nft(t, d.Far, `table inet dead {
	chain in {
		type filter hook input priority 0; policy accept;
		ip daddr `+dead+` drop
	}
}
`)
	time.Sleep(4 * time.Second)
	flows := stream.result()
	unanswered := 0
	for _, f := range flows {
		if f.target == deadTarget && f.failed {
			unanswered++
		}
	}
	if unanswered < 20 {
		t.Fatalf("only %d flows to the dead server went unanswered: the control did not happen", unanswered)
	}
	body, err := scrape(t, d.Router, "127.0.0.1:9108")
	if err != nil {
		t.Fatal(err)
	}
	for _, link := range []string{"isp1", "isp2"} {
		if s := dm.linkStates(t)[link]; s.State != "up" {
			t.Errorf("%s is %q (%s)", link, s.State, s.Reason)
		}
		if v := metric(body, `flowpin_link_up{family="ipv4",link="`+link+`"}`); v != 1 {
			t.Errorf("flowpin_link_up of %s: %v", link, v)
		}
		if v := metric(body, `flowpin_link_state_changes_total{family="ipv4",link="`+link+`"}`); v > 0 {
			t.Errorf("%s changed state %v times", link, v)
		}
	}
	fmt.Printf("dead-server control: %d flows to the dead server unanswered over both links; suspicions isp1 %v, isp2 %v; bursts cleared isp1 %v, isp2 %v; no link went down\n",
		unanswered,
		max(0, metric(body, `flowpin_link_suspicions_total{family="ipv4",link="isp1"}`)), max(0, metric(body, `flowpin_link_suspicions_total{family="ipv4",link="isp2"}`)),
		max(0, metric(body, `flowpin_burst_probes_total{family="ipv4",link="isp1",outcome="cleared"}`)), max(0, metric(body, `flowpin_burst_probes_total{family="ipv4",link="isp2",outcome="cleared"}`)))
}

// A link without traffic is judged by its probes alone: a silent death
// takes it down after fall rounds, and no suspicion came first. The
// checks are the defaults (a round every 300 ms, each waiting at most
// until the next, fall 3): down within about 1.2 s.
func TestPassiveQuietLinkJudgedByProbes(t *testing.T) {
	d := newDualWAN(t)
	cfg := fmt.Sprintf(`links:
  - {name: isp1, interface: wan1, gateway: %s, weight: 1, nat: true, check: {targets: [%s]}}
  - {name: isp2, interface: wan2, gateway: %s, weight: 1, nat: true, check: {targets: [%s]}}
`, d.GW1, d.Service, d.GW2, d.Service)
	dm := startDaemon(t, d.Router, cfg, "--metrics", ":9108")
	time.Sleep(time.Second)
	death := time.Now()
	blackhole(t, d.ISP2)
	l := dm.waitState(t, "isp2", "down", 5*time.Second)
	took := time.Since(death)
	fmt.Printf("probes alone, default checks: a quiet isp2 is down %v after a silent death (%s)\n", took.Round(time.Millisecond), l.Reason)
	if !strings.Contains(l.Reason, "probes lost to "+d.Service) || !strings.Contains(l.Reason, "3 rounds") {
		t.Errorf("reason %q: want the probes', after 3 rounds", l.Reason)
	}
	// 300 ms x 3 and the round under way; generous, to be able to fail.
	if took > 2*time.Second {
		t.Errorf("down %v after the death, want about 1.2 s", took)
	}
	body, err := scrape(t, d.Router, "127.0.0.1:9108")
	if err != nil {
		t.Fatal(err)
	}
	if v := metric(body, `flowpin_link_up{family="ipv4",link="isp2"}`); v != 0 {
		t.Errorf("flowpin_link_up of isp2: %v", v)
	}
	if v := metric(body, `flowpin_link_suspicions_total{family="ipv4",link="isp2"}`); v > 0 {
		t.Errorf("a quiet link was suspected %v times", v)
	}
}
