package nfttest

import (
	"errors"
	"maps"
	"slices"
	"testing"

	"flowpin/nft"
)

func TestFakeUses(t *testing.T) {
	var f Fake
	a := nft.Use{Table: nft.UseTable(7), CgroupID: 99, Level: 2, Mask: 0xff00, Mark: 0x200, Unreachable6: true}
	b := nft.Use{Table: nft.UseTable(8), CgroupID: 100, Level: 2, Mask: 0xff00, Mark: 0x100}
	for _, u := range []nft.Use{b, a} {
		if err := f.AddUse(u); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := f.UseTables(); !slices.Equal(got, []string{"flowpin_use_7", "flowpin_use_8"}) {
		t.Errorf("UseTables = %v", got)
	}
	if got := f.Uses(); !maps.Equal(got, map[string]nft.Use{a.Table: a, b.Table: b}) {
		t.Errorf("Uses = %v", got)
	}
	if cur, _ := f.Read(); cur.Exists {
		t.Error("a use's table made flowpin's table exist")
	}
	boom := errors.New("boom")
	f.FailNth(1, boom)
	if err := f.RemoveUse(a.Table); !errors.Is(err, boom) {
		t.Fatalf("RemoveUse: %v, want boom", err)
	}
	if err := f.RemoveUse(a.Table); err != nil {
		t.Fatal(err)
	}
	if err := f.RemoveUse("flowpin_use_1"); err != nil {
		t.Errorf("RemoveUse of a missing table: %v", err)
	}
	if got, _ := f.UseTables(); !slices.Equal(got, []string{"flowpin_use_8"}) {
		t.Errorf("UseTables after RemoveUse = %v", got)
	}
	want := []string{
		"nft add table inet flowpin_use_8 # socket cgroupv2 level 2 id 100: refuse [], mark 0x100/0xff00",
		"nft add table inet flowpin_use_7 # socket cgroupv2 level 2 id 99: refuse [ipv6], mark 0x200/0xff00",
		"nft delete table inet flowpin_use_7",
		"nft delete table inet flowpin_use_1",
	}
	if !slices.Equal(f.Transcript, want) {
		t.Errorf("transcript:\n%q\nwant\n%q", f.Transcript, want)
	}
	f.ReadErr = boom
	if _, err := f.UseTables(); !errors.Is(err, boom) {
		t.Errorf("UseTables with ReadErr: %v", err)
	}
}
