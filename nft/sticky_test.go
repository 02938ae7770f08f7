package nft

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The sticky path in the kernel, on the box's own UDP flows (output runs
// the same classification as prerouting): a source stuck to a link the
// rule may not use is classified by its policy and moves to the link its
// flow leaves by; a source stuck to a link it may use gets that link's
// mark; the parked ct mark never outlives the classification.
func TestStickyInNamespace(t *testing.T) {
	s := Spec{
		Mask:  0xff00,
		Links: []Link{{Name: "isp1", Iface: "wan1", Mark: 0x100}, {Name: "isp2", Iface: "wan2", Mark: 0x200}},
		Classes: []Class{{Name: "bank", Proto: "udp", DstPorts: []PortRange{{9, 9}}, Action: Action{Mark: 0xfe00},
			Sticky: 10 * time.Minute, StickyLinks: []string{"isp2"}}},
	}
	src := netip.MustParseAddr("10.9.2.1")
	inFreshNS(t, func(ns string) (err error) {
		// A failed step ends fn with an error: t.Fatal off the test's
		// goroutine would leave inFreshNS waiting for good.
		type failed struct{ error }
		defer func() {
			if r := recover(); r != nil {
				f, ok := r.(failed)
				if !ok {
					panic(r)
				}
				err = f.error
			}
		}()
		sh := func(args ...string) string {
			out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
			if err != nil {
				panic(failed{fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)})
			}
			return string(out)
		}
		// Every flow leaves by wan2 (no ip rule routes by mark here);
		// a probe table counts what mark its packets carry.
		for i, dev := range []string{"wan1", "wan2"} {
			sh("ip", "link", "add", dev, "type", "veth", "peer", "name", "p"+dev)
			sh("ip", "link", "set", dev, "up")
			sh("ip", "link", "set", "p"+dev, "up")
			sh("ip", "addr", "add", fmt.Sprintf("10.9.%d.1/24", i+1), "dev", dev)
		}
		sh("ip", "neigh", "replace", "10.9.2.254", "lladdr", "02:00:00:00:00:01", "dev", "wan2", "nud", "permanent")
		sh("ip", "route", "add", "default", "via", "10.9.2.254", "dev", "wan2")
		c := &Conn{}
		if _, err := c.Apply(s); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		probe := "table inet probe {\n\tcounter bystuck { }\n\tcounter bypolicy { }\n\tchain post {\n\t\ttype filter hook postrouting priority 0; policy accept;\n" +
			"\t\tudp dport 9 meta mark & 0xff00 == 0x200 counter name \"bystuck\"\n\t\tudp dport 9 meta mark & 0xff00 == 0xfe00 counter name \"bypolicy\"\n\t}\n}\n"
		cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(probe)
		if o, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("probe table: %v %s", err, o)
		}
		counter := func(name string) string {
			out := sh("nft", "list", "counter", "inet", "probe", name)
			i := strings.Index(out, "packets ")
			return strings.Fields(out[i:])[1]
		}
		send := func(sport int) {
			cmd := exec.Command("ip", "netns", "exec", ns, "socat", "-u", "-", fmt.Sprintf("UDP4-SENDTO:198.18.0.1:9,bind=%s:%d", src, sport))
			cmd.Stdin = strings.NewReader("x")
			if o, err := cmd.CombinedOutput(); err != nil {
				panic(failed{fmt.Errorf("socat: %v %s", err, o)})
			}
		}
		ctmark := func(sport int) string {
			out := sh("conntrack", "-L", "-p", "udp", "--sport", fmt.Sprint(sport))
			for _, f := range strings.Fields(out) {
				if m, ok := strings.CutPrefix(f, "mark="); ok {
					return m
				}
			}
			return "?"
		}
		stuck := func() uint32 {
			m, _, err := c.StuckTo(StickyMap("bank", src), src)
			if err != nil {
				panic(failed{err})
			}
			return m
		}

		// Stuck to isp1, which the rule may not use: the policy's mark,
		// pinned to isp2, which it leaves by, and now stuck to it.
		sh("nft", "add", "element", "inet", "flowpin", "stuck4_bank", fmt.Sprintf("{ %s timeout 5m : 0x100 }", src))
		send(4001)
		if m, got, pol := ctmark(4001), stuck(), counter("bypolicy"); m != "512" || got != 0x200 || pol != "1" {
			t.Errorf("source stuck to isp1, not allowed: flow's ct mark %s, stuck to %#x, policy-marked packets %s; want 512 (isp2), 0x200, 1", m, got, pol)
		}
		// Stuck to isp2: its mark, and still stuck.
		send(4002)
		if m, got, st := ctmark(4002), stuck(), counter("bystuck"); m != "512" || got != 0x200 || st != "1" {
			t.Errorf("source stuck to isp2: flow's ct mark %s, stuck to %#x, isp2-marked packets %s; want 512, 0x200, 1", m, got, st)
		}
		// The map lists its marks as the links' (not byte-swapped).
		if out := sh("nft", "list", "map", "inet", "flowpin", "stuck4_bank"); !strings.Contains(out, ": 0x00000200") {
			t.Errorf("the map does not list isp2's mark 0x00000200:\n%s", out)
		}
		return nil
	})
}
