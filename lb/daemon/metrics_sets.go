package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"flowpin/lb/config"
	"flowpin/nft"
)

// SetCounter counts the elements of the table's sets (nft.Conn).
type SetCounter interface {
	SetCounts(names []string) (map[string]int, error)
}

// setCollector reports each named set's elements at scrape time, as sc
// counts them: Daemon.SetCounter, which lists no file set.
type setCollector struct {
	c     *config.Config
	sc    SetCounter
	elems *prometheus.Desc
	errs  *prometheus.Desc
}

// RegisterSetMetrics adds flowpin_set_elements per named set and family.
func (m *Metrics) RegisterSetMetrics(c *config.Config, sc SetCounter) error {
	if len(c.Sets) == 0 {
		return nil
	}
	return m.registerOwned(&setCollector{
		c: c, sc: sc,
		elems: prometheus.NewDesc("flowpin_set_elements", "Elements of the named set in the family's nft set: addresses of a domain set, merged ranges of a file set.", []string{"set", "family", "kind"}, nil),
		errs:  prometheus.NewDesc("flowpin_set_scrape_error", "1 if the sets' elements could not be counted at this scrape.", nil, nil),
	})
}

func (sc *setCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sc.elems
	ch <- sc.errs
}

func (sc *setCollector) Collect(ch chan<- prometheus.Metric) {
	var names []string
	for _, s := range sc.c.Sets {
		names = append(names, nft.SetName(s.Name, false), nft.SetName(s.Name, true))
	}
	counts, err := sc.sc.SetCounts(names)
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(sc.errs, prometheus.GaugeValue, failed)
	if err != nil {
		return
	}
	for _, s := range sc.c.Sets {
		kind := "file"
		if s.Domain() {
			kind = "domains"
		}
		for _, f := range []struct {
			v6   bool
			name string
		}{{false, "ipv4"}, {true, "ipv6"}} {
			if n, ok := counts[nft.SetName(s.Name, f.v6)]; ok {
				ch <- prometheus.MustNewConstMetric(sc.elems, prometheus.GaugeValue, float64(n), s.Name, f.name, kind)
			}
		}
	}
}
