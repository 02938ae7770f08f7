package daemon

import (
	"slices"
	"sync"
	"time"

	"flowpin/lb/config"
	"flowpin/lb/daemon/board"
	"flowpin/lb/health"
	"flowpin/nft"
	"flowpin/nft/ct"
	"flowpin/rules"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// Metrics are the daemon's Prometheus metrics. Flow counts come from the
// daemon's memory and bytes from nft counters at scrape time
// (flowCollector).
type Metrics struct {
	Registry *prometheus.Registry

	up          *prometheus.GaugeVec
	changes     *prometheus.CounterVec
	rtt         *prometheus.GaugeVec
	linkRTT     *prometheus.GaugeVec
	jitter      *prometheus.GaugeVec
	loss        *prometheus.GaugeVec
	probes      *prometheus.CounterVec
	syncs       prometheus.Counter
	syncErrors  prometheus.Counter
	syncWrites  prometheus.Counter
	syncSeconds prometheus.Histogram
	subLosses   *prometheus.CounterVec
	ctLosses    prometheus.Counter
	ctEvents    *prometheus.CounterVec
	ctRecounts  prometheus.Counter
	ctCorrected prometheus.Counter
	ctEventVec  [ct.EventLost + 1]prometheus.Counter
	suspects    *prometheus.CounterVec
	bursts      *prometheus.CounterVec
	tier        *prometheus.GaugeVec
	tierChanges *prometheus.CounterVec
	// prefix6: flowpin_prefix6_translated (metrics_prefixes6.go).
	prefix6 *prometheus.GaugeVec

	// owned are the collectors of the daemon that runs now (flow counts,
	// rule hits, standby): they read that daemon's state and config, so
	// a reload replaces them, while the counters above go on counting.
	mu    sync.Mutex
	owned []prometheus.Collector
	// standbyVec is flowpin_link_standby, the running daemon's, registered
	// with its first on-demand link.
	standbyVec *prometheus.GaugeVec
	// ha: flowpin_ha_*, registered with the first role (role.go).
	ha haMetrics
}

// registerOwned registers a collector of the running daemon.
func (m *Metrics) registerOwned(c prometheus.Collector) error {
	if err := m.Registry.Register(c); err != nil {
		return err
	}
	m.mu.Lock()
	m.owned = append(m.owned, c)
	m.mu.Unlock()
	return nil
}

// handOver takes the collectors of the daemon that ran off the registry,
// for the next one's, and returns them.
func (m *Metrics) handOver() []prometheus.Collector {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.owned {
		m.Registry.Unregister(c)
	}
	old := m.owned
	m.owned = nil
	m.standbyVec = nil
	return old
}

// standby sets flowpin_link_standby of an on-demand link.
func (m *Metrics) standby(link string, v float64) {
	m.mu.Lock()
	g := m.standbyVec
	m.mu.Unlock()
	if g == nil {
		g = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flowpin_link_standby",
			Help: "1 while an on-demand link is intentionally down (not an alarm; flowpin_link_up is 0 then).",
		}, []string{"link"})
		if err := m.registerOwned(g); err != nil {
			panic(err) // a programming error: one per daemon
		}
		m.mu.Lock()
		m.standbyVec = g
		m.mu.Unlock()
	}
	g.WithLabelValues(link).Set(v)
}

// prune deletes the series of links, address families and policies that
// c no longer has, so a reload that removes them leaves no stale series.
func (m *Metrics) prune(c *config.Config) {
	family := map[string]map[string]bool{}
	for _, l := range c.Links {
		family[l.Name] = map[string]bool{"ipv4": l.HasV4(), "ipv6": l.HasV6()}
	}
	keepLink := func(lb map[string]string) bool {
		f, ok := family[lb["link"]]
		return ok && (lb["family"] == "" || f[lb["family"]])
	}
	for _, v := range []*prometheus.MetricVec{m.up.MetricVec, m.changes.MetricVec, m.rtt.MetricVec, m.linkRTT.MetricVec,
		m.jitter.MetricVec, m.loss.MetricVec, m.probes.MetricVec, m.suspects.MetricVec, m.bursts.MetricVec} {
		deleteSeries(v, keepLink)
	}
	policies := map[string]map[string]bool{}
	for _, p := range c.Policies {
		policies[p.Name] = map[string]bool{"ipv4": p.HasFamily(c.Links, false), "ipv6": p.HasFamily(c.Links, true)}
	}
	keepPolicy := func(lb map[string]string) bool { return policies[lb["policy"]][lb["family"]] }
	deleteSeries(m.tier.MetricVec, keepPolicy)
	deleteSeries(m.tierChanges.MetricVec, keepPolicy)
	if !c.HA {
		m.dropHA()
	}
}

// deleteSeries deletes the series of v whose labels keep refuses.
func deleteSeries(v *prometheus.MetricVec, keep func(map[string]string) bool) {
	ch := make(chan prometheus.Metric)
	go func() {
		v.Collect(ch)
		close(ch)
	}()
	var drop []prometheus.Labels
	for metric := range ch {
		var pb dto.Metric
		if metric.Write(&pb) != nil {
			continue
		}
		lb := prometheus.Labels{}
		for _, p := range pb.GetLabel() {
			lb[p.GetName()] = p.GetValue()
		}
		if !keep(lb) {
			drop = append(drop, lb)
		}
	}
	for _, lb := range drop {
		v.Delete(lb)
	}
}

// NewMetrics registers every metric in a fresh registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flowpin_link_up", Help: "1 if the link is up and takes new flows, 0 if down.",
		}, []string{"link", "family"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowpin_link_state_changes_total", Help: "Link state changes (up or down), per address family.",
		}, []string{"link", "family"}),
		rtt: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flowpin_probe_rtt_seconds", Help: "Round-trip time of the link's last answered probe round (the median over its targets).",
		}, []string{"link", "family"}),
		linkRTT: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flowpin_link_rtt_seconds", Help: "Median round-trip time of the link's answered probe rounds in its check window.",
		}, []string{"link", "family"}),
		jitter: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flowpin_link_jitter_seconds", Help: "Mean absolute difference between the round-trip times of consecutive answered probe rounds in the link's check window.",
		}, []string{"link", "family"}),
		loss: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flowpin_link_loss_ratio", Help: "Share of the link's probes in its check window (the last `window` rounds) that went unanswered.",
		}, []string{"link", "family"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowpin_probes_total", Help: "Probes sent, by result.",
		}, []string{"link", "family", "result"}),
		syncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowpin_syncs_total", Help: "Applies and resyncs of the kernel state.",
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowpin_sync_errors_total", Help: "Applies and resyncs that failed (and were rolled back).",
		}),
		syncWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowpin_sync_writes_total", Help: "Kernel writes made by applies and resyncs: repairs of drift and health changes.",
		}),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flowpin_sync_duration_seconds", Help: "Time to read, diff and apply the kernel state.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 12),
		}),
	}
	m.subLosses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowpin_subscription_losses_total",
		Help: "Kernel notifications lost (a subscription socket overflowed or failed), by subscription; each is followed by a full re-read.",
	}, []string{"what"})
	m.ctLosses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flowpin_conntrack_event_losses_total",
		Help: "Times conntrack events were lost (the event socket overflowed, or the subscription ended); each is followed by a re-count of the table.",
	})
	m.ctEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowpin_conntrack_events_total", Help: "Conntrack events received, by type.",
	}, []string{"type"})
	for t := ct.EventNew; t <= ct.EventLost; t++ {
		m.ctEventVec[t] = m.ctEvents.WithLabelValues(t.String())
	}
	m.ctRecounts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flowpin_conntrack_recounts_total", Help: "Re-counts of the conntrack table that checked the event-driven flow counts (periodic, or after lost events).",
	})
	m.ctCorrected = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flowpin_conntrack_recount_corrections_total", Help: "Flows by which re-counts corrected the event-driven counts (summed over links and families).",
	})
	m.suspects = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowpin_link_suspicions_total", Help: "Times a link's new flows went unanswered well above its baseline and other links', making it suspect.",
	}, []string{"link", "family"})
	m.bursts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowpin_burst_probes_total", Help: "Bursts of probes on suspicion, by outcome: down (none answered) or cleared.",
	}, []string{"link", "family", "outcome"})
	m.Registry.MustRegister(m.suspects, m.bursts)
	m.tier = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flowpin_policy_active_tier", Help: "The policy's active tier (1 is the first); 0 when no link of any tier is up and its last resort applies.",
	}, []string{"policy", "family"})
	m.tierChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowpin_policy_tier_changes_total", Help: "Failovers and failbacks of the policy between tiers.",
	}, []string{"policy", "family"})
	m.Registry.MustRegister(m.tier, m.tierChanges)
	m.prefix6 = newPrefix6Vec()
	m.Registry.MustRegister(m.prefix6)
	for _, what := range kernelSubscriptions {
		m.subLosses.WithLabelValues(what) // 0 until the first loss
	}
	m.Registry.MustRegister(m.up, m.changes, m.rtt, m.linkRTT, m.jitter, m.loss, m.probes, m.syncs, m.syncErrors, m.syncWrites, m.syncSeconds, m.subLosses,
		m.ctLosses, m.ctEvents, m.ctRecounts, m.ctCorrected,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *Metrics) setState(link, family string, s health.LinkState) {
	v := 0.0
	if s == health.StateUp {
		v = 1
	}
	m.up.WithLabelValues(link, family).Set(v)
	// The link's change counter exists (at 0) from its first state on, so
	// increase() and dashboards see 0 rather than nothing before a change.
	m.changes.WithLabelValues(link, family)
}

// tierStarted records a policy's active tier when the daemon first
// sees it, and starts its change counter at 0.
func (m *Metrics) tierStarted(policy, family string, active int) {
	m.tier.WithLabelValues(policy, family).Set(float64(active + 1))
	m.tierChanges.WithLabelValues(policy, family)
}

// tierChanged records a policy's new active tier (-1: none).
func (m *Metrics) tierChanged(policy, family string, active int) {
	m.tier.WithLabelValues(policy, family).Set(float64(active + 1))
	m.tierChanges.WithLabelValues(policy, family).Inc()
}

func (m *Metrics) changed(link, family string) { m.changes.WithLabelValues(link, family).Inc() }

// probed records a round and the link's quality over its window after it.
func (m *Metrics) probed(link, family string, r health.Round, t board.Seen) {
	m.probes.WithLabelValues(link, family, "answered").Add(float64(r.Answered))
	m.probes.WithLabelValues(link, family, "lost").Add(float64(r.Sent - r.Answered))
	if r.Answered > 0 {
		m.rtt.WithLabelValues(link, family).Set(r.RTT.Seconds())
	}
	m.linkRTT.WithLabelValues(link, family).Set(t.RTT.Seconds())
	m.jitter.WithLabelValues(link, family).Set(t.Jitter.Seconds())
	m.loss.WithLabelValues(link, family).Set(t.Loss)
}

func (m *Metrics) synced(writes int, took time.Duration) {
	m.syncs.Inc()
	m.syncWrites.Add(float64(writes))
	m.syncSeconds.Observe(took.Seconds())
}

// kernelSubscriptions are the notification subscriptions KernelEvents
// makes (the names it reports losses by), whose loss counters start at 0.
var kernelSubscriptions = append(slices.Clone(rules.Subscriptions), nft.Subscription)

func (m *Metrics) subscriptionLost(what string) { m.subLosses.WithLabelValues(what).Inc() }

func (m *Metrics) suspected(link, family string) { m.suspects.WithLabelValues(link, family).Inc() }

func (m *Metrics) burst(link, family, outcome string) {
	m.bursts.WithLabelValues(link, family, outcome).Inc()
}

func (m *Metrics) ctEventsLost() { m.ctLosses.Inc() }

func (m *Metrics) ctEvent(t ct.EventType) {
	if int(t) < len(m.ctEventVec) && m.ctEventVec[t] != nil {
		m.ctEventVec[t].Inc()
	}
}

func (m *Metrics) reconciled(corrected int64) {
	m.ctRecounts.Inc()
	m.ctCorrected.Add(float64(corrected))
}

func (m *Metrics) syncFailed() {
	m.syncs.Inc()
	m.syncErrors.Inc()
}
