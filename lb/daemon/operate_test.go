package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/apply"
	"flowpin/lb/config"
	"flowpin/lb/config/configtest"
	"flowpin/lb/daemon/operator"
	"flowpin/lb/health"
	"flowpin/lb/plan"
	"flowpin/nft"
)

func setLink(t *testing.T, h *harness, name string, m operator.Mode) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := h.d.SetLink(context.Background(), name, m, false)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("SetLink %s %s: %v", name, m, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("SetLink %s %s: no answer", name, m)
	}
}

// The operator's modes: drain leaves the route and flushes nothing; down
// leaves it and flushes the link's flows (another link takes them); up
// keeps a link whose probes fail in the route; auto gives it back to its
// probes.
func TestOperatorModes(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)

	h.eventually("the first plan published, every link in", func() bool { in, ok := h.d.Intent(); return ok && len(in.Down) == 0 })
	setLink(t, h, "isp2", operator.Drain)
	h.waitTranscript(both, isp2Out)
	// What verify plans with (GET /intent): isp2 out, and why; published
	// by the sync a moment after its apply.
	h.eventually("the plan applied published with isp2 out", func() bool {
		in, ok := h.d.Intent()
		return ok && len(in.Down) == 1 && strings.HasPrefix(in.Down["isp2"], "drained by operator since ")
	})
	s := h.state("isp2")
	if s.State != health.StateUp || s.Operator != "drain" || !strings.HasPrefix(s.Reason, "drained by operator since 00:00:00; checks: up") {
		t.Errorf("isp2 drained: %+v", s)
	}
	if err := testutil.GatherAndCompare(h.d.Metrics().Registry, strings.NewReader(`# HELP flowpin_link_operator_mode 1 for the link's operator mode (flowpin link NAME drain|down|up|auto), 0 for the others.
# TYPE flowpin_link_operator_mode gauge
flowpin_link_operator_mode{link="isp1",mode="auto"} 1
flowpin_link_operator_mode{link="isp1",mode="down"} 0
flowpin_link_operator_mode{link="isp1",mode="drain"} 0
flowpin_link_operator_mode{link="isp1",mode="up"} 0
flowpin_link_operator_mode{link="isp2",mode="auto"} 0
flowpin_link_operator_mode{link="isp2",mode="down"} 0
flowpin_link_operator_mode{link="isp2",mode="drain"} 1
flowpin_link_operator_mode{link="isp2",mode="up"} 0
`), "flowpin_link_operator_mode"); err != nil {
		t.Error(err)
	}
	if _, err := h.d.SetLink(context.Background(), "isp1", operator.Drain, false); !errors.Is(err, ErrLastLink) {
		t.Errorf("draining the last link: %v", err)
	}
	if _, err := h.d.SetLink(context.Background(), "isp3", operator.Drain, false); !errors.Is(err, ErrUnknownLink) || !strings.Contains(err.Error(), `"isp3"`) {
		t.Errorf("an unknown link: %v", err)
	}
	if _, err := h.d.SetLink(context.Background(), "isp2", "sideways", false); !errors.Is(err, ErrBadMode) {
		t.Errorf("a bad mode: %v", err)
	}

	setLink(t, h, "isp2", operator.Down)
	h.waitTranscript(both, isp2Out, isp2Out, flush2)
	if s := h.state("isp2"); s.State != health.StateDown || !strings.HasPrefix(s.Reason, "down by operator since ") {
		t.Errorf("isp2 down by operator: %+v", s)
	}
	// The probes answer: down by the operator stays down.
	h.round()
	h.round()
	h.round()
	if s := h.state("isp2"); s.State != health.StateDown {
		t.Errorf("isp2 down by operator after good rounds: %+v", s)
	}

	// up: in the route while its probes fail.
	h.probers.set("wan2", false)
	setLink(t, h, "isp2", operator.Up)
	h.waitTranscript(both, isp2Out, isp2Out, flush2, both)
	for range 4 {
		h.round()
	}
	if s := h.state("isp2"); s.State != health.StateUp || s.Operator != "up" {
		t.Errorf("isp2 up by operator with failing probes: %+v", s)
	}
	h.advanceSync()
	// auto: its probes decide again, and they failed.
	setLink(t, h, "isp2", operator.Auto)
	h.waitState("isp2", health.StateDown)
	if s := h.state("isp2"); s.Operator != "" || !strings.Contains(s.Reason, "probes lost") {
		t.Errorf("isp2 back in auto: %+v", s)
	}
	h.eventually("isp2 out and flushed", func() bool {
		got := h.rec.get()
		return len(got) >= 7 && got[len(got)-2] == isp2Out && got[len(got)-1] == flush2
	})
}

// drain and down of every link: refused, unless forced; forced, no link
// is left in the route (the operator asked for it) and no health failing
// open puts them back.
func TestOperatorEveryLinkOut(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)
	// isp1 down by its carrier: isp2 is the last link up.
	h.events.send(Event{Kind: EventLink, Iface: "wan1", Up: false})
	h.waitState("isp1", health.StateDown)
	if _, err := h.d.SetLink(context.Background(), "isp2", operator.Down, false); !errors.Is(err, ErrLastLink) {
		t.Fatalf("down of the last link up: %v", err)
	}
	setLink(t, h, "isp1", operator.Down)
	if _, err := h.d.SetLink(context.Background(), "isp2", operator.Drain, false); !errors.Is(err, ErrLastLink) {
		t.Fatalf("draining the last link: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := h.d.SetLink(context.Background(), "isp2", operator.Drain, true); done <- err }()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	h.waitTranscript(both, "apply route=[isp2] out=[isp1]", "flush mark 0x100/0xff00", "apply route=[] out=[isp1 isp2]")
}

const quotaDaily = "    quota: {bytes: 1000, period: daily}\n"

// A quota: exhausted, the link goes to standby and its flows are
// deleted where another link can take them; the next period (the
// injected clock at midnight) brings it back.
func TestQuotaStandbyUntilTheNextPeriod(t *testing.T) {
	h, traffic := quotaHarness(t, checked+quotaDaily, false)

	traffic.add(nft.CounterKey("prerouting", "restore isp2"), 5, 600)
	// The count is taken in the loop, once its timer is armed: move the
	// clock on until it is (no more traffic comes meanwhile).
	h.eventually("600 bytes counted", func() bool {
		h.clock.Advance(QuotaInterval)
		q := h.state("isp2").Quota
		return q != nil && q.Used != 0
	})
	if s := h.state("isp2"); s.State != health.StateUp || s.Quota == nil || s.Quota.Used != 600 || s.Quota.Left != 400 {
		t.Fatalf("isp2 with 600 of 1000 bytes: %+v (%+v)", s, s.Quota)
	}
	traffic.add(nft.CounterKey("prerouting", "from isp2"), 5, 500)
	h.eventually("quota counted", func() bool {
		h.clock.Advance(QuotaInterval)
		return h.state("isp2").State == health.StateStandby
	})
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2)
	s := h.state("isp2")
	if !strings.HasPrefix(s.Reason, "quota: 1.1 kB of 1.0 kB used (1.0 kB daily); a new period begins 2026-01-02 00:00") || !s.Quota.Exhausted {
		t.Errorf("isp2 exhausted: %+v (%+v)", s, s.Quota)
	}
	if err := testutil.GatherAndCompare(h.d.Metrics().Registry, strings.NewReader(`# HELP flowpin_link_quota_left_bytes Bytes left of the link's quota in the current period.
# TYPE flowpin_link_quota_left_bytes gauge
flowpin_link_quota_left_bytes{link="isp2"} 0
# HELP flowpin_link_quota_used_bytes Bytes the link carried in its quota's current period (both directions).
# TYPE flowpin_link_quota_used_bytes gauge
flowpin_link_quota_used_bytes{link="isp2"} 1100
`), "flowpin_link_quota_left_bytes", "flowpin_link_quota_used_bytes"); err != nil {
		t.Error(err)
	}
	// up by the operator overrides the quota; auto gives it back.
	setLink(t, h, "isp2", operator.Up)
	if s := h.state("isp2"); s.State != health.StateUp || !s.Quota.Exhausted {
		t.Errorf("isp2 up by operator, quota exhausted: %+v (%+v)", s, s.Quota)
	}
	setLink(t, h, "isp2", operator.Auto)
	if s := h.state("isp2"); s.State != health.StateStandby {
		t.Errorf("isp2 back in auto, quota exhausted: %+v", s)
	}
	h.waitTranscript(both, isp2Out, flush2, both, isp2Out, flush2)
	// More traffic (its established flows' last packets) is counted, and
	// changes nothing.
	traffic.add(nft.CounterKey("postrouting", "save isp2"), 1, 100)
	h.eventually("counted on standby", func() bool {
		h.clock.Advance(QuotaInterval)
		return h.state("isp2").Quota.Used == 1200
	})

	// Midnight.
	now := h.clock.Now()
	h.clock.Advance(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC).Sub(now))
	h.eventually("a new period", func() bool {
		h.clock.Advance(QuotaInterval)
		return h.state("isp2").State == health.StateUp
	})
	if s := h.state("isp2"); s.Quota.Used != 0 || s.Quota.Exhausted || !s.Quota.PeriodStart.Equal(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("isp2 in the new period: %+v", s.Quota)
	}
	h.advanceSync()
	h.eventually("back in the route", func() bool {
		got := h.rec.get()
		return got[len(got)-1] == both
	})
}

// exhaustedLastResort starts a daemon whose isp2 has a daily quota with
// quota_last_resort (probed by fakes, with probers) and runs it out: isp2
// on standby, out of the route, its flows deleted.
// quotaHarness starts a daemon on config cfg whose traffic counters the
// test moves (and, with probers, whose probes it answers), once its first
// sync is done.
func quotaHarness(t *testing.T, cfg string, probers bool) (*harness, *fakeCounters) {
	t.Helper()
	h := newHarness(t)
	h.c = configtest.MustParse(t, cfg)
	h.k = newFakeKernel(h.rec, h.c)
	if probers {
		h.probers = newFakeProbers(h.c)
	}
	traffic := &fakeCounters{}
	h.traffic = traffic
	h.start()
	h.waitTranscript(both)
	return h, traffic
}

func exhaustedLastResort(t *testing.T, probers bool) *harness {
	t.Helper()
	h, traffic := quotaHarness(t, checked+quotaDaily+"    quota_last_resort: true\n", probers)
	traffic.add(nft.CounterKey("prerouting", "restore isp2"), 5, 2000)
	h.eventually("exhausted", func() bool {
		h.clock.Advance(QuotaInterval)
		return h.state("isp2").State == health.StateStandby
	})
	h.advanceSync()
	h.waitTranscript(both, isp2Out, flush2)
	return h
}

// quota_last_resort: an exhausted link still takes new flows when no
// other link can.
func TestQuotaLastResort(t *testing.T) {
	h := exhaustedLastResort(t, false)
	h.events.send(Event{Kind: EventLink, Iface: "wan1", Up: false})
	h.waitState("isp1", health.StateDown)
	h.advanceSync()
	h.eventually("isp2 the last resort", func() bool {
		got := h.rec.get()
		return got[len(got)-1] == "apply route=[isp2] out=[isp1]"
	})
	if s := h.state("isp2"); s.State != health.StateStandby || !strings.Contains(s.Reason, "the last resort") {
		t.Errorf("isp2 as the last resort: %+v", s)
	}
}

type linkSetterFunc func(name string, m operator.Mode, force bool) (operator.Entry, error)

func (f linkSetterFunc) SetLink(_ context.Context, name string, m operator.Mode, force bool) (operator.Entry, error) {
	return f(name, m, force)
}

// Only root sets a link's mode; the daemon's refusals map to 404, 400 and
// 409, through the API's router (odd characters in the name included).
func TestLinkHandler(t *testing.T) {
	var calls []string
	api := APIHandler(struct {
		Source
		LinkSetter
	}{SourceFuncs{}, linkSetterFunc(func(name string, m operator.Mode, force bool) (operator.Entry, error) {
		calls = append(calls, fmt.Sprintf("%s %s %v", name, m, force))
		switch {
		case name == "isp1" && m == operator.Drain && !force:
			return operator.Entry{}, fmt.Errorf("%w: isp1 would leave no link", ErrLastLink)
		case name != "isp1":
			return operator.Entry{}, fmt.Errorf("%w %q", ErrUnknownLink, name)
		case m == "sideways":
			return operator.Entry{}, fmt.Errorf("%w %q", ErrBadMode, m)
		}
		return operator.Entry{Mode: m, Since: time.Unix(0, 0)}, nil
	})})
	for _, tc := range []struct {
		name, path string
		uid        any
		code       int
		body       string
	}{
		{"no credentials", "/links/isp1/down", nil, http.StatusForbidden, "only root"},
		{"uid 65534", "/links/isp1/down", uint32(65534), http.StatusForbidden, "only root"},
		{"root", "/links/isp1/down", uint32(0), http.StatusOK, `"mode":"down"`},
		{"last link", "/links/isp1/drain", uint32(0), http.StatusConflict, "would leave no link"},
		{"forced", "/links/isp1/drain?force=1", uint32(0), http.StatusOK, `"mode":"drain"`},
		{"unknown", "/links/is%20p%2F1%1b/drain", uint32(0), http.StatusNotFound, `"is p/1\x1b"`},
		{"bad mode", "/links/isp1/sideways", uint32(0), http.StatusBadRequest, "bad mode"},
	} {
		req := httptest.NewRequest(http.MethodPost, tc.path, nil)
		if tc.uid != nil {
			req = req.WithContext(context.WithValue(req.Context(), peerUIDKey{}, tc.uid))
		}
		w := httptest.NewRecorder()
		api.ServeHTTP(w, req)
		if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.body) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, w.Code, w.Body.String(), tc.code, tc.body)
		}
	}
	want := []string{"isp1 down false", "isp1 drain false", "isp1 drain true", "is p/1\x1b drain false", "isp1 sideways false"}
	if !slices.Equal(calls, want) {
		t.Errorf("calls %q, want %q (none unprivileged)", calls, want)
	}
}

// The last link that takes new flows is judged per family: with isp2's
// IPv6 down by its checks, draining or downing isp1 would leave IPv6
// nothing but a link judged dead (put back by failing open), though
// isp2's IPv4 still works.
func TestOperatorLastLinkPerFamily(t *testing.T) {
	h := newHarness(t)
	h.c = configtest.MustParse(t, dualStackLinks)
	h.k = newFakeKernel(h.rec, h.c)
	h.probers = newFakeProbers(h.c)
	h.start()
	h.waitTranscript("apply route=[isp1 isp2] out=[] route6=[isp1 isp2] out6=[]")
	h.probers.set("wan2/6", false)
	for range 3 {
		h.round()
	}
	h.eventually("isp2 IPv6 down", func() bool {
		for _, l := range h.d.Health() {
			if l.Name == "isp2" && l.Family == "ipv6" {
				return l.State == health.StateDown
			}
		}
		return false
	})
	for _, m := range []operator.Mode{operator.Drain, operator.Down} {
		_, err := h.d.SetLink(context.Background(), "isp1", m, false)
		if !errors.Is(err, ErrLastLink) || !strings.Contains(err.Error(), "IPv6") {
			t.Errorf("%s isp1, the last IPv6 link up: %v", m, err)
		}
	}
	if e := h.d.deps.Operator.Get("isp1"); e.Mode != operator.Auto {
		t.Errorf("isp1 after the refusals: %+v", e)
	}
	// isp2 is not the last link of either family it is up in.
	setLink(t, h, "isp2", operator.Drain)
}

// holdApply holds the Apply after arm until release.
type holdApply struct {
	*fakeKernel
	mu      sync.Mutex
	armed   bool
	held    chan struct{}
	release chan struct{}
}

func (k *holdApply) Apply(d *plan.Desired) (*apply.Result, error) {
	k.mu.Lock()
	hold := k.armed
	k.armed = false
	k.mu.Unlock()
	if hold {
		close(k.held)
		<-k.release
	}
	return k.fakeKernel.Apply(d)
}

// flowpin link during a reload: the old daemon has stopped, the new one
// has read the modes and is in its first sync. The mode is applied by
// the new daemon, not only stored (status would say "down by operator"
// of a link still in the route).
func TestOperatorLinkDuringReload(t *testing.T) {
	h := newHarness(t)
	k := &holdApply{fakeKernel: h.k, held: make(chan struct{}), release: make(chan struct{})}
	ops, _ := operator.Open("")
	sup := NewSupervisor(Deps{Applier: k, Conntrack: h.k, Probers: h.probers.factory, Clock: h.clock, Events: h.events, Operator: ops},
		func() (*config.Config, error) { return h.c, nil }, quietLog())
	first, stop := runSupervisor(t, sup, h.c)
	defer stop()
	k.mu.Lock()
	k.armed = true
	k.mu.Unlock()
	reloaded := make(chan error, 1)
	go func() { reloaded <- sup.Reload() }()
	<-k.held
	set := make(chan error, 1)
	go func() {
		_, err := sup.SetLink(context.Background(), "isp2", operator.Down, false)
		set <- err
	}()
	// The request reached the old daemon, stopped; then the new one ends
	// its first sync.
	time.Sleep(50 * time.Millisecond)
	close(k.release)
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	second := waitDaemon(t, sup, first)
	select {
	case err := <-set:
		if err != nil {
			t.Fatalf("SetLink: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SetLink: no answer")
	}
	if s := healthOf(second, "isp2"); s.State != health.StateDown || s.Operator != "down" {
		t.Errorf("isp2 after flowpin link down during a reload: %+v", s)
	}
}

// up by the operator on a link whose interface is gone: it carries
// nothing, so it is no link that takes new flows. When the other link's
// checks fail too, the route fails open to that one rather than leaving
// no link at all.
func TestOperatorUpWithoutInterface(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.waitTranscript(both)
	h.round()
	setLink(t, h, "isp2", operator.Up)
	h.k.removeIface("wan2")
	h.probers.setMissing("wan2", true)
	h.events.send(Event{Kind: EventLink, Iface: "wan2", Removed: true})
	h.advanceSync()
	h.waitTranscript(both, both, isp2Out)
	// The transcript has the apply; the sync records its plan, which the
	// check below reads, a moment later.
	h.eventually("isp2 unusable in the plan applied", func() bool { return !h.d.usableIn(h.d.appliedPub.Load(), unit{link: 1}) })
	// Nor is it a link left to take new flows when isp1 is drained.
	if _, err := h.d.SetLink(context.Background(), "isp1", operator.Drain, false); !errors.Is(err, ErrLastLink) {
		t.Errorf("drain isp1 beside an isp2 up by operator without its interface: %v", err)
	}
	h.probers.set("wan1", false)
	for range 3 {
		h.round()
	}
	h.waitState("isp1", health.StateDown)
	h.advanceSync()
	h.events.send(Event{Kind: EventDrift, What: "resync"})
	h.eventually("a sync after isp1 went down", func() bool { return len(h.rec.get()) > 3 })
	if got := h.rec.get(); got[len(got)-1] != isp2Out {
		t.Errorf("transcript ends %q, want isp1 in the route by failing open (%q)", got[len(got)-1], isp2Out)
	}
}

// A link the operator drained is not taken back as a quota's last
// resort: drained means no new flows. When the other link fails its
// checks too, the route fails open to that one, as without the drained
// link.
func TestQuotaLastResortDrained(t *testing.T) {
	h := exhaustedLastResort(t, true)
	setLink(t, h, "isp2", operator.Drain)
	n := len(h.rec.get())
	h.probers.set("wan1", false)
	for range 3 {
		h.round()
	}
	h.waitState("isp1", health.StateDown)
	h.advanceSync()
	h.events.send(Event{Kind: EventDrift, What: "resync"})
	h.eventually("a sync after isp1 went down", func() bool { return len(h.rec.get()) > n })
	if got := h.rec.get(); got[len(got)-1] != isp2Out {
		t.Errorf("transcript ends %q, want %q: the drained isp2 out, isp1 in by failing open", got[len(got)-1], isp2Out)
	}
}
