package daemon

import (
	"fmt"

	"golang.org/x/sys/unix"

	"flowpin/lb/status"

	"github.com/prometheus/client_golang/prometheus"
)

// flowCollector serves per-link flows, bytes and packets from what the
// daemon keeps: flow counts from conntrack events, bytes and packets from
// the nft counters of each link's rules. A scrape costs O(links), however
// many flows there are.
type flowCollector struct {
	d *Daemon

	flows, bytes, packets, ready, errors *prometheus.Desc
}

func newFlowCollector(d *Daemon) *flowCollector {
	return &flowCollector{
		d:       d,
		flows:   prometheus.NewDesc("flowpin_link_flows", "Conntrack flows pinned to the link, by address family (link \"unpinned\": no flowpin mark; \"other\": a mark no configured link has).", []string{"link", "family"}, nil),
		bytes:   prometheus.NewDesc("flowpin_link_bytes_total", "Bytes that left (out) or arrived on (in) the link, counted by its nft rules (carried over rewrites of the table).", []string{"link", "direction"}, nil),
		packets: prometheus.NewDesc("flowpin_link_packets_total", "Packets that left (out) or arrived on (in) the link, counted by its nft rules (carried over rewrites of the table).", []string{"link", "direction"}, nil),
		ready:   prometheus.NewDesc("flowpin_flow_counts_ready", "1 once the daemon has counted the conntrack table and follows it by events.", nil, nil),
		errors:  prometheus.NewDesc("flowpin_nft_counter_read_errors", "1 if this scrape could not read the nft counters.", nil, nil),
	}
}

func (fc *flowCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- fc.flows
	ch <- fc.bytes
	ch <- fc.packets
	ch <- fc.ready
	ch <- fc.errors
}

func familyName(f uint8) string {
	switch f {
	case unix.AF_INET:
		return "ipv4"
	case unix.AF_INET6:
		return "ipv6"
	}
	return fmt.Sprint(f)
}

func (fc *flowCollector) Collect(ch chan<- prometheus.Metric) {
	c := fc.d.Config
	counts, ready := fc.d.flows.Counts()
	ch <- prometheus.MustNewConstMetric(fc.ready, prometheus.GaugeValue, b2f(ready))
	if ready {
		names := map[uint32]string{0: status.UnpinnedLink}
		for _, l := range c.Links {
			names[l.Mark] = l.Name
		}
		byLink := map[[2]string]int64{}
		for _, l := range c.Links {
			byLink[[2]string{l.Name, "ipv4"}] = 0
			byLink[[2]string{l.Name, "ipv6"}] = 0
		}
		for k, n := range counts {
			name, ok := names[k.Mark]
			if !ok {
				name = "other"
			}
			byLink[[2]string{name, familyName(k.Family)}] += n
		}
		for k, n := range byLink {
			ch <- prometheus.MustNewConstMetric(fc.flows, prometheus.GaugeValue, float64(n), k[0], k[1])
		}
	}
	if fc.d.deps.Traffic == nil {
		return
	}
	m, err := fc.d.trafficCounters()
	ch <- prometheus.MustNewConstMetric(fc.errors, prometheus.GaugeValue, b2f(err != nil))
	if err != nil {
		return
	}
	for _, l := range c.Links {
		out, in := linkTraffic(m, l.Name)
		ch <- prometheus.MustNewConstMetric(fc.bytes, prometheus.CounterValue, float64(out.Bytes), l.Name, "out")
		ch <- prometheus.MustNewConstMetric(fc.bytes, prometheus.CounterValue, float64(in.Bytes), l.Name, "in")
		ch <- prometheus.MustNewConstMetric(fc.packets, prometheus.CounterValue, float64(out.Packets), l.Name, "out")
		ch <- prometheus.MustNewConstMetric(fc.packets, prometheus.CounterValue, float64(in.Packets), l.Name, "in")
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
