package carry

import (
	"testing"

	"flowpin/nft"
)

// The carry in steps: reads that grow, a write by the daemon (announced),
// a rewrite by someone else (a counter that fell), a rule that went and
// came back. The answer never falls.
func TestCounterCarry(t *testing.T) {
	c := NewCounter()
	n := func(b uint64) nft.Counter { return nft.Counter{Packets: b / 100, Bytes: b} }
	read := func(raw map[string]nft.Counter) uint64 { return c.Adjust(raw)["k"].Bytes }
	for _, step := range []struct {
		what string
		do   func() uint64
		want uint64
	}{
		{"first read", func() uint64 { return read(map[string]nft.Counter{"k": n(1000)}) }, 1000},
		{"grows", func() uint64 { return read(map[string]nft.Counter{"k": n(1500)}) }, 1500},
		{"the daemon writes the table: a read meanwhile", func() uint64 {
			c.BeginWrite(map[string]nft.Counter{"k": n(1600)})
			return read(map[string]nft.Counter{"k": n(0)})
		}, 1600},
		{"after the write", func() uint64 { c.EndWrite(true); return read(map[string]nft.Counter{"k": n(100)}) }, 1700},
		{"a write that wrote nothing", func() uint64 {
			c.BeginWrite(map[string]nft.Counter{"k": n(200)})
			c.EndWrite(false)
			return read(map[string]nft.Counter{"k": n(300)})
		}, 1900},
		{"someone else rewrote it", func() uint64 { return read(map[string]nft.Counter{"k": n(50)}) }, 1950},
		{"the rule is gone", func() uint64 { return read(map[string]nft.Counter{}) }, 1950},
		{"and back", func() uint64 { return read(map[string]nft.Counter{"k": n(10)}) }, 1960},
	} {
		if got := step.do(); got != step.want {
			t.Fatalf("%s: %d, want %d", step.what, got, step.want)
		}
	}
}
