package apply

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"flowpin/lb/config"
	"flowpin/nft"
	"flowpin/nft/nfttest"
)

// What config.Resolve reads through the kernel: the link records of the
// table by name, none without a table, and the read's error.
func TestAppliedLinks(t *testing.T) {
	f := &nfttest.Fake{}
	k := New(nil, f)
	got, err := k.AppliedLinks()
	if err != nil || len(got) != 0 {
		t.Fatalf("no table: %v, %v", got, err)
	}
	recs := nft.Records{
		Sysctls: []nft.SysctlRecord{{Key: "net/ipv4/conf/wan1/rp_filter", Value: "1"}},
		Links:   []nft.LinkRecord{{Name: "isp1", Mark: 0x200, Table: 102}, {Name: "isp2", Mark: 0x100, Table: 101}, {Name: "isp1", Mark: 0x300, Table: 103}},
		Unknown: []string{"link isp3 mark=zz table=1"},
	}
	if _, err := f.Record(recs); err != nil {
		t.Fatal(err)
	}
	got, err = k.AppliedLinks()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]config.Applied{"isp1": {Mark: 0x300, Table: 103}, "isp2": {Mark: 0x100, Table: 101}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	boom := errors.New("boom")
	f.ReadErr = boom
	if _, err := k.AppliedLinks(); !errors.Is(err, boom) {
		t.Errorf("read error: %v", err)
	}
}
