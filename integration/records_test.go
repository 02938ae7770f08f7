package integration

import (
	"os"
	"strings"
	"testing"
)

// An upgrade finds the records of a table the previous version wrote
// (../nft/testdata/table-v0.nft, rendered by it): each link keeps the
// mark and table recorded there, which are not the ones it would get by
// position, so no flow is flushed; and down puts back the sysctl values
// recorded there, not the ones apply found.
func TestUpgradeKeepsOldRecords(t *testing.T) {
	golden, err := os.ReadFile("../nft/testdata/table-v0.nft")
	if err != nil {
		t.Fatal(err)
	}
	d := newDualWAN(t)
	// The old records say rp_filter was 1 before flowpin; make what is
	// found now differ, as after an earlier apply.
	setSysctl(t, d.Router, "net.ipv4.conf.wan1.rp_filter", "0")
	nft(t, d.Router, string(golden))

	out, err := flowpin(t, d.Router, "apply", "-v", "-c", writeFile(t, "f.yaml", d.config(3, 1)))
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if strings.Contains(out, "conntrack -D") {
		t.Errorf("apply flushed flows, as if a link's mark had changed:\n%s", out)
	}
	for _, want := range []string{
		"1101:\tfrom all fwmark 0x200/0xff00 lookup 102 proto 201", // isp1, as recorded (by position: 0x100, 101)
		"1102:\tfrom all fwmark 0x100/0xff00 lookup 101 proto 201", // isp2
	} {
		if rules := run(t, d.Router, "ip", "rule"); !strings.Contains(rules, want) {
			t.Errorf("no %q in\n%s", want, rules)
		}
	}
	if r := run(t, d.Router, "ip", "route", "show", "table", "102"); !strings.Contains(r, "default via "+d.GW1+" dev wan1") {
		t.Errorf("table 102 is not isp1's:\n%s", r)
	}
	state := run(t, d.Router, "nft", "list", "chain", "inet", "flowpin", "state")
	for _, want := range []string{
		`"sysctl net/ipv4/conf/wan1/rp_filter=1"`,
		`"link isp1 mark=0x200 table=102"`,
		`"link isp2 mark=0x100 table=101"`,
	} {
		if !strings.Contains(state, want) {
			t.Errorf("no record %s after apply:\n%s", want, state)
		}
	}
	if got := getSysctl(t, d.Router, "net.ipv4.conf.wan1.rp_filter"); got != "2" {
		t.Errorf("rp_filter of wan1 after apply: %s, want 2", got)
	}
	if out, err := flowpin(t, d.Router, "apply", "-c", writeFile(t, "f.yaml", d.config(3, 1))); err != nil || kernelWrites(t, out) != 0 {
		t.Errorf("second apply: %v\n%s", err, out)
	}

	if out, err := flowpin(t, d.Router, "down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if got := getSysctl(t, d.Router, "net.ipv4.conf.wan1.rp_filter"); got != "1" {
		t.Errorf("rp_filter of wan1 after down: %s, want 1 (the old record's)", got)
	}
}
