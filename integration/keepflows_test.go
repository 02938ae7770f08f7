package integration

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// silenceTarget makes the far host stop answering pings, while everything
// else it serves goes on: the probe target fails, the links do not.
func silenceTarget(t testing.TB, far string) func() {
	nft(t, far, `table inet noping {
	chain in {
		type filter hook input priority 0; policy accept;
		icmp type echo-request drop
	}
}
`)
	return func() { run(t, far, "nft", "delete", "table", "inet", "noping") }
}

// TestAllLinksDownKeepsFlows: the probe target stops answering, so both
// links are judged down while both still carry traffic. Not one of 30
// established connections is broken: their flows are left in place, which
// status says (text, --json, the status page), the route fails open (new
// connections still go out), and they go on carrying echoes through the
// outage and after the links are back.
func TestAllLinksDownKeepsFlows(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := hostPort(d.Service, srv.Port())
	dm := startDaemon(t, d.Router, checkedConfig(d, d.GW2), "--metrics", ":9108")
	held := startLongLived(t, d.LAN, target, srv, 30, dialOpts{})
	time.Sleep(500 * time.Millisecond)

	start := time.Now()
	restore := silenceTarget(t, d.Far)
	dm.waitState(t, "isp1", "down", 5*time.Second)
	dm.waitState(t, "isp2", "down", 5*time.Second)
	allDown := time.Now()
	t.Logf("both links judged down %v after the target went silent", allDown.Sub(start).Round(time.Millisecond))

	// Both links' flows are still in conntrack.
	for _, mark := range []string{"0x100/0xff00", "0x200/0xff00"} {
		if ct := run(t, d.Router, "conntrack", "-L", "-p", "tcp", "--dport", fmt.Sprint(srv.Port()), "-m", mark); !strings.Contains(ct, "ESTABLISHED") {
			t.Errorf("no established flow with mark %s left while every link is down:\n%s", mark, ct)
		}
	}
	const why = "flows kept: no other IPv4 link is up to take them"
	text, err := flowpin(t, d.Router, "status", "-c", dm.cfg)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, text)
	}
	for _, l := range []string{"isp1", "isp2"} {
		if !strings.Contains(text, why) || !strings.Contains(text, l+": down:") {
			t.Errorf("status does not say %s's flows were kept:\n%s", l, text)
		}
	}
	for name, l := range dm.linkStates(t) {
		if !strings.HasPrefix(l.FlowsKept, strings.TrimPrefix(why, "flows kept: ")) {
			t.Errorf("status --json: %s flows_kept %q", name, l.FlowsKept)
		}
	}
	// The route failed open: new connections go out by the links too.
	r := connectN(t, d.LAN, target, srv, 16, dialOpts{Timeout: time.Second, Parallel: 16})
	t.Logf("every link judged down: %d of 16 new connections failed (by link: %v)", r.Failed, r.PerSource)
	if r.Failed != 0 {
		t.Errorf("%d of 16 new connections failed while every link was judged down but working: %v", r.Failed, r.Errors[0])
	}
	if !strings.Contains(dm.logs(), "its flows stay in place") {
		t.Errorf("the log does not say why the flows stayed:\n%s", dm.logs())
	}
	t.Run("status page", func(t *testing.T) {
		chromiumPath(t)
		b := startBrowser(t, d.Router, 1280, 1000)
		b.navigate(t, "http://127.0.0.1:9108/?interval=0.5")
		b.waitLoaded(t, "http://127.0.0.1:9108/")
		deadline := time.Now().Add(10 * time.Second)
		for {
			var st pageState
			b.eval(t, pageStateJS, &st)
			i1, ok1 := st.link("isp1")
			i2, ok2 := st.link("isp2")
			if ok1 && ok2 && strings.Contains(st.Links[i1].Reason, why) && strings.Contains(st.Links[i2].Reason, why) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the page does not show the kept flows:\n%s", st.Text)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	// A few seconds with every link down.
	time.Sleep(time.Until(allDown.Add(3 * time.Second)))
	restore()
	dm.waitState(t, "isp1", "up", 5*time.Second)
	dm.waitState(t, "isp2", "up", 5*time.Second)
	t.Logf("both links up again %v after the target answered", time.Since(allDown.Add(3*time.Second)).Round(time.Millisecond))
	for name, l := range dm.linkStates(t) {
		if l.FlowsKept != "" {
			t.Errorf("%s is up, status still says flows kept: %q", name, l.FlowsKept)
		}
	}
	time.Sleep(time.Second)

	broken, onISP := 0, map[netip.Addr]int{}
	for i, s := range held.stop() {
		onISP[s.Remote.Addr()]++
		// The whole test is about 7 s of echoes every 50 ms.
		if s.Stalled || s.Err != nil || s.Echoes < 60 {
			broken++
			t.Errorf("connection %d (by %v) broken: stalled=%v err=%v echoes=%d", i, s.Remote.Addr(), s.Stalled, s.Err, s.Echoes)
		}
	}
	t.Logf("%d of 30 established flows broken while every link was judged down for 3 s (flows by link: %v)", broken, onISP)
	if onISP[netip.MustParseAddr(d.WAN1)] == 0 || onISP[netip.MustParseAddr(d.WAN2)] == 0 {
		t.Errorf("the flows were %v by link; the test needs both", onISP)
	}
	if strings.Contains(dm.logs(), "flushed the link's flows") {
		t.Errorf("flows were deleted:\n%s", dm.logs())
	}
}
