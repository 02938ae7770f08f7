package status

import (
	"fmt"
	"io"
	"strings"

	"flowpin/lb/config"
	"flowpin/lb/health"
)

// DNSStatus is one of a link's DNS servers (links[].dns).
type DNSStatus struct {
	Address string `json:"address"`
	// InResolv, from the daemon: the resolv file it writes lists the
	// server now (only while the server's family is up on the link).
	// Absent without a daemon: no one writes the file then.
	InResolv *bool `json:"in_resolv,omitempty"`
}

// dnsOf is the servers link l names, before a daemon says more.
func dnsOf(l config.Link) []DNSStatus {
	var out []DNSStatus
	for _, a := range l.DNS {
		out = append(out, DNSStatus{Address: a.String()})
	}
	return out
}

// withDNS puts the daemon's view of the link's servers (those of its
// lease too, with dns: auto) in place of the config's.
func (l *LinkStatus) withDNS(servers []health.DNSServer) {
	if len(servers) == 0 {
		return
	}
	l.DNS = nil
	for _, s := range servers {
		in := s.InResolv
		l.DNS = append(l.DNS, DNSStatus{Address: s.Address.String(), InResolv: &in})
	}
}

// writeDNS is one line per link with DNS servers: each, and whether the
// resolv file lists it.
func writeDNS(w io.Writer, s *Status) error {
	for _, l := range s.Links {
		var parts []string
		for _, d := range l.DNS {
			switch {
			case d.InResolv == nil && s.Daemon:
				parts = append(parts, d.Address+" (the daemon has not written the resolv file yet)")
			case d.InResolv == nil:
				parts = append(parts, d.Address+" (no daemon writes the resolv file)")
			case *d.InResolv:
				parts = append(parts, d.Address+" (in the resolv file)")
			default:
				parts = append(parts, d.Address+" (not in the resolv file: its link is down)")
			}
		}
		if l.DNSAuto && len(l.DNS) == 0 {
			if s.Daemon {
				parts = append(parts, "auto: none in the lease yet")
			} else {
				parts = append(parts, "auto: from the link's lease, which the daemon reads")
			}
		}
		if len(parts) == 0 {
			continue
		}
		if _, err := fmt.Fprintf(w, "dns of %s: %s\n", Printable(l.Name), Printable(strings.Join(parts, ", "))); err != nil {
			return err
		}
	}
	return nil
}
