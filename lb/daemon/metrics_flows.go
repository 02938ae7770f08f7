package daemon

import (
	"sync"

	"flowpin/lb/config"
	"flowpin/lb/status"
	"flowpin/nft/ct"

	"github.com/prometheus/client_golang/prometheus"
)

// flowCollector counts flows and bytes per link from conntrack when
// Prometheus scrapes, with the same streaming dump as `flowpin status`:
// nothing is kept between scrapes, so the numbers are never stale.
type flowCollector struct {
	c *config.Config

	mu sync.Mutex // one dump at a time
	ct *ct.Conntrack

	flows, bytes, packets, errors *prometheus.Desc
}

// RegisterFlowMetrics adds per-link flow, byte and packet metrics read from
// conn, the daemon's conntrack handle (its caller closes it).
func (m *Metrics) RegisterFlowMetrics(c *config.Config, conn *ct.Conntrack) error {
	fc := &flowCollector{
		c:       c,
		ct:      conn,
		flows:   prometheus.NewDesc("flowpin_link_flows", "Conntrack flows pinned to the link (\"unpinned\": no flowpin mark).", []string{"link"}, nil),
		bytes:   prometheus.NewDesc("flowpin_link_bytes", "Bytes of the link's current flows, by direction (out: the side that opened the flow).", []string{"link", "direction"}, nil),
		packets: prometheus.NewDesc("flowpin_link_packets", "Packets of the link's current flows, by direction.", []string{"link", "direction"}, nil),
		errors:  prometheus.NewDesc("flowpin_conntrack_read_errors", "1 if this scrape could not read the conntrack table.", nil, nil),
	}
	return m.Registry.Register(fc)
}

func (fc *flowCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- fc.flows
	ch <- fc.bytes
	ch <- fc.packets
	ch <- fc.errors
}

func (fc *flowCollector) Collect(ch chan<- prometheus.Metric) {
	fc.mu.Lock()
	t, err := status.TallyFlows(fc.ct, fc.c)
	fc.mu.Unlock()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(fc.errors, prometheus.GaugeValue, 1)
		return
	}
	ch <- prometheus.MustNewConstMetric(fc.errors, prometheus.GaugeValue, 0)
	emit := func(name string, cnt *status.Counters) {
		if cnt == nil {
			cnt = &status.Counters{}
		}
		ch <- prometheus.MustNewConstMetric(fc.flows, prometheus.GaugeValue, float64(cnt.Flows), name)
		ch <- prometheus.MustNewConstMetric(fc.bytes, prometheus.GaugeValue, float64(cnt.BytesOut), name, "out")
		ch <- prometheus.MustNewConstMetric(fc.bytes, prometheus.GaugeValue, float64(cnt.BytesIn), name, "in")
		ch <- prometheus.MustNewConstMetric(fc.packets, prometheus.GaugeValue, float64(cnt.PacketsOut), name, "out")
		ch <- prometheus.MustNewConstMetric(fc.packets, prometheus.GaugeValue, float64(cnt.PacketsIn), name, "in")
	}
	for _, l := range fc.c.Links {
		emit(l.Name, t[l.Mark])
	}
	emit(status.UnpinnedLink, t[0])
}
