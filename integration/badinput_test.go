package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Configs that used to pass validation and do damage at apply (a
// balance_table that wraps the link tables onto main, a gateway no host can
// have), or that cost seconds and gigabytes before being refused: each is
// refused with one line naming file, line, field and value, nothing is
// applied, and a `down` after it finds nothing of flowpin's to remove.
func TestBadInputRefusedBeforeApply(t *testing.T) {
	d := newDualWAN(t)
	good := d.config(3, 1)
	entry := "  - {name: l, interface: e, gateway: 10.0.0.1}\n"
	huge := "links:\n" + strings.Repeat(entry, 50<<20/len(entry))
	cases := []struct {
		name, config string
		want         string // in the one-line error
	}{
		// Before: tables 4294967296 and 4294967297 reached the kernel as
		// 0 and 1, so apply replaced main's default and connected routes
		// and down then deleted main's default route.
		{"balance_table wraps the link tables", "balance_table: 4294967295\n" + good,
			"flowpin.yaml:1: balance_table: 4294967295 gives links[0] table 4294967296, which is not a routing table id (1..4294967295)"},
		{"a link's table would be reserved", "balance_table: 250\n" + good,
			"flowpin.yaml:1: balance_table: 250 gives links[1] table 252, which is reserved by the kernel"},
		{"gateway is the broadcast address", strings.Replace(good, "gateway: "+d.GW2, "gateway: 198.51.100.255", 1),
			"flowpin.yaml:9: links[1].gateway: 198.51.100.255 is the broadcast address of 198.51.100.0/24 on wan2, not a next hop"},
		{"gateway is the network address", strings.Replace(good, "gateway: "+d.GW1, "gateway: 192.0.2.0", 1),
			"flowpin.yaml:4: links[0].gateway: 192.0.2.0 is the network address of 192.0.2.0/24 on wan1, not a next hop"},
		{"second document", good + "---\n" + good, "flowpin.yaml:12: a second YAML document"},
		{"50 MB of links", huge, "flowpin.yaml: larger than 1 MiB, the most a config may be"},
		{"unknown key in check", strings.Replace(good, "nat: true\n", "nat: true\n    check:\n      intervl: 1s\n", 1),
			`flowpin.yaml:8: links[0].check: unknown key "intervl" (did you mean "interval"?)`},
		{"terminal escape in a name", strings.Replace(good, "name: isp1", "name: \"\\e]0;owned\\a\"", 1),
			`flowpin.yaml:2: links[0].name: "\x1b]0;owned\a": use letters`},
		{"a quota of 0 bytes", strings.Replace(good, "nat: true\n", "nat: true\n    quota: {bytes: 0}\n", 1),
			`flowpin.yaml:7: links[0].quota.bytes: "0": must be more than 0`},
		{"too many targets", strings.Replace(good, "nat: true\n", "nat: true\n    check:\n      targets: ["+strings.Repeat("203.0.113.10, ", 16)+"203.0.113.10]\n", 1),
			"flowpin.yaml:8: links[0].check.targets: 17 entries: at most 16 are supported"},
	}
	before := state(t, d.Router)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			out, err := flowpin(t, d.Router, "apply", "-c", writeFile(t, "flowpin.yaml", tc.config))
			t.Logf("%d-byte config refused in %v", len(tc.config), time.Since(start))
			checkRejected(t, out, err, tc.want)
			if strings.ContainsAny(out, "\x1b\a") {
				t.Errorf("error passes control characters to the terminal: %q", out)
			}
			if diff := cmp.Diff(before, state(t, d.Router)); diff != "" {
				t.Errorf("rejected config changed the kernel (-before +after):\n%s", diff)
			}
			if out, err := flowpin(t, d.Router, "down"); err != nil {
				t.Fatalf("down: %v\n%s", err, out)
			}
			if diff := cmp.Diff(before, state(t, d.Router)); diff != "" {
				t.Errorf("down after the rejected config changed the kernel (-before +after):\n%s", diff)
			}
		})
	}
}
