package nft

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"go4.org/netipx"
)

func rng(from, to string) netipx.IPRange {
	return netipx.IPRangeFrom(netip.MustParseAddr(from), netip.MustParseAddr(to))
}

func el(a string, end bool) kernelElem { return kernelElem{key: netip.MustParseAddr(a), end: end} }

// The kernel lists an interval set's starts and ends in its own order; a
// range up to the family's last address has no end.
func TestKernelRanges(t *testing.T) {
	got := kernelRanges([]kernelElem{
		el("10.0.1.0", true), el("255.0.0.0", false), el("10.0.0.0", false),
		el("10.0.2.0", false), el("10.0.3.0", true), el("10.0.3.0", false), el("10.0.4.0", true),
	}, false)
	want := []netipx.IPRange{rng("10.0.0.0", "10.0.0.255"), rng("10.0.2.0", "10.0.2.255"), rng("10.0.3.0", "10.0.3.255"), rng("255.0.0.0", "255.255.255.255")}
	if !slices.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	if got := kernelRanges([]kernelElem{el("2001:db8::", false)}, true); len(got) != 1 || got[0].To() != netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") {
		t.Errorf("v6 to the end: %v", got)
	}
}

func TestCompareRanges(t *testing.T) {
	a, b, c, d := rng("10.0.0.0", "10.0.0.255"), rng("10.0.2.0", "10.0.2.255"), rng("10.0.4.0", "10.0.4.255"), rng("10.0.4.0", "10.0.4.127")
	for _, tc := range []struct {
		name           string
		want, have     []netipx.IPRange
		missing, extra int
	}{
		{"same", []netipx.IPRange{a, b, c}, []netipx.IPRange{a, b, c}, 0, 0},
		{"flushed", []netipx.IPRange{a, b, c}, nil, 3, 0},
		{"one deleted", []netipx.IPRange{a, b, c}, []netipx.IPRange{a, c}, 1, 0},
		{"one added", []netipx.IPRange{a, c}, []netipx.IPRange{a, b, c}, 0, 1},
		{"one cut short", []netipx.IPRange{a, c}, []netipx.IPRange{a, d}, 1, 1},
		{"one swapped for another, same count", []netipx.IPRange{a, b}, []netipx.IPRange{a, c}, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := compareRanges("set4_x", tc.want, tc.have)
			if got.Missing != tc.missing || got.Extra != tc.extra || got.Want != len(tc.want) {
				t.Errorf("got %+v, want %d missing, %d extra", got, tc.missing, tc.extra)
			}
		})
	}
}

// Elements of a file set deleted, flushed or added by hand are drift:
// FileSetDrift counts them, and Apply with the set in Recheck writes it
// again (without, it takes the set as written, and did before). A
// domain set's elements are a resolver's, never drift. (The check's cost
// on 100k ranges: TestNamedSetsInNamespace.)
func TestFileSetDriftInNamespace(t *testing.T) {
	inFreshNS(t, func(ns string) error {
		c := &Conn{}
		big := setSpec(1000, time.Hour)
		checked := big
		checked.Recheck = big.FileSets()
		if want := []string{"set4_office", "set6_office"}; !slices.Equal(checked.Recheck, want) {
			t.Fatalf("file sets %v, want %v", checked.Recheck, want)
		}
		if _, err := c.Apply(big); err != nil {
			return err
		}
		drift := func(step string, want ...SetDrift) {
			t.Helper()
			got, err := c.FileSetDrift(big, checked.Recheck)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s: drift %v, want %v", step, got, want)
			}
		}
		repair := func(step string) {
			t.Helper()
			if wrote, err := c.Apply(big); err != nil || wrote {
				t.Errorf("%s: an apply without the check: wrote %v, %v", step, wrote, err)
			}
			start := time.Now()
			if wrote, err := c.Apply(checked); err != nil || !wrote {
				t.Errorf("%s: apply with the check: wrote %v, %v", step, wrote, err)
			}
			t.Logf("%s: repaired in %v", step, time.Since(start).Round(time.Millisecond))
			drift("after the repair of " + step)
		}
		// A resolver's elements are no drift, even if named.
		nftCmd(t, ns, "add", "element", "inet", "flowpin", "set4_video", "{ 203.0.113.10 }")
		if got, err := c.FileSetDrift(big, []string{"set4_video", "set6_video", "set4_office"}); err != nil || len(got) != 0 {
			t.Errorf("a resolver's element: drift %v, %v", got, err)
		}
		nftCmd(t, ns, "delete", "element", "inet", "flowpin", "set4_office", "{ 10.0.0.0/26, 10.0.0.128/26 }")
		drift("two deleted", SetDrift{Set: "set4_office", Want: 1000, Missing: 2})
		repair("two deleted")
		nftCmd(t, ns, "flush", "set", "inet", "flowpin", "set6_office")
		drift("flushed", SetDrift{Set: "set6_office", Want: 1000, Missing: 1000})
		repair("flushed")
		nftCmd(t, ns, "add", "element", "inet", "flowpin", "set4_office", "{ 192.0.2.7 }")
		drift("one added", SetDrift{Set: "set4_office", Want: 1000, Extra: 1})
		repair("one added")
		if ok, _ := c.SetHas("set4_video", netip.MustParseAddr("203.0.113.10")); !ok {
			t.Errorf("the repairs lost the resolver's element")
		}
		return nil
	})
}
