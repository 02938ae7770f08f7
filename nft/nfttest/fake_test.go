package nfttest

import (
	"errors"
	"testing"

	"flowpin/nft"
)

func TestFake(t *testing.T) {
	var f Fake
	s := nft.Spec{Mask: 0xff00, Links: []nft.Link{{Name: "isp1", Iface: "wan1", Mark: 0x100, NAT: true}}, Records: nft.Records{Sysctls: []nft.SysctlRecord{{Key: "a", Value: "1"}}}}
	if wrote, err := f.Record(s.Records); !wrote || err != nil {
		t.Fatalf("Record on no table: %v %v", wrote, err)
	}
	if cur, _ := f.Read(); !cur.Exists || !cur.Records.Equal(s.Records) || s.UpToDate(cur) {
		t.Fatalf("after Record: %+v", cur)
	}
	if wrote, _ := f.Record(s.Records); wrote {
		t.Error("Record of the same records wrote")
	}
	if wrote, err := f.Apply(s); !wrote || err != nil {
		t.Fatalf("Apply: %v %v", wrote, err)
	}
	if wrote, _ := f.Apply(s); wrote {
		t.Error("second Apply wrote")
	}
	if cur, _ := f.Read(); !s.UpToDate(cur) {
		t.Error("Read after Apply is not UpToDate")
	}
	if f.Dump() != s.Render() {
		t.Errorf("Dump:\n%s", f.Dump())
	}
	boom := errors.New("boom")
	f.FailNth(1, boom)
	if _, err := f.Remove(); !errors.Is(err, boom) {
		t.Fatalf("Remove: %v, want boom", err)
	}
	if f.Spec() == nil {
		t.Fatal("a failed Remove removed the table")
	}
	if removed, err := f.Remove(); !removed || err != nil {
		t.Fatalf("Remove: %v %v", removed, err)
	}
	if removed, _ := f.Remove(); removed {
		t.Error("Remove of no table removed something")
	}
	want := []string{nft.RenderRecords(s.Records), s.Render(), "nft delete table inet flowpin"}
	if len(f.Transcript) != len(want) || f.Transcript[0] != want[0] || f.Transcript[1] != want[1] || f.Transcript[2] != want[2] {
		t.Errorf("Transcript = %q", f.Transcript)
	}
	f.ReadErr = boom
	if _, err := f.Read(); !errors.Is(err, boom) {
		t.Error("ReadErr ignored")
	}
}

// RuleHits reports the traffic rules of the table, as the kernel's
// counters of their chains: none without a table, zero unless counted.
func TestFakeRuleHits(t *testing.T) {
	var f Fake
	if h, err := f.RuleHits(); err != nil || len(h) != 0 {
		t.Errorf("no table: %v %v", h, err)
	}
	f.Hits = map[string]nft.Hits{"voip": {Packets: 3, Bytes: 180}, "gone": {Packets: 1}}
	s := nft.Spec{Mask: 0xff00, Links: []nft.Link{{Name: "isp1", Iface: "wan1", Mark: 0x100}},
		Classes: []nft.Class{{Name: "voip", Proto: "udp"}, {Name: "web", Proto: "tcp"}}}
	if _, err := f.Apply(s); err != nil {
		t.Fatal(err)
	}
	h, err := f.RuleHits()
	want := map[string]nft.Hits{"voip": {Packets: 3, Bytes: 180}, "web": {}}
	if err != nil || len(h) != len(want) || h["voip"] != want["voip"] || h["web"] != want["web"] {
		t.Errorf("RuleHits = %v %v, want %v", h, err, want)
	}
	boom := errors.New("boom")
	f.ReadErr = boom
	if _, err := f.RuleHits(); !errors.Is(err, boom) {
		t.Errorf("RuleHits with ReadErr: %v", err)
	}
}
