package config

import (
	"fmt"
	"strings"
	"testing"
)

// prefixes6Links: n links, each with m /56 prefixes of its own.
func prefixes6Links(n, m int) string {
	var b strings.Builder
	b.WriteString("links:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: l%d, interface: wan%d, gateway6: '2001:db8:%x::1', prefixes6: [", i, i, i+1)
		for j := range m {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "2a%02x:%x:100::/56", i, j)
		}
		b.WriteString("]}\n")
	}
	return b.String()
}

// While some links are down, each of their prefixes needs a translation
// rule per live link with a prefix of its length. At MaxLinks links with
// MaxPrefixes6 each, half of them down, that was 78400 nat rules: a 53 MB
// batch that took 10 s to apply and 2 minutes to read back, on every sync
// of the daemon, so failover stalled. The config is refused instead.
func TestPrefixes6TranslationBound(t *testing.T) {
	for _, tc := range []struct {
		links, each int
		ok          bool
	}{
		{MaxLinks, 1, true},             // 49 down x 50 live: 2450 rules
		{16, MaxPrefixes6, true},        // 8 x 32 down x 8 live: 2048
		{24, MaxPrefixes6, false},       // 12 x 32 x 12: 4608
		{MaxLinks, MaxPrefixes6, false}, // 78400
	} {
		_, err := Parse("f.yaml", []byte(prefixes6Links(tc.links, tc.each)))
		switch {
		case tc.ok && err != nil:
			t.Errorf("%d links x %d prefixes: %v", tc.links, tc.each, err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "prefixes6: ") || !strings.Contains(err.Error(), fmt.Sprintf("more than %d", MaxTranslate6))):
			t.Errorf("%d links x %d prefixes: %v, want a refusal naming the bound", tc.links, tc.each, err)
		}
	}
	if got := Translate6Bound(nil); got != 0 {
		t.Errorf("no prefixes: %d", got)
	}
}
