package daemon

import (
	"flowpin/lb/config"
	"flowpin/nft"

	"github.com/prometheus/client_golang/prometheus"
)

// RuleHitReader reads the traffic rules' nft counters.
type RuleHitReader interface {
	RuleHits() (map[string]nft.Hits, error)
}

// ruleCollector reads each traffic rule's counter at scrape time: one
// nft dump per rule chain, O(rules).
type ruleCollector struct {
	c          *config.Config
	hits       RuleHitReader
	flows      *prometheus.Desc
	bytes      *prometheus.Desc
	scrapeErrs *prometheus.Desc
}

// RegisterRuleMetrics adds flowpin_rule_hits_total and
// flowpin_rule_hit_bytes_total per traffic rule.
func (m *Metrics) RegisterRuleMetrics(c *config.Config, h RuleHitReader) error {
	if len(c.Rules) == 0 {
		return nil
	}
	return m.registerOwned(&ruleCollector{
		c: c, hits: h,
		flows:      prometheus.NewDesc("flowpin_rule_hits_total", "New flows the traffic rule classified (their first packets).", []string{"rule", "policy"}, nil),
		bytes:      prometheus.NewDesc("flowpin_rule_hit_bytes_total", "Bytes of the first packets of the flows the traffic rule classified.", []string{"rule", "policy"}, nil),
		scrapeErrs: prometheus.NewDesc("flowpin_rule_scrape_error", "1 if the traffic rules' counters could not be read at this scrape.", nil, nil),
	})
}

func (rc *ruleCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- rc.flows
	ch <- rc.bytes
	ch <- rc.scrapeErrs
}

func (rc *ruleCollector) Collect(ch chan<- prometheus.Metric) {
	h, err := rc.hits.RuleHits()
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(rc.scrapeErrs, prometheus.GaugeValue, failed)
	if err != nil {
		return
	}
	for _, r := range rc.c.Rules {
		ch <- prometheus.MustNewConstMetric(rc.flows, prometheus.CounterValue, float64(h[r.Name].Packets), r.Name, r.Policy)
		ch <- prometheus.MustNewConstMetric(rc.bytes, prometheus.CounterValue, float64(h[r.Name].Bytes), r.Name, r.Policy)
	}
}
