package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
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
			{Name: "isp1", Interface: "wan1", Gateway: netip.MustParseAddr("192.0.2.1"), Weight: 3, NAT: true, Table: 101, Mark: 0x100, Tier: 1, Check: defaultCheck},
			{Name: "isp2", Interface: "wan2", Gateway: netip.MustParseAddr("198.51.100.1"), Weight: 1, NAT: true, Table: 102, Mark: 0x200, Tier: 1, Check: defaultCheck},
		},
		Policies: []Policy{{Name: "default", Tiers: [][]int{{0, 1}}, LastResort: Unreachable, Failback: Keep, Implicit: true}},
		Hooks:    Hooks{Timeout: DefaultHookTimeout},
	}
	if d := cmp.Diff(want, c, cmpopts.IgnoreUnexported(Config{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("config (-want +got):\n%s", d)
	}
}

var defaultCheck = HealthCheck{Interval: 300 * time.Millisecond, Timeout: 300 * time.Millisecond, Fall: 3, Rise: 3, Quorum: 1, Window: 10, Method: ProbeICMP}

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
		Interval: 300 * time.Millisecond, Timeout: 250 * time.Millisecond, Fall: 2, Rise: 4, Quorum: 2, Window: 10, Method: ProbeICMP}
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

// link0 is one valid link followed by extra lines of it.
func link0(extra string) string {
	return "links:\n  - name: a\n    interface: x\n    gateway: 10.0.0.1\n" + extra
}

// manyLinks is n links in flow style, one a line, from line 2.
func manyLinks(n int) string {
	var b strings.Builder
	b.WriteString("links:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: l%d, interface: e%d, gateway: 10.0.0.1}\n", i, i)
	}
	return b.String()
}

// errorCases are bad configs and the whole one-line message each gets.
// FuzzParse starts from them too.
var errorCases = []struct {
	name, yaml string
	want       string
}{
	{"syntax", "links:\n  - name: a\n   interface: x\n", "f.yaml:1: yaml syntax error: did not find expected '-' indicator"},
	{"unknown key", "links:\n  - name: a\n    interfce: wan1\n", `f.yaml:3: links[0]: unknown key "interfce" (did you mean "interface"?)`},
	{"unknown top key", "linx: []\n", `f.yaml:1: unknown key "linx" at the top level (did you mean "links"?)`},
	{"unknown key far from any", "links:\n  - name: a\n    colour: red\n", `f.yaml:3: links[0]: unknown key "colour"`},
	{"unknown check key", link0("    check:\n      targets: [10.0.0.9]\n      intervl: 1s\n"), `f.yaml:7: links[0].check: unknown key "intervl" (did you mean "interval"?)`},
	{"unknown key in second link's check", link0("  - name: b\n    interface: y\n    gateway: 10.0.0.2\n    check: {fal: 2}\n"), `f.yaml:8: links[1].check: unknown key "fal" (did you mean "fall"?)`},
	{"unknown key in a merged mapping", "x: &d {intervl: 1s}\n", `f.yaml:1: unknown key "x" at the top level`},
	{"unknown key merged into check", "links:\n  - name: a\n    interface: x\n    gateway: 10.0.0.1\n    check: {<<: {intervl: 1s}}\n", `f.yaml:5: links[0].check: unknown key "intervl" (did you mean "interval"?)`},
	{"key twice", "links:\n  - name: a\n    name: b\n", `f.yaml:3: links[0]: key "name" appears twice`},
	{"empty", "", "f.yaml: empty config: no links"},
	{"only a comment", "# nothing\n", "f.yaml: empty config: no links"},
	{"no links", "links: []\n", "f.yaml:1: links: no links: at least one is needed"},
	{"top level is a list", "- links\n", "f.yaml:1: the config is a list; it must be a mapping of keys (links: ...)"},
	{"links not a list", "links: isp1\n", "f.yaml:1: links: want a list, not a single value"},
	{"check not a mapping", link0("    check: [10.0.0.9]\n"), "f.yaml:5: links[0].check: want a mapping of keys, not a list"},
	{"name is a list", "links:\n  - name: [a]\n", "f.yaml:2: links[0].name: want a single value, not a list"},
	{"second document", twoLinks + "---\nlinks: []\n", "f.yaml:12: a second YAML document: a config is one document (remove the ---)"},
	{"too many links", manyLinks(100), "f.yaml:2: links: 100 entries: at most 99 are supported"},
	{"too many targets", link0("    check:\n      targets: [" + strings.Repeat("10.0.0.9, ", 16) + "10.0.0.9]\n"), "f.yaml:6: links[0].check.targets: 17 entries: at most 16 are supported"},
	{"file too large", twoLinks + strings.Repeat("#", MaxFileSize), "f.yaml: larger than 1 MiB, the most a config may be"},
	{"duplicate name", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1}\n  - {name: a, interface: y, gateway: 10.0.1.1}\n", `f.yaml:3: links[1].name: duplicate link name "a" (also links[0])`},
	{"long name", "links:\n  - {name: " + strings.Repeat("n", 100_000) + ", interface: x, gateway: 10.0.0.1}\n", `f.yaml:2: links[0].name: "` + strings.Repeat("n", 64) + `"… (100000 bytes): use letters, digits, '-', '_' and '.' (at most 32)`},
	{"escape sequence in name", "links:\n  - {name: \"\\e[31mred\\r\", interface: x, gateway: 10.0.0.1}\n", `f.yaml:2: links[0].name: "\x1b[31mred\r": use letters, digits, '-', '_' and '.' (at most 32)`},
	{"weight 0", link0("    weight: 0\n"), "f.yaml:5: links[0].weight: 0 is out of range (1..256)"},
	{"weight negative", link0("    weight: -2\n"), "f.yaml:5: links[0].weight: -2 is out of range (1..256)"},
	{"weight too big", link0("    weight: 257\n"), "f.yaml:5: links[0].weight: 257 is out of range (1..256)"},
	{"weight not a number", link0("    weight: heavy\n"), `f.yaml:5: links[0].weight: "heavy" is not an integer`},
	{"weight overflows int64", link0("    weight: 99999999999999999999\n"), `f.yaml:5: links[0].weight: "99999999999999999999" is not an integer`},
	{"quoted number", link0("    weight: \"3\"\n"), `f.yaml:5: links[0].weight: "3" is in quotes, which make it a string: write it without them`},
	{"quoted bool", link0("    nat: 'true'\n"), `f.yaml:5: links[0].nat: "true" is in quotes, which make it a string: write it without them`},
	{"nat not a bool", link0("    nat: maybe\n"), `f.yaml:5: links[0].nat: "maybe" is not true or false`},
	{"interval not a duration", link0("    check: {interval: soon}\n"), `f.yaml:5: links[0].check.interval: "soon" is not a duration (like 500ms or 2s)`},
	{"gateway not ip", "links:\n  - name: a\n    interface: x\n    gateway: router.lan\n", `f.yaml:4: links[0].gateway: "router.lan" is not an IP address (or auto)`},
	{"gateway broadcast", "links:\n  - name: a\n    interface: x\n    gateway: 255.255.255.255\n", `f.yaml:4: links[0].gateway: 255.255.255.255 cannot be a next hop`},
	{"missing gateway", "links:\n  - name: a\n    interface: x\n", `f.yaml:2: links[0].gateway: missing for link "a": give gateway (IPv4: an address, or auto), gateway6 (IPv6: an address, or auto), or both`},
	{"missing interface", "links:\n  - name: a\n    gateway: 10.0.0.1\n", `f.yaml:2: links[0].interface: missing for link "a"`},
	{"interface with colon", "links:\n  - {name: a, interface: 'eth0:1', gateway: 10.0.0.1}\n", `f.yaml:2: links[0].interface: "eth0:1" is not a valid interface name`},
	{"interface with a backslash", "links:\n  - {name: a, interface: 'w\\x', gateway: 10.0.0.1}\n", `f.yaml:2: links[0].interface: "w\\x" is not a valid interface name`},
	{"interface with a star", "links:\n  - {name: a, interface: 'wan*', gateway: 10.0.0.1}\n", `f.yaml:2: links[0].interface: "wan*" is not a valid interface name`},
	{"interface with a newline", "links:\n  - {name: a, interface: \"w\\nid\", gateway: 10.0.0.1}\n", `f.yaml:2: links[0].interface: "w\nid" is not a valid interface name`},
	{"interface that does not print", "links:\n  - {name: a, interface: \"w\\u200bx\", gateway: 10.0.0.1}\n", `f.yaml:2: links[0].interface: "w\u200bx" is not a valid interface name`},
	{"interface too long", "links:\n  - {name: a, interface: abcdefghijklmnop, gateway: 10.0.0.1}\n", `f.yaml:2: links[0].interface: "abcdefghijklmnop" is not a valid interface name`},
	{"same interface and gateway", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1}\n  - {name: b, interface: x, gateway: 10.0.0.1}\n", `f.yaml:3: links[1].gateway: 10.0.0.1 on interface x is already links[0]'s: links on one interface need different next hops`},
	{"same interface and gateway6", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, gateway6: 'fe80::1'}\n  - {name: b, interface: x, gateway: 10.0.0.2, gateway6: 'fe80::1%x'}\n", `f.yaml:3: links[1].gateway6: fe80::1 on interface x is already links[0]'s: links on one interface need different next hops`},
	{"shared interface auto", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1}\n  - name: b\n    interface: x\n    gateway: auto\n", `f.yaml:5: links[1].gateway: auto on interface x, which links[0] also uses: links on one interface are told apart by their next hops, so give each its own address`},
	{"shared interface, first auto", "links:\n  - {name: a, interface: x, gateway6: auto}\n  - {name: b, interface: x, gateway: 10.0.0.2}\n", `f.yaml:2: links[0].gateway6: auto on interface x, which links[1] also uses: links on one interface are told apart by their next hops, so give each its own address`},
	{"reserved table", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, table: 254}\n", "f.yaml:2: links[0].table: 254 is reserved by the kernel (0 unspec, 252 compat, 253 default, 254 main, 255 local)"},
	{"table 0", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, table: 0}\n", "f.yaml:2: links[0].table: 0 is reserved by the kernel (0 unspec, 252 compat, 253 default, 254 main, 255 local)"},
	{"table over 32 bits", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, table: 4294967296}\n", "f.yaml:2: links[0].table: 4294967296 is not a routing table id (1..4294967295)"},
	{"balance_table 0", "balance_table: 0\n" + twoLinks, "f.yaml:1: balance_table: 0 is reserved by the kernel (0 unspec, 252 compat, 253 default, 254 main, 255 local)"},
	{"derived table past 32 bits", "balance_table: 4294967295\n" + twoLinks, "f.yaml:1: balance_table: 4294967295 gives links[0] table 4294967296, which is not a routing table id (1..4294967295): choose another balance_table, or a table for the link"},
	{"derived table second past 32 bits", "balance_table: 4294967294\n" + twoLinks, "f.yaml:1: balance_table: 4294967294 gives links[1] table 4294967296, which is not a routing table id (1..4294967295): choose another balance_table, or a table for the link"},
	{"derived table reserved", "balance_table: 250\n" + twoLinks, "f.yaml:1: balance_table: 250 gives links[1] table 252, which is reserved by the kernel (0 unspec, 252 compat, 253 default, 254 main, 255 local): choose another balance_table, or a table for the link"},
	{"table clash", "balance_table: 7\nlinks:\n  - {name: a, interface: x, gateway: 10.0.0.1, table: 7}\n", "f.yaml:3: links[0].table: table 7 is already used by balance_table"},
	{"mark outside mask", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, mark: 0x1}\n", "f.yaml:2: links[0].mark: 0x1 must be non-zero and inside mark_mask 0xff00"},
	{"mark over 32 bits", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, mark: 0x100000100}\n", "f.yaml:2: links[0].mark: 0x100000100 must be non-zero and inside mark_mask 0xff00"},
	{"mark twice", "links:\n  - {name: a, interface: x, gateway: 10.0.0.1, mark: 0x200}\n  - {name: b, interface: y, gateway: 10.0.1.1, mark: 0x200}\n", "f.yaml:3: links[1].mark: 0x200 is already used by links[0]"},
	{"mask too small for the links", "mark_mask: 0x1\n" + twoLinks, "f.yaml:8: links[1].mark: mark_mask 0x1 has room for 1 links only"},
	{"bad mask", "mark_mask: 0\nlinks:\n  - {name: a, interface: x, gateway: 10.0.0.1}\n", "f.yaml:1: mark_mask: 0x0 is not a non-zero 32-bit mask"},
	{"priority", "priority_base: 32700\nlinks:\n  - {name: a, interface: x, gateway: 10.0.0.1}\n", "f.yaml:1: priority_base: 32700 is out of range (1..32265): flowpin's rules must sit between the local (0) and main (32766) rules"},
	{"ipv6 gateway", "links:\n  - {name: a, interface: x, gateway: '2001:db8::1'}\n", "f.yaml:2: links[0].gateway: 2001:db8::1 is an IPv6 address: IPv6 next hops go in gateway6"},
	{"ipv4 gateway6", "links:\n  - {name: a, interface: x, gateway6: 192.0.2.1}\n", "f.yaml:2: links[0].gateway6: 192.0.2.1 is an IPv4 address: IPv4 next hops go in gateway"},
	{"link-local gateway6 on another interface", "links:\n  - {name: a, interface: wan1, gateway6: 'fe80::1%wan2'}\n", `f.yaml:2: links[0].gateway6: "fe80::1%wan2" names interface wan2, but the link is on wan1 (write it without %wan2, or fe80::1%wan1)`},
	{"bad gateway6", "links:\n  - {name: a, interface: x, gateway6: 'fe80::zz'}\n", `f.yaml:2: links[0].gateway6: "fe80::zz" is not an IP address (or auto)`},
	{"multicast gateway6", "links:\n  - {name: a, interface: x, gateway6: 'ff02::1'}\n", "f.yaml:2: links[0].gateway6: ff02::1 cannot be a next hop"},
	{"check quorum", link0("    check: {targets: [10.0.0.9], quorum: 2}\n"), "f.yaml:5: links[0].check.quorum: 2 is more than the 1 targets"},
	{"check interval", link0("    check: {interval: 1ms}\n"), "f.yaml:5: links[0].check.interval: 1ms is out of range (50ms..1m)"},
	{"check interval block", link0("    check:\n      fall: 2\n      interval: 1ms\n"), "f.yaml:7: links[0].check.interval: 1ms is out of range (50ms..1m)"},
	{"check target", link0("    check: {targets: [example.com]}\n"), `f.yaml:5: links[0].check.targets[0]: "example.com" is not an IP address`},
	{"check second target on its own line", link0("    check:\n      targets:\n        - 10.0.0.9\n        - 10.0.0.x\n"), `f.yaml:8: links[0].check.targets[1]: "10.0.0.x" is not an IP address`},
	{"check timeout over interval", link0("    check:\n      interval: 300ms\n      timeout: 1s\n"), "f.yaml:7: links[0].check.timeout: 1s is longer than the interval (300ms): rounds would overlap; give at most 300ms, or a longer interval"},
	{"check timeout over default interval", link0("    check: {timeout: 500ms}\n"), "f.yaml:5: links[0].check.timeout: 500ms is longer than the interval (300ms): rounds would overlap; give at most 300ms, or a longer interval"},
	{"max_rtt not below timeout", link0("    check:\n      max_rtt: 300ms\n"), "f.yaml:6: links[0].check.max_rtt: 300ms is not below the timeout (300ms): a later answer is already lost; give a smaller max_rtt, or a longer interval and timeout"},
	{"max_rtt tiny", link0("    check: {max_rtt: 10us}\n"), "f.yaml:5: links[0].check.max_rtt: 10µs is too small (at least 1ms)"},
	{"max_rtt not a duration", link0("    check: {max_rtt: 150}\n"), `f.yaml:5: links[0].check.max_rtt: "150" is not a duration (like 500ms or 2s)`},
	{"max_loss without percent", link0("    check:\n      window: 5\n      max_loss: 20\n"), `f.yaml:7: links[0].check.max_loss: "20" is not a percentage like 20%`},
	{"max_loss as a fraction", link0("    check: {max_loss: 0.2}\n"), `f.yaml:5: links[0].check.max_loss: "0.2" is not a percentage like 20%`},
	{"max_loss 100%", link0("    check: {max_loss: 100%}\n"), `f.yaml:5: links[0].check.max_loss: "100%" is out of range (more than 0% and less than 100%)`},
	{"max_loss 0%", link0("    check: {max_loss: 0%}\n"), `f.yaml:5: links[0].check.max_loss: "0%" is out of range (more than 0% and less than 100%)`},
	{"max_loss a list", link0("    check: {max_loss: [20%]}\n"), `f.yaml:5: links[0].check.max_loss: want a single value, not a list`},
	{"window 0", link0("    check: {window: 0}\n"), "f.yaml:5: links[0].check.window: 0 is out of range (1..100 rounds)"},
	{"window 101", link0("    check: {window: 101}\n"), "f.yaml:5: links[0].check.window: 101 is out of range (1..100 rounds)"},
	{"hold_down negative", link0("    check: {hold_down: -1s}\n"), "f.yaml:5: links[0].check.hold_down: -1s is out of range (0s..1h0m0s)"},
	{"hold_down a day", link0("    check: {hold_down: 24h}\n"), "f.yaml:5: links[0].check.hold_down: 24h0m0s is out of range (0s..1h0m0s)"},
	{"unknown method", link0("    check: {method: udp}\n"), `f.yaml:5: links[0].check.method: "udp" is not a probe method (icmp, tcp, http, dns, exec or arp)`},
	{"tcp without port", link0("    check:\n      method: tcp\n"), "f.yaml:5: links[0].check.port: missing: method tcp connects to a port (port: 443, say)"},
	{"port with icmp", link0("    check: {port: 443}\n"), "f.yaml:5: links[0].check.port: 443: a port is for the tcp, http and dns methods, and this check uses icmp"},
	{"port 0", link0("    check: {method: tcp, port: 0}\n"), "f.yaml:5: links[0].check.port: 0 is out of range (1..65535)"},
	{"port 65536", link0("    check:\n      method: http\n      port: 65536\n"), "f.yaml:7: links[0].check.port: 65536 is out of range (1..65535)"},
	{"url with tcp", link0("    check: {method: tcp, port: 80, url: /x}\n"), `f.yaml:5: links[0].check.url: "/x": a url is for the http method, and this check uses tcp`},
	{"url with a host", link0("    check: {method: http, url: 'http://example.com/'}\n"), `f.yaml:5: links[0].check.url: "http://example.com/" is not a path (like / or /health?full=1): the host is the target`},
	{"url with a space", link0("    check: {method: http, url: '/a b'}\n"), `f.yaml:5: links[0].check.url: "/a b" is not a path (like / or /health?full=1): the host is the target`},
	{"dns without query", link0("    check: {method: dns}\n"), "f.yaml:5: links[0].check.query: missing: method dns needs a name to ask for (query: example.com, say)"},
	{"query with icmp", link0("    check: {query: example.com}\n"), `f.yaml:5: links[0].check.query: "example.com": a query is for the dns method, and this check uses icmp`},
	{"bad query", link0("    check:\n      method: dns\n      query: 'exa mple.com'\n"), `f.yaml:7: links[0].check.query: "exa mple.com" is not a domain name`},
	{"bad name", "links:\n  - {name: 'a b', interface: x, gateway: 10.0.0.1}\n", `f.yaml:2: links[0].name: "a b": use letters, digits, '-', '_' and '.' (at most 32)`},
	{"merge bomb", mergeBomb(30), "f.yaml:17: links[15]: the config expands to more than 100000 values (aliases or merge keys?)"},
}

// mergeBomb is a few hundred bytes whose merge keys stand for 2^n keys:
// link i merges link i-1 twice.
func mergeBomb(n int) string {
	var b strings.Builder
	b.WriteString("links:\n  - &a0 {name: a}\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  - &a%d {<<: [*a%d, *a%d]}\n", i, i-1, i-1)
	}
	return b.String()
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range errorCases {
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

func TestParseConfigMergeKey(t *testing.T) {
	c, err := Parse("f.yaml", []byte(`x-check: &check {targets: [203.0.113.10], interval: 300ms, fall: 2}
links:
  - name: a
    interface: eth0
    gateway: 10.0.0.1
    check: {<<: *check, fall: 5}
  - name: b
    interface: eth1
    gateway: 10.0.1.1
    check: *check
`))
	if err == nil {
		t.Fatalf("the unknown top-level key x-check was taken: %+v", c)
	}
	c, err = Parse("f.yaml", []byte(`links:
  - name: a
    interface: eth0
    gateway: 10.0.0.1
    check: &check {targets: [203.0.113.10], interval: 300ms, fall: 2}
  - name: b
    interface: eth1
    gateway: 10.0.1.1
    check: {<<: *check, fall: 5}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := HealthCheck{Targets: []netip.Addr{netip.MustParseAddr("203.0.113.10")}, Interval: 300 * time.Millisecond, Timeout: 300 * time.Millisecond, Fall: 5, Rise: 3, Quorum: 1, Window: 10, Method: ProbeICMP}
	if d := cmp.Diff(want, c.Links[1].Check, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("merged check (-want +got):\n%s", d)
	}
}

// A new section is a struct in the schema: its keys, its place in messages
// and its list limit follow from the struct, with no change to the decoder.
func TestDecodeNewSections(t *testing.T) {
	type rawRule struct {
		From string `yaml:"from"`
		Link string `yaml:"link"`
	}
	type rawHook struct {
		Run     []string       `yaml:"run" max:"2"`
		Timeout *time.Duration `yaml:"timeout"`
	}
	type schema struct {
		Rules []rawRule          `yaml:"rules"`
		Hooks map[string]rawHook `yaml:"hooks"`
	}
	decode := func(y string) (schema, error) {
		var s schema
		root, err := parseDocument("f.yaml", []byte(y))
		if err != nil {
			return s, err
		}
		d := decoder{file: "f.yaml"}
		return s, d.decode("", root, reflect.ValueOf(&s).Elem())
	}
	s, err := decode("rules:\n  - {from: 10.0.0.0/8, link: a}\nhooks:\n  up: {run: [x, y], timeout: 2s}\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Rules) != 1 || s.Rules[0].Link != "a" || len(s.Hooks["up"].Run) != 2 || *s.Hooks["up"].Timeout != 2*time.Second {
		t.Errorf("decoded %+v", s)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"rules:\n  - from: 10.0.0.0/8\n    lnk: a\n", `f.yaml:3: rules[0]: unknown key "lnk" (did you mean "link"?)`},
		{"hooks:\n  up:\n    timout: 2s\n", `f.yaml:3: hooks.up: unknown key "timout" (did you mean "timeout"?)`},
		{"hooks:\n  up: {timeout: soon}\n", `f.yaml:2: hooks.up.timeout: "soon" is not a duration (like 500ms or 2s)`},
		{"hooks:\n  up: {run: [a, b, c]}\n", `f.yaml:2: hooks.up.run: 3 entries: at most 2 are supported`},
		{"hooks: [up]\n", `f.yaml:1: hooks: want a mapping of names, not a list`},
		{"hooks:\n  \"\\e[31mup\": {timeout: soon}\n", `f.yaml:2: hooks["\x1b[31mup"].timeout: "soon" is not a duration (like 500ms or 2s)`},
	} {
		if _, err := decode(tc.yaml); err == nil || err.Error() != tc.want {
			t.Errorf("%q:\n got: %v\nwant: %s", tc.yaml, err, tc.want)
		}
	}
}

// The list limits in the raw structs' tags are the exported ones.
func TestParseConfigLimitTags(t *testing.T) {
	if got := structFields(reflect.TypeFor[rawConfig]())["links"].max; got != MaxLinks {
		t.Errorf("links max %d, MaxLinks %d", got, MaxLinks)
	}
	if got := structFields(reflect.TypeFor[rawCheck]())["targets"].max; got != MaxTargets {
		t.Errorf("targets max %d, MaxTargets %d", got, MaxTargets)
	}
	if got := structFields(reflect.TypeFor[rawConfig]())["policies"].max; got != MaxPolicies {
		t.Errorf("policies max %d, MaxPolicies %d", got, MaxPolicies)
	}
	if got := structFields(reflect.TypeFor[rawConfig]())["rules"].max; got != MaxRules {
		t.Errorf("rules max %d, MaxRules %d", got, MaxRules)
	}
	if _, err := Parse("f.yaml", []byte(manyLinks(MaxLinks))); err != nil {
		t.Errorf("%d links: %v", MaxLinks, err)
	}
}

// A huge config is refused before it is parsed. Prints the time taken;
// it was 28.7 s and 2.7 GB for 50 MB before the size limit.
func TestParseConfigHugeInput(t *testing.T) {
	entry := "  - {name: l, interface: e, gateway: 10.0.0.1}\n"
	huge := "links:\n" + strings.Repeat(entry, 50<<20/len(entry))
	path := filepath.Join(t.TempDir(), "huge.yaml")
	if err := os.WriteFile(path, []byte(huge), 0o600); err != nil {
		t.Fatal(err)
	}
	want := path + ": larger than 1 MiB, the most a config may be"
	start := time.Now()
	_, err := Load(path)
	t.Logf("Load of %d bytes (%d links) refused in %v", len(huge), strings.Count(huge, "\n")-1, time.Since(start))
	if err == nil || err.Error() != want {
		t.Errorf("Load: %v, want %s", err, want)
	}
	start = time.Now()
	_, err = Parse("f.yaml", []byte(huge))
	t.Logf("Parse of the same refused in %v", time.Since(start))
	if err == nil || err.Error() != "f.yaml: larger than 1 MiB, the most a config may be" {
		t.Errorf("Parse: %v", err)
	}
	// The worst that fits: as many links as 1 MiB holds, refused at the
	// list's length before any link is looked at.
	fits := "links:\n" + strings.Repeat("- {}\n", (MaxFileSize-7)/5)
	start = time.Now()
	_, err = Parse("f.yaml", []byte(fits))
	t.Logf("Parse of %d bytes (%d links) refused in %v", len(fits), strings.Count(fits, "\n")-1, time.Since(start))
	if want := "f.yaml:2: links: 209713 entries: at most 99 are supported"; err == nil || err.Error() != want {
		t.Errorf("Parse: %v, want %s", err, want)
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
		{0xff00, MaxLinks, []uint32{0x100, 0x200, 0x300}},
		{0x0300, 3, []uint32{0x100, 0x200, 0x300}},
		{0x80000000, 1, []uint32{0x80000000}},
	} {
		got := MaskValues(tc.mask)
		if len(got) != tc.n || !hasPrefix(got, tc.head) {
			t.Errorf("MaskValues(%#x) = %#x (len %d), want %d starting %#x", tc.mask, got[:min(len(got), 4)], len(got), tc.n, tc.head)
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

// Without a timeout, a probe waits at most until the next round is due
// (and never more than a second), so rounds do not overlap.
func TestDefaultTimeoutFollowsInterval(t *testing.T) {
	for _, c := range []struct {
		check string
		want  time.Duration
	}{
		{"", 300 * time.Millisecond},
		{"    check: {interval: 100ms}\n", 100 * time.Millisecond},
		{"    check: {interval: 5s}\n", time.Second},
		{"    check: {interval: 2s, timeout: 1500ms}\n", 1500 * time.Millisecond},
	} {
		cfg, err := Parse("f.yaml", []byte("links:\n  - name: a\n    interface: eth0\n    gateway: 10.0.0.1\n"+c.check))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Links[0].Check.Timeout; got != c.want {
			t.Errorf("%q: timeout %v, want %v", c.check, got, c.want)
		}
	}
}

func TestParseConfigQuality(t *testing.T) {
	for _, c := range []struct {
		name, check string
		want        func(*HealthCheck)
	}{
		{"defaults", "", func(*HealthCheck) {}},
		{"issue example", `    check:
      interval: 300ms
      max_rtt: 150ms
      max_loss: 20%
      window: 10
      hold_down: 30s
      method: tcp
      port: 443
`, func(h *HealthCheck) {
			h.MaxRTT, h.MaxLoss, h.HoldDown, h.Method, h.Port = 150*time.Millisecond, 0.2, 30*time.Second, ProbeTCP, 443
		}},
		{"fractional loss, window", "    check: {max_loss: 12.5%, window: 40}\n", func(h *HealthCheck) { h.MaxLoss, h.Window = 0.125, 40 }},
		{"loss with a space", "    check: {max_loss: 5 %}\n", func(h *HealthCheck) { h.MaxLoss = 0.05 }},
		{"http defaults", "    check: {method: http}\n", func(h *HealthCheck) { h.Method, h.Port, h.URL = ProbeHTTP, 80, "/" }},
		{"http path and port", "    check: {method: http, port: 8080, url: '/health?full=1'}\n", func(h *HealthCheck) { h.Method, h.Port, h.URL = ProbeHTTP, 8080, "/health?full=1" }},
		{"dns", "    check: {method: dns, query: example.com.}\n", func(h *HealthCheck) { h.Method, h.Port, h.Query = ProbeDNS, 53, "example.com." }},
		{"dns port", "    check: {method: dns, port: 5353, query: _dmarc.example.com}\n", func(h *HealthCheck) { h.Method, h.Port, h.Query = ProbeDNS, 5353, "_dmarc.example.com" }},
		{"explicit icmp", "    check: {method: icmp, hold_down: 0s}\n", func(*HealthCheck) {}},
		{"timeout equal to interval", "    check: {interval: 1s, timeout: 1s, max_rtt: 999ms}\n", func(h *HealthCheck) {
			h.Interval, h.Timeout, h.MaxRTT = time.Second, time.Second, 999*time.Millisecond
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse("f.yaml", []byte(link0(c.check)))
			if err != nil {
				t.Fatal(err)
			}
			want := defaultCheck
			c.want(&want)
			if d := cmp.Diff(want, cfg.Links[0].Check); d != "" {
				t.Errorf("check (-want +got):\n%s", d)
			}
		})
	}
}

// Interface names the kernel takes that a shell would not read as one
// word are valid: plan quotes them.
func TestParseShellHostileInterfaces(t *testing.T) {
	for _, name := range []string{"w;id>x", "w$(id)", "w`id`", "w'x", "a=b", "-x", "wän"} {
		y := fmt.Sprintf("links:\n  - {name: a, interface: %s, gateway: 10.0.0.1}\n", strconv.Quote(name))
		c, err := Parse("f.yaml", []byte(y))
		if err != nil {
			t.Errorf("%q: %v", name, err)
			continue
		}
		if c.Links[0].Interface != name {
			t.Errorf("%q: read as %q", name, c.Links[0].Interface)
		}
	}
}
