package plan

import (
	"strings"
	"testing"

	"flowpin/lb/config"
)

// FuzzLinkRecords: whatever records a table holds (flowpin's own, an older
// flowpin's, or damaged ones), reading them never panics, every record
// read back formats to a record that reads the same, and Assign still
// gives every link a distinct mark under the mask and a distinct table
// that is not a reserved one (main, local, default),
// keeping the values the config sets.
func FuzzLinkRecords(f *testing.F) {
	f.Add(FormatLinkRecord("a", 0x100, 101) + "\n" + FormatLinkRecord("gone", 0x200, 102))
	f.Add(FormatLinkRecord("b", 0x100, 101) + "\n" + FormatLinkRecord("c", 0x100, 101))
	f.Add("link a mark=0x300 table=100\nlink c mark=0x10000 table=4294967295")
	f.Add("link  mark= table=\nfoo\nlink a mark=1 table=1 extra")
	cfg, err := config.Parse("f.yaml", []byte(assignConfig("a", "b:mark=0x200", "c:table=150", "d")))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		records := strings.Split(in, "\n")
		got := ParseLinkRecords(records)
		for name, r := range got {
			again := ParseLinkRecords([]string{FormatLinkRecord(name, r.Mark, r.Table)})
			if len(again) != 1 || again[name] != r {
				t.Fatalf("record %q %+v formats to %q, which reads as %+v", name, r, FormatLinkRecord(name, r.Mark, r.Table), again)
			}
		}
		out, err := Assign(cfg, records)
		if err != nil {
			return
		}
		marks, tables := map[uint32]bool{}, map[int]bool{}
		for i, l := range out.Links {
			if l.Mark == 0 || l.Mark&^cfg.MarkMask != 0 || marks[l.Mark] {
				t.Fatalf("link %s: mark %#x (mask %#x, taken %v)", l.Name, l.Mark, cfg.MarkMask, marks[l.Mark])
			}
			if config.CheckTableID(int64(l.Table)) != nil || tables[l.Table] || l.Table == cfg.BalanceTable {
				t.Fatalf("link %s: table %d (taken %v, balance table %d)", l.Name, l.Table, tables[l.Table], cfg.BalanceTable)
			}
			marks[l.Mark], tables[l.Table] = true, true
			if c := cfg.Links[i]; (c.MarkSet && c.Mark != l.Mark) || (c.TableSet && c.Table != l.Table) {
				t.Fatalf("link %s: the config's mark %#x table %d became %#x %d", l.Name, c.Mark, c.Table, l.Mark, l.Table)
			}
		}
	})
}
