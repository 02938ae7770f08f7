package status

import "flowpin/lb/health"

// WithHealth fills in the daemon's view of each link.
func (s *Status) WithHealth(h []health.LinkHealth) {
	s.Daemon = true
	by := map[string]health.LinkHealth{}
	by6 := map[string]health.LinkHealth{}
	for _, l := range h {
		if l.Family == "ipv6" {
			by6[l.Name] = l
		} else {
			by[l.Name] = l
		}
	}
	for i := range s.Links {
		l6, ok6 := by6[s.Links[i].Name]
		if ok6 {
			s.Links[i].State6 = l6.State
			s.Links[i].Reason6 = l6.Reason
			s.Links[i].FlowsKept6 = l6.FlowsKept
		}
		l, ok := by[s.Links[i].Name]
		if !ok && ok6 {
			l = l6 // an IPv6-only link: its state is its IPv6 side's
		} else if !ok {
			continue
		}
		since, rtt, jitter, loss := l.LastChange, l.RTTMillis, l.JitterMillis, l.Loss
		s.Links[i].State = l.State
		s.Links[i].StateSince = &since
		s.Links[i].Reason = l.Reason
		s.Links[i].RTTMillis = &rtt
		s.Links[i].JitterMillis = &jitter
		s.Links[i].Loss = &loss
		s.Links[i].Window = l.Window
		// Always set: a status is served again with the latest health
		// (the daemon's API), which may no longer keep them.
		s.Links[i].withOperator(l)
		s.Links[i].withDNS(l.DNS)
		s.Links[i].FlowsKept, s.Links[i].FlowsKeptSince = l.FlowsKept, nil
		if l.FlowsKept != "" {
			kept := l.FlowsKeptSince
			s.Links[i].FlowsKeptSince = &kept
		}
	}
}
