package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"flowpin/lb/plan"
)

// newPrefix6Vec is flowpin_prefix6_translated: one series per ISP prefix
// (prefixes6), 1 while new flows from it are translated onto live links
// because its own link is down.
func newPrefix6Vec() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flowpin_prefix6_translated",
		Help: "1 while new flows from the link's IPv6 prefix (prefixes6) leave by other links, translated 1:1 onto their prefixes, because the link is down; 0 while they leave by the link itself.",
	}, []string{"link", "prefix"})
}

// setPrefixes6 records the prefixes of the plan just applied; a prefix no
// longer there (a delegation that ended) loses its series.
func (m *Metrics) setPrefixes6(des *plan.Desired) {
	now := map[[2]string]bool{}
	for _, p := range des.Prefixes6 {
		link := des.Links[p.Link].Name
		now[[2]string{link, p.Prefix.String()}] = true
		v := 0.0
		if p.Translated {
			v = 1
		}
		m.prefix6.WithLabelValues(link, p.Prefix.String()).Set(v)
	}
	deleteSeries(m.prefix6.MetricVec, func(lb map[string]string) bool { return now[[2]string{lb["link"], lb["prefix"]}] })
}
