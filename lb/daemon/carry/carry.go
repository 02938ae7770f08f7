// Package carry keeps counters read from nft rules from going backwards
// over rewrites of flowpin's table. It is the daemon's part that owns the
// counters' offsets; it lives as long as the supervisor, across reloads,
// and is read from the status and metrics handlers' goroutines (hence its
// lock).
package carry

import (
	"maps"
	"sync"

	"flowpin/nft"
)

// Counter keeps counters read from nft rules from going backwards. A
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
type Counter struct {
	mu     sync.Mutex
	last   map[string]nft.Counter // as last read
	offset map[string]nft.Counter // what rules replaced since had counted
	// writing, while the daemon writes the table: the counters read just
	// before. A read meanwhile may see them before or after the write, so
	// it is answered with these.
	writing map[string]nft.Counter
}

// NewCounter returns a carry with nothing counted yet.
func NewCounter() *Counter {
	return &Counter{last: map[string]nft.Counter{}, offset: map[string]nft.Counter{}}
}

// Adjust turns a read of the raw counters into counters that never go
// backwards.
func (c *Counter) Adjust(raw map[string]nft.Counter) map[string]nft.Counter {
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
func (c *Counter) observe(raw map[string]nft.Counter) {
	for k, last := range c.last {
		if v, ok := raw[k]; !ok || v.Bytes < last.Bytes || v.Packets < last.Packets {
			c.offset[k] = plus(c.offset[k], last)
		}
	}
	c.last = maps.Clone(raw)
}

func (c *Counter) sum(raw map[string]nft.Counter) map[string]nft.Counter {
	out := maps.Clone(c.offset)
	for k, v := range raw {
		out[k] = plus(out[k], v)
	}
	return out
}

// BeginWrite is called with the counters read just before the daemon
// writes the table (nil: they could not be read; a fall will tell).
func (c *Counter) BeginWrite(raw map[string]nft.Counter) {
	if raw == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.observe(raw)
	c.writing = maps.Clone(c.last)
}

// EndWrite: the write is done; wrote says whether the table was written
// (its counters are zero again).
func (c *Counter) EndWrite(wrote bool) {
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

// Set is the daemon's counter carries: the links' traffic (nft.Counters)
// and the traffic rules' hits.
type Set struct {
	Traffic, Hits *Counter
}

// NewSet returns the two carries, with nothing counted yet.
func NewSet() *Set {
	return &Set{Traffic: NewCounter(), Hits: NewCounter()}
}
