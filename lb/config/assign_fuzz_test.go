package config

import (
	"encoding/binary"
	"testing"
)

// FuzzAssign: whatever was last applied (by this config, an older one, or
// read from damaged records), Assign gives every link a distinct mark
// under the mask and a distinct table that is not a reserved one (main,
// local, default) nor the balance table, keeping the values the config
// sets. The input is read 9 bytes at a time: a name (one of a few, so
// that they meet the config's), a mark and a table.
func FuzzAssign(f *testing.F) {
	entry := func(name byte, mark, table uint32) []byte {
		b := []byte{name}
		b = binary.BigEndian.AppendUint32(b, mark)
		return binary.BigEndian.AppendUint32(b, table)
	}
	f.Add(append(entry(0, 0x100, 101), entry(4, 0x200, 102)...))
	f.Add(append(entry(1, 0x100, 101), entry(2, 0x100, 101)...))
	f.Add(append(entry(0, 0x300, 100), entry(2, 0x10000, 0xffffffff)...))
	f.Add(append(entry(3, 0, 0), entry(0, 0x200, 254)...))
	names := []string{"a", "b", "c", "d", "gone"}
	cfg, err := Parse("f.yaml", []byte(assignConfig("a", "b:mark=0x200", "c:table=150", "d")))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		applied := map[string]Applied{}
		for ; len(in) >= 9; in = in[9:] {
			applied[names[int(in[0])%len(names)]] = Applied{Mark: binary.BigEndian.Uint32(in[1:]), Table: int(binary.BigEndian.Uint32(in[5:]))}
		}
		out, err := Assign(cfg, applied)
		if err != nil {
			return
		}
		marks, tables := map[uint32]bool{}, map[int]bool{}
		for i, l := range out.Links {
			if l.Mark == 0 || l.Mark&^cfg.MarkMask != 0 || marks[l.Mark] {
				t.Fatalf("link %s: mark %#x (mask %#x, taken %v)", l.Name, l.Mark, cfg.MarkMask, marks[l.Mark])
			}
			if CheckTableID(int64(l.Table)) != nil || tables[l.Table] || l.Table == cfg.BalanceTable {
				t.Fatalf("link %s: table %d (taken %v, balance table %d)", l.Name, l.Table, tables[l.Table], cfg.BalanceTable)
			}
			marks[l.Mark], tables[l.Table] = true, true
			if c := cfg.Links[i]; (c.MarkSet && c.Mark != l.Mark) || (c.TableSet && c.Table != l.Table) {
				t.Fatalf("link %s: the config's mark %#x table %d became %#x %d", l.Name, c.Mark, c.Table, l.Mark, l.Table)
			}
		}
	})
}
