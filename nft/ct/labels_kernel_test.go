package ct

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// FlushMarkExceptLabels deletes one link's flows of one family but those
// carrying a kept label bit; FlushLabel deletes only those with its bit.
// Flows of other marks and families stay.
func TestFlushByLabelsInNamespace(t *testing.T) {
	h, ns := namedNetns(t)
	// The kernel gives flows room for labels only while some rule uses
	// them.
	nft := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	nft.Stdin = strings.NewReader("table inet t {\n chain c {\n  type filter hook prerouting priority 0;\n  ct label set 120\n }\n}\n")
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	const link, other, mask = 0x100, 0x200, 0xff00
	label := func(bits ...int) []byte {
		b := make([]byte, 16)
		for _, bit := range bits {
			b[bit/8] |= 1 << (bit % 8)
		}
		return b
	}
	// Flow i: mark, label bits.
	flows := []struct {
		mark uint32
		bits []int
	}{
		{link, nil}, {link, []int{0}}, {link, []int{1}}, {link, []int{0, 1}}, {link, []int{2}},
		{other, nil}, {other, []int{1}},
	}
	var fls []conntrack.Flow
	for i, f := range flows {
		fl := fakeFlow(i, f.mark)
		if f.bits != nil {
			fl.Labels, fl.LabelsMask = label(f.bits...), label(0, 1, 2)
		}
		fls = append(fls, fl)
	}
	w, c := withFlows(t, h, fls)
	left := func() []int {
		t.Helper()
		all, err := w.Dump(nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []int
		for _, f := range all {
			out = append(out, int(f.TupleOrig.Proto.SourcePort)-1024)
		}
		slices.Sort(out)
		return out
	}

	// Keep the flows of label bit 1 (a policy with nowhere to go).
	n, err := c.FlushMarkExceptLabels(link, mask, unix.AF_INET, []int{1})
	if err != nil || n != 3 {
		t.Fatalf("FlushMarkExceptLabels: %d, %v; want 3 deleted", n, err)
	}
	if got := left(); !slices.Equal(got, []int{2, 3, 5, 6}) {
		t.Fatalf("flows left %v, want 2 3 (label 1 on the link) 5 6 (another link)", got)
	}
	// The other family has none of them.
	if n, err := c.FlushMarkExceptLabels(other, mask, unix.AF_INET6, nil); err != nil || n != 0 {
		t.Fatalf("IPv6: %d, %v", n, err)
	}
	n, err = c.FlushLabel(link, mask, 0, unix.AF_INET)
	if err != nil || n != 1 {
		t.Fatalf("FlushLabel bit 0: %d, %v; want 1", n, err)
	}
	if got := left(); !slices.Equal(got, []int{2, 5, 6}) {
		t.Fatalf("flows left %v, want 2 5 6", got)
	}
}
