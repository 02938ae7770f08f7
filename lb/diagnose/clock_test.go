package diagnose

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"flowpin/lb/clock"
	"flowpin/lb/clock/clocktest"
	"flowpin/rules"
)

// lateGateway is a namespace whose gateway gw answers ARP only once the
// clock has passed answerAt after the start; Neighbour calls for it are
// counted.
type lateGateway struct {
	*fakeKernel
	clock    clock.Clock
	gw       string // "dev ip"
	answerAt time.Time
	mu       sync.Mutex
	asked    int
}

func (l *lateGateway) Neighbour(dev string, ip netip.Addr) (rules.Neighbour, error) {
	if dev+" "+ip.String() != l.gw {
		return l.fakeKernel.Neighbour(dev, ip)
	}
	l.mu.Lock()
	l.asked++
	l.mu.Unlock()
	if l.clock.Now().Before(l.answerAt) {
		return rules.Neighbour{State: "incomplete"}, nil
	}
	return rules.Neighbour{State: "reachable", MAC: "02:00:00:00:00:02"}, nil
}

// verify waits for a probed gateway by the clock it is given: every
// 50 ms, up to ProbeWait, with no wall-clock sleep, so the test takes no
// time and the count of looks is exact.
func TestVerifyGatewayWaitsOnTheClock(t *testing.T) {
	for _, tc := range []struct {
		name     string
		answerAt time.Duration
		pass     bool
		asked    int // the look before the probe and one per 50 ms
	}{
		{"answers within the wait", 1200 * time.Millisecond, true, 1 + 24},
		{"answers just after the wait", 1600 * time.Millisecond, false, 1 + 30},
		{"answers at once", 0, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, c, _ := dualWAN(t)
			clk := clocktest.NewAuto()
			start := clk.Now()
			lg := &lateGateway{fakeKernel: f, clock: clk, gw: "wan2 198.51.100.1", answerAt: start.Add(tc.answerAt)}
			k := &Kernel{Routes: lg, NFT: f, CT: f, ProbeGateway: f.probe, Clock: clk}
			rep, err := k.Verify(c, VerifyOptions{ProbeWait: 1500 * time.Millisecond, Samples: 64})
			if err != nil {
				t.Fatal(err)
			}
			var ch VerifyCheck
			for _, x := range rep.Checks {
				if x.Name == "link isp2: gateway 198.51.100.1" {
					ch = x
				}
			}
			if ch.OK != tc.pass {
				t.Errorf("gateway check ok=%v, want %v: %s", ch.OK, tc.pass, ch.Detail)
			}
			if tc.pass && tc.answerAt > 0 && !strings.Contains(ch.Detail, "answered ARP/ND on wan2") {
				t.Errorf("detail %q", ch.Detail)
			}
			if !tc.pass && !strings.Contains(ch.Detail, "no ARP/ND answer on wan2 (neighbour incomplete)") {
				t.Errorf("detail %q", ch.Detail)
			}
			if lg.asked != tc.asked {
				t.Errorf("looked %d times, want %d", lg.asked, tc.asked)
			}
			waited := clk.Now().Sub(start)
			t.Logf("waited %v on the clock", waited)
			if want := min(tc.answerAt, 1500*time.Millisecond); waited < want || waited > want+50*time.Millisecond {
				t.Errorf("waited %v on the clock, want %v (+ one poll at most)", waited, want)
			}
			wantProbes := 1 // a gateway that has not answered yet is probed once
			if tc.answerAt == 0 {
				wantProbes = 0
			}
			if f.probes != wantProbes {
				t.Errorf("%d probes, want %d", f.probes, wantProbes)
			}
		})
	}
}
