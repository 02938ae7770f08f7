package daemon

import (
	"github.com/prometheus/client_golang/prometheus"
)

// dnsCollector serves, at scrape time, each link's DNS servers and
// whether the resolv file lists them (dns.go).
type dnsCollector struct {
	d        *Daemon
	inResolv *prometheus.Desc
}

func newDNSCollector(d *Daemon) *dnsCollector {
	return &dnsCollector{d: d, inResolv: prometheus.NewDesc("flowpin_link_dns_in_resolv",
		"1 while the resolv file the daemon writes lists this DNS server of the link (links[].dns, or its lease's with dns: auto), 0 while it leaves it out (the link's family is down).",
		[]string{"link", "server"}, nil)}
}

func (dc *dnsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- dc.inResolv }

func (dc *dnsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range dc.d.Config.Links {
		for _, s := range dc.d.dnsOf(l.Name) {
			ch <- prometheus.MustNewConstMetric(dc.inResolv, prometheus.GaugeValue, b2f(s.InResolv), l.Name, s.Address.String())
		}
	}
}
