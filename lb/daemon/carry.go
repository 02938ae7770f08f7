package daemon

import "flowpin/nft"

// The nft counters are carried over the table's rewrites by the carry
// part (lb/daemon/carry); the daemon reads them around its own writes.

// trafficCounters are the counters of flowpin's rules (Deps.Traffic),
// carried over the table's rewrites.
func (d *Daemon) trafficCounters() (map[string]nft.Counter, error) {
	raw, err := d.deps.Traffic.Counters()
	if err != nil {
		return nil, err
	}
	return d.carry.Traffic.Adjust(raw), nil
}

// RuleHits are the traffic rules' counters (Deps.RuleHits), carried over
// the table's rewrites: what status and the rule metrics serve.
func (d *Daemon) RuleHits() (map[string]nft.Hits, error) {
	if d.deps.RuleHits == nil {
		return map[string]nft.Hits{}, nil
	}
	raw, err := d.deps.RuleHits.RuleHits()
	if err != nil {
		return nil, err
	}
	out := map[string]nft.Hits{}
	for k, c := range d.carry.Hits.Adjust(hitCounters(raw)) {
		out[k] = nft.Hits(c)
	}
	return out, nil
}

func hitCounters(h map[string]nft.Hits) map[string]nft.Counter {
	out := make(map[string]nft.Counter, len(h))
	for k, v := range h {
		out[k] = nft.Counter(v)
	}
	return out
}

// beginWrite reads the counters before a sync that may write the table,
// so that what its rules counted is carried if it does; endWrite follows
// the sync. A counter that cannot be read is left to the fall detection.
func (d *Daemon) beginWrite() {
	if d.deps.Traffic != nil {
		if raw, err := d.deps.Traffic.Counters(); err == nil {
			d.carry.Traffic.BeginWrite(raw)
		}
	}
	if d.deps.RuleHits != nil && len(d.Config.Rules) > 0 {
		if raw, err := d.deps.RuleHits.RuleHits(); err == nil {
			d.carry.Hits.BeginWrite(hitCounters(raw))
		}
	}
}

func (d *Daemon) endWrite(wrote bool) {
	d.carry.Traffic.EndWrite(wrote)
	d.carry.Hits.EndWrite(wrote)
}
