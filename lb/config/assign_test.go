package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustParseAssign(t *testing.T, y string) *Config {
	t.Helper()
	c, err := Parse("f.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// links renders a config with links named by names; "name:mark=0x..",
// "name:table=N" set them explicitly.
func assignConfig(names ...string) string {
	var b strings.Builder
	b.WriteString("links:\n")
	for i, n := range names {
		name, extra, _ := strings.Cut(n, ":")
		fmt.Fprintf(&b, "  - {name: %s, interface: if%d, gateway: 10.0.%d.1", name, i, i)
		if extra != "" {
			k, v, _ := strings.Cut(extra, "=")
			fmt.Fprintf(&b, ", %s: %s", k, v)
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func TestAssign(t *testing.T) {
	type rec struct {
		name  string
		mark  uint32
		table int
	}
	for _, tc := range []struct {
		name    string
		links   []string
		records []rec    // as last applied, in the order found
		want    []string // name mark table
	}{
		{
			name:  "first apply: by position",
			links: []string{"a", "b", "c"},
			want:  []string{"a 0x100 101", "b 0x200 102", "c 0x300 103"},
		},
		{
			name:    "same config: same values",
			links:   []string{"a", "b", "c"},
			records: []rec{{"a", 0x100, 101}, {"b", 0x200, 102}, {"c", 0x300, 103}},
			want:    []string{"a 0x100 101", "b 0x200 102", "c 0x300 103"},
		},
		{
			name:    "remove the first of three",
			links:   []string{"b", "c"},
			records: []rec{{"a", 0x100, 101}, {"b", 0x200, 102}, {"c", 0x300, 103}},
			want:    []string{"b 0x200 102", "c 0x300 103"},
		},
		{
			name:    "insert at the front",
			links:   []string{"new", "b", "c"},
			records: []rec{{"b", 0x200, 102}, {"c", 0x300, 103}},
			want:    []string{"new 0x100 101", "b 0x200 102", "c 0x300 103"},
		},
		{
			name:    "reorder",
			links:   []string{"c", "a", "b"},
			records: []rec{{"a", 0x100, 101}, {"b", 0x200, 102}, {"c", 0x300, 103}},
			want:    []string{"c 0x300 103", "a 0x100 101", "b 0x200 102"},
		},
		{
			name:    "a new link avoids the values of a link removed in the same apply",
			links:   []string{"b", "c", "d"},
			records: []rec{{"a", 0x100, 101}, {"b", 0x200, 102}, {"c", 0x300, 103}},
			want:    []string{"b 0x200 102", "c 0x300 103", "d 0x400 104"},
		},
		{
			name:    "explicit mark wins over a record",
			links:   []string{"a:mark=0x500", "b"},
			records: []rec{{"a", 0x100, 101}, {"b", 0x200, 102}},
			want:    []string{"a 0x500 101", "b 0x200 102"},
		},
		{
			name:    "explicit table wins over a record",
			links:   []string{"a", "b:table=7"},
			records: []rec{{"a", 0x100, 101}, {"b", 0x200, 102}},
			want:    []string{"a 0x100 101", "b 0x200 7"},
		},
		{
			name:    "explicit value taken from another link's record: that link moves",
			links:   []string{"a", "b:mark=0x100"},
			records: []rec{{"a", 0x100, 101}, {"b", 0x200, 102}},
			want:    []string{"a 0x300 101", "b 0x100 102"},
		},
		{
			name:    "explicit table taken from another link's record",
			links:   []string{"a", "b:table=101"},
			records: []rec{{"a", 0x100, 101}, {"b", 0x200, 102}},
			want:    []string{"a 0x100 103", "b 0x200 101"},
		},
		{
			name:    "colliding records: the first keeps it",
			links:   []string{"a", "b"},
			records: []rec{{"a", 0x100, 101}, {"b", 0x100, 101}},
			want:    []string{"a 0x100 101", "b 0x200 102"},
		},
		{
			name:    "a record outside the mask or a reserved table is not used",
			links:   []string{"a"},
			records: []rec{{"a", 0x10000, 254}},
			want:    []string{"a 0x100 101"},
		},
		{
			name:    "two for one name: the last counts",
			links:   []string{"a", "b"},
			records: []rec{{"b", 0x400, 104}, {"b", 0x300, 105}},
			want:    []string{"a 0x100 101", "b 0x300 105"},
		},
		{
			name:  "a default skips an explicit table",
			links: []string{"a", "b:table=102", "c"},
			want:  []string{"a 0x100 101", "b 0x200 102", "c 0x300 103"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParseAssign(t, assignConfig(tc.links...))
			applied := map[string]Applied{}
			for _, r := range tc.records {
				applied[r.name] = Applied{Mark: r.mark, Table: r.table}
			}
			out, err := Assign(c, applied)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range out.Links {
				got = append(got, fmt.Sprintf("%s %#x %d", l.Name, l.Mark, l.Table))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			again, err := Assign(c, applied)
			if err != nil || !reflect.DeepEqual(out.Links, again.Links) {
				t.Errorf("Assign is not deterministic")
			}
			if c.Links[0].Mark != mustParseAssign(t, assignConfig(tc.links...)).Links[0].Mark {
				t.Errorf("Assign changed its input")
			}
		})
	}
}

func TestAssignFullMask(t *testing.T) {
	c := mustParseAssign(t, "mark_mask: 0x3\n"+assignConfig("a", "b", "c"))
	// Records hold every value: the new link must still get one, the
	// one released by a link that left.
	out, err := Assign(c, map[string]Applied{"a": {1, 101}, "b": {2, 102}, "gone": {3, 103}})
	if err != nil {
		t.Fatal(err)
	}
	if m := out.Links[2].Mark; m != 3 {
		t.Errorf("c got mark %#x, want 0x3 (the only one left)", m)
	}
	c = mustParseAssign(t, "mark_mask: 0x3\n"+assignConfig("a", "b:mark=3", "c"))
	if _, err := Assign(c, map[string]Applied{"a": {1, 101}, "c": {3, 103}, "x": {2, 104}}); err != nil {
		t.Fatal(err)
	}
}

// fakeApplied stands in for the records in flowpin's nft table.
type fakeApplied struct {
	links map[string]Applied
	err   error
	reads int
}

func (f *fakeApplied) AppliedLinks() (map[string]Applied, error) {
	f.reads++
	return f.links, f.err
}

// Every command loads the config, then takes the links' marks and tables
// from what was last applied; a config that does not load reads nothing,
// and a failed read is the command's error.
func TestLoadResolved(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(assignConfig("new", "b", "c:mark=0x100")), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("links: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	f := &fakeApplied{links: map[string]Applied{"b": {0x200, 102}, "c": {0x300, 103}, "gone": {0x100, 101}}}
	c, err := LoadResolved(good, f)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range c.Links {
		got = append(got, fmt.Sprintf("%s %#x %d", l.Name, l.Mark, l.Table))
	}
	// b keeps its values; c's explicit mark wins but it keeps its table;
	// new avoids every value applied before (gone's flows, and c's under
	// its old mark, may still carry them).
	if diff := cmp.Diff([]string{"new 0x400 104", "b 0x200 102", "c 0x100 103"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if f.reads != 1 {
		t.Errorf("%d reads of what was applied, want 1", f.reads)
	}

	f = &fakeApplied{}
	if _, err := LoadResolved(bad, f); err == nil || !strings.HasPrefix(err.Error(), bad+":") {
		t.Errorf("bad config: %v", err)
	}
	if f.reads != 0 {
		t.Errorf("a config that does not load read what was applied")
	}
	if _, err := LoadResolved(filepath.Join(dir, "missing.yaml"), f); err == nil || f.reads != 0 {
		t.Errorf("missing config: %v, %d reads", err, f.reads)
	}

	boom := errors.New("nftables: boom")
	if _, err := LoadResolved(good, &fakeApplied{err: boom}); !errors.Is(err, boom) {
		t.Errorf("failed read: %v, want %v", err, boom)
	}

	// Nothing applied yet: the links take values by position.
	parsed := mustParseAssign(t, assignConfig("a", "b"))
	c, err = Resolve(parsed, &fakeApplied{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Links[0].Mark != 0x100 || c.Links[1].Table != 102 || c == parsed {
		t.Errorf("first apply: %+v", c.Links)
	}
}
