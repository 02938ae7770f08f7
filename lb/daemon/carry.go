package daemon

import (
	"maps"
	"sync"

	"flowpin/nft"
)

// counterCarry keeps counters read from nft rules from going backwards. A
// write of flowpin's table (a reload that changes the rules, a repaired
// drift) replaces its rules, and a new rule's counter starts at zero:
// what the old rule had counted is carried over as an offset, so
// flowpin_link_bytes_total, the packets and the rules' hits go on
// counting. The daemon reads the counters just before each of its own
// writes; a rewrite by someone else shows as a counter that fell, and
// what it had counted at the last read is carried.
//
// One carry follows one set of keys (nft.Counters' or the rules' hits)
// and lives as long as the supervisor, across reloads.
type counterCarry struct {
	mu     sync.Mutex
	last   map[string]nft.Counter // as last read
	offset map[string]nft.Counter // what rules replaced since had counted
	// writing, while the daemon writes the table: the counters read just
	// before. A read meanwhile may see them before or after the write, so
	// it is answered with these.
	writing map[string]nft.Counter
}

func newCounterCarry() *counterCarry {
	return &counterCarry{last: map[string]nft.Counter{}, offset: map[string]nft.Counter{}}
}

// adjust turns a read of the raw counters into counters that never go
// backwards.
func (c *counterCarry) adjust(raw map[string]nft.Counter) map[string]nft.Counter {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writing != nil {
		return c.sum(c.writing)
	}
	c.observe(raw)
	return c.sum(c.last)
}

// observe records a raw read: a counter that fell, or a rule that is gone,
// was replaced since the last read, and what it had counted is carried.
func (c *counterCarry) observe(raw map[string]nft.Counter) {
	for k, last := range c.last {
		if v, ok := raw[k]; !ok || v.Bytes < last.Bytes || v.Packets < last.Packets {
			c.offset[k] = plus(c.offset[k], last)
		}
	}
	c.last = maps.Clone(raw)
}

func (c *counterCarry) sum(raw map[string]nft.Counter) map[string]nft.Counter {
	out := maps.Clone(c.offset)
	for k, v := range raw {
		out[k] = plus(out[k], v)
	}
	return out
}

// beginWrite is called with the counters read just before the daemon
// writes the table (nil: they could not be read; a fall will tell).
func (c *counterCarry) beginWrite(raw map[string]nft.Counter) {
	if raw == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.observe(raw)
	c.writing = maps.Clone(c.last)
}

// endWrite: the write is done; wrote says whether the table was written
// (its counters are zero again).
func (c *counterCarry) endWrite(wrote bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writing == nil {
		return
	}
	if wrote {
		for k, v := range c.writing {
			c.offset[k] = plus(c.offset[k], v)
		}
		c.last = map[string]nft.Counter{}
	}
	c.writing = nil
}

func plus(a, b nft.Counter) nft.Counter {
	return nft.Counter{Packets: a.Packets + b.Packets, Bytes: a.Bytes + b.Bytes}
}

// carries are the daemon's counter carries: the links' traffic
// (nft.Counters) and the traffic rules' hits.
type carries struct {
	traffic, hits *counterCarry
}

func newCarries() *carries {
	return &carries{traffic: newCounterCarry(), hits: newCounterCarry()}
}

// trafficCounters are the counters of flowpin's rules (Deps.Traffic),
// carried over the table's rewrites.
func (d *Daemon) trafficCounters() (map[string]nft.Counter, error) {
	raw, err := d.deps.Traffic.Counters()
	if err != nil {
		return nil, err
	}
	return d.carry.traffic.adjust(raw), nil
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
	for k, c := range d.carry.hits.adjust(hitCounters(raw)) {
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
			d.carry.traffic.beginWrite(raw)
		}
	}
	if d.deps.RuleHits != nil && len(d.Config.Rules) > 0 {
		if raw, err := d.deps.RuleHits.RuleHits(); err == nil {
			d.carry.hits.beginWrite(hitCounters(raw))
		}
	}
}

func (d *Daemon) endWrite(wrote bool) {
	d.carry.traffic.endWrite(wrote)
	d.carry.hits.endWrite(wrote)
}
