package nft

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
)

// manyRules is a table with two links and n TCP rules alternating
// between two policies: with overlap, rule i takes ports 20000-i ..
// 20000+i, so every rule overlaps every other and each is a map of its
// own in both families; without, rule i takes port 2000+i and all share
// one map per family.
func manyRules(n int, overlap bool) Spec {
	s := Spec{Mask: 0xff00, V6: true, Links: []Link{{Name: "isp1", Iface: "wan1", Mark: 0x100, NAT: true}, {Name: "isp2", Iface: "wan2", Mark: 0x200, NAT: true}}}
	for i := range n {
		c := Class{Name: fmt.Sprintf("r%d", i), Proto: "tcp", Action: Action{Mark: 0xff00 - uint32(i%2)*0x100}}
		if overlap {
			c.DstPorts = []PortRange{{uint16(20000 - i), uint16(20000 + i)}}
		} else {
			c.DstPorts = []PortRange{{uint16(2000 + i), uint16(2000 + i)}}
		}
		s.Classes = append(s.Classes, c)
	}
	return s
}

// largest is the biggest table a config can ask for: 64 links, 1000
// rules that all overlap, 20000 set elements over both families (the
// config's bound), and 98 sticky rules (the most its ip rule layout
// holds) on every link in both families.
func largest() Spec {
	s := Spec{Mask: 0xffff00, V6: true}
	for i := range 64 {
		s.Links = append(s.Links, Link{Name: fmt.Sprintf("isp%d", i), Iface: fmt.Sprintf("wan%d", i), Mark: uint32(i+1) << 8, NAT: true})
	}
	for i := range 1000 {
		c := Class{Name: fmt.Sprintf("r%d", i), Proto: "tcp", Action: Action{Mark: 0xff0000 - uint32(i%90)*0x100}}
		c.DstPorts = []PortRange{{uint16(20000 - i), uint16(20000 + i)}}
		for k := range 10 {
			c.Dst = append(c.Dst, netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", k)), netip.MustParsePrefix(fmt.Sprintf("fd00:%x::/32", k)))
		}
		if i < 98 {
			c.Sticky = time.Minute
			for _, l := range s.Links {
				c.StickyLinks = append(c.StickyLinks, l.Name)
				c.StickyLinks6 = append(c.StickyLinks6, l.Name)
			}
		}
		s.Classes = append(s.Classes, c)
	}
	return s
}

// The README's limit, 1000 traffic rules, goes into the kernel in one
// transaction whether they overlap or not, on an empty namespace and in
// place of another table; so does the largest table a config can ask
// for. Their batches are bigger than a netlink socket's default send
// buffer (wmem_default, about 200 KiB), which refused them whole with
// EMSGSIZE. Every element of every map is in the kernel afterwards, also
// of one rule with 800 destinations, whose small batch went through
// while the kernel kept 87 of them.
func TestLargeTablesInNamespace(t *testing.T) {
	disjoint, overlapping := manyRules(1000, false), manyRules(1000, true)
	if n := largest().ClassElements(); n != MaxClassElements {
		t.Fatalf("the largest table has %d elements, want the config's bound %d", n, MaxClassElements)
	}
	inFreshNS(t, func(ns string) error {
		c := &Conn{}
		for _, step := range []struct {
			name  string
			spec  Spec
			small bool // a batch below the default send buffer
		}{
			{"one rule with 800 destinations", oneRuleManyDsts(800), true},
			{"1000 disjoint rules", disjoint, false},
			{"1000 overlapping rules in place of them", overlapping, false},
			{"1000 disjoint rules in place of those", disjoint, false},
			{"the largest table a config allows", largest(), false},
		} {
			start := time.Now()
			wrote, err := c.Apply(step.spec)
			took := time.Since(start)
			if err != nil || !wrote {
				t.Fatalf("%s: wrote %v, %v", step.name, wrote, err)
			}
			cur, err := c.Read()
			if err != nil {
				return err
			}
			if !step.spec.UpToDate(cur) {
				t.Fatalf("%s: the table read back differs from the spec", step.name)
			}
			if n, want := kernelElements(t), step.spec.ClassElements(); n != want {
				t.Errorf("%s: the kernel's maps hold %d elements, want %d", step.name, n, want)
			}
			t.Logf("%s: one batch of %d bytes, applied in %v", step.name, c.LastBatch, took.Round(time.Millisecond))
			if !step.small && c.LastBatch <= 212992 {
				t.Errorf("%s: the batch is only %d bytes: not a test of a large batch", step.name, c.LastBatch)
			}
		}
		return nil
	})
}

// kernelElements counts the elements of the table's classification maps
// as the kernel lists them.
func kernelElements(t *testing.T) int {
	t.Helper()
	nc, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	sets, err := nc.GetSets(table())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, st := range sets {
		if !strings.HasPrefix(st.Name, "rules") {
			continue
		}
		es, err := nc.GetSetElements(st)
		if err != nil {
			t.Fatalf("elements of %s: %v", st.Name, err)
		}
		n += len(es)
	}
	return n
}

// inContainerEnv makes the test binary apply two tables and report, in
// place of running tests: it is started in a user namespace of its own
// (a container), where SO_SNDBUFFORCE is refused.
const inContainerEnv = "FLOWPIN_TEST_NFT_IN_USERNS"

func init() {
	if os.Getenv(inContainerEnv) == "" {
		return
	}
	c := &Conn{}
	for _, s := range []Spec{policySpec(), largest()} {
		_, err := c.Apply(s)
		fmt.Printf("%d %v\n", c.LastBatch, err)
	}
	os.Exit(0)
}

// In a container (a user namespace of its own: CAP_NET_ADMIN there, not
// in the initial one) the socket buffers cannot be forced past
// net.core.wmem_max and rmem_max. A table whose batch fits what they
// allow applies, receive buffer short or not; one that does not fit is
// refused whole, with the sysctl to raise.
func TestBatchInUserNamespace(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root to make a user namespace")
	}
	b, err := os.ReadFile("/proc/sys/net/core/wmem_max")
	if err != nil {
		t.Fatal(err)
	}
	wmemMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--user", "--map-root-user", "--net", os.Args[0])
	cmd.Env = append(os.Environ(), inContainerEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("want two results, got:\n%s", out)
	}
	for i, name := range []string{"a small table", "the largest table"} {
		size, result, _ := strings.Cut(lines[i], " ")
		n, _ := strconv.Atoi(size)
		fits := n <= 2*wmemMax-32
		t.Logf("%s in a user namespace: batch %d bytes, wmem_max %d: %s", name, n, wmemMax, result)
		switch {
		case fits && result != "<nil>":
			t.Errorf("%s: the batch fits 2 x wmem_max, but: %s", name, result)
		case !fits && !strings.Contains(result, "raise that to"):
			t.Errorf("%s: a batch past 2 x wmem_max: %q, want it refused naming net.core.wmem_max", name, result)
		}
	}
}
