package config

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const twoLinks = `links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    weight: 3
    nat: true
  - name: isp2
    interface: wan2
    gateway: 198.51.100.1
    weight: 1
    nat: true
`

func TestParseConfigDefaults(t *testing.T) {
	c, err := Parse("f.yaml", []byte(twoLinks))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Path:         "f.yaml",
		MarkMask:     0xff00,
		BalanceTable: 100,
		PriorityBase: 1000,
		Links: []Link{
			{Name: "isp1", Interface: "wan1", Gateway: netip.MustParseAddr("192.0.2.1"), Weight: 3, NAT: true, Table: 101, Mark: 0x100, Check: defaultCheck},
			{Name: "isp2", Interface: "wan2", Gateway: netip.MustParseAddr("198.51.100.1"), Weight: 1, NAT: true, Table: 102, Mark: 0x200, Check: defaultCheck},
		},
	}
	if d := cmp.Diff(want, c, cmpopts.IgnoreUnexported(Config{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("config (-want +got):\n%s", d)
	}
}

var defaultCheck = HealthCheck{Interval: 500 * time.Millisecond, Timeout: time.Second, Fall: 3, Rise: 3, Quorum: 1}

func TestParseConfigCheck(t *testing.T) {
	c, err := Parse("f.yaml", []byte(`links:
  - name: a
    interface: eth0
    gateway: auto
    check:
      targets: [203.0.113.10, 198.51.100.53]
      interval: 300ms
      timeout: 250ms
      fall: 2
      rise: 4
      quorum: 2
`))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Links[0]
	want := HealthCheck{Targets: []netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("198.51.100.53")},
		Interval: 300 * time.Millisecond, Timeout: 250 * time.Millisecond, Fall: 2, Rise: 4, Quorum: 2}
	if !l.GatewayAuto || l.Gateway.IsValid() {
		t.Errorf("gateway auto: %+v", l)
	}
	if d := cmp.Diff(want, l.Check, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("check (-want +got):\n%s", d)
	}
}

func TestParseConfigOverrides(t *testing.T) {
	c, err := Parse("f.yaml", []byte(`mark_mask: 0x00ff0000
balance_table: 500
priority_base: 2000
links:
  - {name: a, interface: eth0, gateway: 10.0.0.1}
  - {name: b, interface: eth1, gateway: 10.0.1.1, table: 77, mark: 0x00420000}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.MarkMask != 0xff0000 || c.BalanceTable != 500 || c.PriorityBase != 2000 {
		t.Errorf("top-level overrides not taken: %+v", c)
	}
	if l := c.Links[0]; l.Mark != 0x10000 || l.Table != 501 || l.Weight != 1 || l.NAT {
		t.Errorf("link a defaults: %+v", l)
	}
	if l := c.Links[1]; l.Mark != 0x420000 || l.Table != 77 {
		t.Errorf("link b overrides: %+v", l)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       string // the whole one-line message
	}{
		{"syntax", "links:\n  - name: a\n   interface: x\n", "f.yaml:1: yaml syntax error: did not find expected '-' indicator"},
		{"unknown key", "links:\n  - name: a\n    interfce: wan1\n", `f.yaml:3: unknown key "interfce" in a link`},
		{"unknown top key", "linx: []\n", `f.yaml:1: unknown key "linx" in top level`},
		{"empty", "", "f.yaml: empty config: no links"},
		{"no links", "links: []\n", "f.yaml:1: links: no links: at least one is needed"},
		{"duplicate name", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1}\n  - {name: a, interface: y, gateway: 10.0.1.1}\n", `f.yaml:3: links[1].name: duplicate link name "a" (also links[0])`},
		{"weight 0", "links:\n  - name: a\n    interface: x\n    gateway: 10.0.0.1\n    weight: 0\n", "f.yaml:5: links[0].weight: 0 is out of range (1..256)"},
		{"weight negative", "links:\n  - name: a\n    interface: x\n    gateway: 10.0.0.1\n    weight: -2\n", "f.yaml:5: links[0].weight: -2 is out of range (1..256)"},
		{"weight too big", "links:\n  - name: a\n    interface: x\n    gateway: 10.0.0.1\n    weight: 257\n", "f.yaml:5: links[0].weight: 257 is out of range (1..256)"},
		{"weight not a number", "links:\n  - name: a\n    interface: x\n    gateway: 10.0.0.1\n    weight: heavy\n", "f.yaml:5: cannot unmarshal !!str `heavy` into int64"},
		{"gateway not ip", "links:\n  - name: a\n    interface: x\n    gateway: router.lan\n", `f.yaml:4: links[0].gateway: "router.lan" is not an IP address (or auto)`},
		{"missing gateway", "links:\n  - name: a\n    interface: x\n", `f.yaml:2: links[0].gateway: missing for link "a" (an address, or auto)`},
		{"missing interface", "links:\n  - name: a\n    gateway: 10.0.0.1\n", `f.yaml:2: links[0].interface: missing for link "a"`},
		{"same interface", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1}\n  - {name: b, interface: x, gateway: 10.0.0.2}\n", `f.yaml:3: links[1].interface: "x" is already used by links[0]`},
		{"reserved table", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, table: 254}\n", "f.yaml:2: links[0].table: 254 is reserved by the kernel (default, main, local)"},
		{"table clash", "balance_table: 7\nlinks:\n  - {name: a, interface: x, gateway: 10.0.0.1, table: 7}\n", "f.yaml:3: links[0].table: table 7 is already used by balance_table"},
		{"mark outside mask", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, mark: 0x1}\n", "f.yaml:2: links[0].mark: 0x1 must be non-zero and inside mark_mask 0xff00"},
		{"mark twice", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, mark: 0x200}\n  - {name: b, interface: y, gateway: 10.0.1.1, mark: 0x200}\n", "f.yaml:3: links[1].mark: 0x200 is already used by links[0]"},
		{"bad mask", "mark_mask: 0\nlinks:\n  - {name: a, interface: x, gateway: 10.0.0.1}\n", "f.yaml:1: mark_mask: 0x0 is not a non-zero 32-bit mask"},
		{"priority", "priority_base: 32700\nlinks:\n  - {name: a, interface: x, gateway: 10.0.0.1}\n", "f.yaml:1: priority_base: 32700 is out of range (1..32365): flowpin's rules must sit between the local (0) and main (32766) rules"},
		{"ipv6 gateway", "links:\n  - {name: a, interface: x, gateway: '2001:db8::1'}\n", "f.yaml:2: links[0].gateway: 2001:db8::1: only IPv4 gateways are supported so far"},
		{"check quorum", "links:\n  - name: a\n    interface: x\n    gateway: 10.0.0.1\n    check: {targets: [10.0.0.9], quorum: 2}\n", "f.yaml:5: links[0].check: quorum: 2 is more than the 1 targets"},
		{"check interval", "links:\n  - name: a\n    interface: x\n    gateway: 10.0.0.1\n    check: {interval: 1ms}\n", "f.yaml:5: links[0].check: interval: 1ms is out of range (50ms..1m)"},
		{"check target", "links:\n  - name: a\n    interface: x\n    gateway: 10.0.0.1\n    check: {targets: [example.com]}\n", `f.yaml:5: links[0].check: targets[0]: "example.com" is not an IPv4 address`},
		{"bad name", "links:\n  - {name: 'a b', interface: x, gateway: 10.0.0.1}\n", `f.yaml:2: links[0].name: "a b": use letters, digits, '-', '_' and '.' (at most 32)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("error is %T, want *ConfigError", err)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := Load("/nonexistent/flowpin.yaml")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/flowpin.yaml") {
		t.Fatalf("error %v does not name the file", err)
	}
}

func TestMaskValues(t *testing.T) {
	for _, tc := range []struct {
		mask uint32
		n    int
		head []uint32
	}{
		{0xff00, 100, []uint32{0x100, 0x200, 0x300}},
		{0x0300, 3, []uint32{0x100, 0x200, 0x300}},
		{0x80000000, 1, []uint32{0x80000000}},
	} {
		got := maskValues(tc.mask)
		if len(got) != tc.n || !hasPrefix(got, tc.head) {
			t.Errorf("maskValues(%#x) = %#x (len %d), want %d starting %#x", tc.mask, got[:min(len(got), 4)], len(got), tc.n, tc.head)
		}
	}
}

func hasPrefix(s, p []uint32) bool {
	if len(s) < len(p) {
		return false
	}
	for i := range p {
		if s[i] != p[i] {
			return false
		}
	}
	return true
}

// The shipped example configs must stay valid.
func TestExampleConfigs(t *testing.T) {
	paths, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(paths) < 3 {
		t.Fatalf("examples: %v %v", paths, err)
	}
	for _, p := range paths {
		if _, err := Load(p); err != nil {
			t.Errorf("%v", err)
		}
	}
}
