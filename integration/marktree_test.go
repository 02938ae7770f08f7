package integration

import (
	"fmt"
	"strings"
	"testing"
)

// From three links on, the links' fwmark rules are a tree of gotos over
// the mark bits. The kernel's own rule walk must still take every link's
// mark to that link's table: a forwarded packet from the LAN with link
// i's mark leaves by wan<i>, at 32 links (five levels of branches), and
// verify agrees.
func TestMarkTreeRoutesEveryLink(t *testing.T) {
	const n = 32
	c := fwdRouter(t, "mark tree", n, flowpinRouter(t, flowpinBin, n))
	router := strings.TrimSuffix(c.lan, "-lan") + "-router"
	t.Logf("ip rules in the router: %d", len(strings.Split(strings.TrimSpace(run(t, router, "ip", "rule", "list")), "\n")))
	for i := range n {
		mark := fmt.Sprintf("%#x", (i+1)<<8)
		out := run(t, router, "ip", "route", "get", "198.18.0.1", "from", "10.0.0.2", "iif", "lan", "mark", mark)
		f := strings.Fields(out)
		dev := ""
		for j := range f[:len(f)-1] {
			if f[j] == "dev" {
				dev = f[j+1]
				break
			}
		}
		if want := fmt.Sprintf("wan%d", i); dev != want {
			t.Errorf("a forwarded packet with mark %s (link isp%d) leaves by %q, want %s: %s", mark, i, dev, want, out)
		}
	}
	var cfg strings.Builder
	cfg.WriteString("links:\n")
	for i := range n {
		fmt.Fprintf(&cfg, "  - {name: isp%d, interface: wan%d, gateway: 100.64.%d.1, nat: true}\n", i, i, i)
	}
	if out, err := flowpin(t, router, "verify", "-c", writeFile(t, "verify.yaml", cfg.String())); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
}
