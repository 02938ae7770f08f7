package status

import "flowpin/lb/health"

// WithHealth fills in the daemon's view of each link.
func (s *Status) WithHealth(h []health.LinkHealth) {
	s.Daemon = true
	by := map[string]health.LinkHealth{}
	for _, l := range h {
		by[l.Name] = l
	}
	for i := range s.Links {
		l, ok := by[s.Links[i].Name]
		if !ok {
			continue
		}
		since, rtt, loss := l.LastChange, l.RTTMillis, l.Loss
		s.Links[i].State = l.State
		s.Links[i].StateSince = &since
		s.Links[i].Reason = l.Reason
		s.Links[i].RTTMillis = &rtt
		s.Links[i].Loss = &loss
	}
}
