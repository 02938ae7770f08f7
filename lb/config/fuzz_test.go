package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"
)

// FuzzParse: no input panics the parser; every error is one short line
// that names the file and shows no raw control character; a config that
// parses, written back out with every value explicit, parses to the same
// config and keeps the invariants the planner relies on.
func FuzzParse(f *testing.F) {
	paths, _ := filepath.Glob("../../examples/*.yaml")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add(twoLinks)
	for _, tc := range errorCases {
		if len(tc.yaml) <= 4096 {
			f.Add(tc.yaml)
		}
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse("f.yaml", []byte(in))
		if err != nil {
			checkMessage(t, err.Error())
			return
		}
		checkInvariants(t, c)
		out := render(t, c)
		again, err := Parse("f.yaml", out)
		if err != nil {
			t.Fatalf("written back, the config no longer parses: %v\n%s", err, out)
		}
		if d := cmp.Diff(c, again, cmpopts.IgnoreUnexported(Config{}), cmpopts.EquateComparable(netip.Addr{})); d != "" {
			t.Fatalf("written back, the config parses differently (-first +again):\n%s\n%s", d, out)
		}
	})
}

func checkMessage(t *testing.T, msg string) {
	t.Helper()
	if !strings.HasPrefix(msg, "f.yaml:") && !strings.HasPrefix(msg, "f.yaml: ") {
		t.Fatalf("error does not start with the file: %q", msg)
	}
	if len(msg) > 400 {
		t.Fatalf("error of %d bytes: %q", len(msg), msg)
	}
	if !utf8.ValidString(msg) {
		t.Fatalf("error is not valid UTF-8: %q", msg)
	}
	for _, r := range msg {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			t.Fatalf("error carries control character %U: %q", r, msg)
		}
	}
}

func checkInvariants(t *testing.T, c *Config) {
	t.Helper()
	if len(c.Links) == 0 || len(c.Links) > MaxLinks {
		t.Fatalf("%d links", len(c.Links))
	}
	if err := CheckTableID(int64(c.BalanceTable)); err != nil {
		t.Fatalf("balance_table %d %v", c.BalanceTable, err)
	}
	tables := map[int]bool{c.BalanceTable: true}
	marks := map[uint32]bool{}
	// Every table and mark is valid; explicit ones are also distinct
	// (plan.Assign moves a default out of their way).
	for _, l := range c.Links {
		if err := CheckTableID(int64(l.Table)); err != nil || (l.TableSet && tables[l.Table]) {
			t.Fatalf("link %s table %d: %v (or used twice)", l.Name, l.Table, err)
		}
		if err := CheckMark(int64(l.Mark), c.MarkMask); err != nil || (l.MarkSet && marks[l.Mark]) {
			t.Fatalf("link %s mark %#x: %v (or used twice)", l.Name, l.Mark, err)
		}
		if l.TableSet {
			tables[l.Table] = true
		}
		if l.MarkSet {
			marks[l.Mark] = true
		}
		if !validName(l.Name) || !validInterface(l.Interface) || l.Weight < 1 || l.Weight > MaxWeight {
			t.Fatalf("link %+v", l)
		}
		if l.GatewayAuto == l.Gateway.IsValid() {
			t.Fatalf("link %s: gateway %v, auto %v", l.Name, l.Gateway, l.GatewayAuto)
		}
		if len(l.Check.Targets) > MaxTargets || l.Check.Quorum > max(1, len(l.Check.Targets)) {
			t.Fatalf("link %s check %+v", l.Name, l.Check)
		}
	}
}

// render writes c back as YAML with every value explicit, but for
// default tables and marks, which plan.Assign may still move.
func render(t *testing.T, c *Config) []byte {
	t.Helper()
	i64 := func(v int64) *int64 { return &v }
	raw := rawConfig{MarkMask: i64(int64(c.MarkMask)), BalanceTable: i64(int64(c.BalanceTable)), PriorityBase: i64(int64(c.PriorityBase))}
	for _, l := range c.Links {
		gw := "auto"
		if !l.GatewayAuto {
			gw = l.Gateway.String()
		}
		ch := l.Check
		rc := &rawCheck{Interval: &ch.Interval, Timeout: &ch.Timeout, Fall: i64(int64(ch.Fall)), Rise: i64(int64(ch.Rise)), Quorum: i64(int64(ch.Quorum))}
		for _, a := range ch.Targets {
			rc.Targets = append(rc.Targets, a.String())
		}
		rl := rawLink{Name: l.Name, Interface: l.Interface, Gateway: gw, Weight: i64(int64(l.Weight)), NAT: l.NAT, Check: rc}
		if l.TableSet {
			rl.Table = i64(int64(l.Table))
		}
		if l.MarkSet {
			rl.Mark = i64(int64(l.Mark))
		}
		raw.Links = append(raw.Links, rl)
	}
	out, err := yaml.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
