package nft

import (
	"slices"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// A family the link cannot carry is refused before the mark is set: TCP
// with a reset, the rest with ICMP; a link carrying both families gets
// the mark rule alone.
func TestUseRules(t *testing.T) {
	verdicts := func(u Use) []string {
		var out []string
		for _, r := range u.rules() {
			switch v := r[len(r)-1].(type) {
			case *expr.Reject:
				fam := "?"
				for i, e := range r {
					if m, ok := e.(*expr.Meta); ok && m.Key == expr.MetaKeyNFPROTO {
						fam = map[byte]string{unix.NFPROTO_IPV4: "ipv4", unix.NFPROTO_IPV6: "ipv6"}[r[i+1].(*expr.Cmp).Data[0]]
					}
				}
				out = append(out, fam+map[uint32]string{unix.NFT_REJECT_TCP_RST: " tcp reset", unix.NFT_REJECT_ICMPX_UNREACH: " icmpx"}[v.Type])
			default:
				out = append(out, "mark")
			}
		}
		return out
	}
	for _, tc := range []struct {
		u    Use
		want []string
	}{
		{Use{Mask: 0xff00, Mark: 0x200}, []string{"mark"}},
		{Use{Mask: 0xff00, Mark: 0x200, Unreachable6: true}, []string{"ipv6 tcp reset", "ipv6 icmpx", "mark"}},
		{Use{Mask: 0xff00, Mark: 0x200, Unreachable4: true}, []string{"ipv4 tcp reset", "ipv4 icmpx", "mark"}},
	} {
		if got := verdicts(tc.u); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.u, got, tc.want)
		}
	}
}
