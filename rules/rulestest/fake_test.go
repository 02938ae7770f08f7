package rulestest

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"flowpin/rules"
)

func TestFake(t *testing.T) {
	f := New(map[string]rules.Iface{"wan1": {Name: "wan1", Up: true}}, map[string]string{"net/ipv4/conf/wan1/rp_filter": "1"})
	all := netip.MustParsePrefix("0.0.0.0/0")
	rule := rules.Rule{Family: rules.V4, Priority: 1100, Mark: 0x100, Mask: 0xff00, Table: 101, SuppressPrefixlen: -1}
	route := rules.Route{Family: rules.V4, Table: 101, Dst: all, Dev: "wan1", Gw: netip.MustParseAddr("192.0.2.1")}
	for _, op := range []rules.Op{
		{Kind: rules.AddRule, Rule: rule},
		{Kind: rules.AddRule, Rule: rule}, // EEXIST is not an error
		{Kind: rules.ReplaceRoute, Route: route},
	} {
		if err := f.Do(op); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.WriteSysctl(rules.Sysctl{Key: "net/ipv4/conf/wan1/rp_filter", Value: "2"}); err != nil {
		t.Fatal(err)
	}
	want := "# ip rule\n1100:\tfrom all fwmark 0x100/0xff00 lookup 101 proto 201\n" +
		"# ip route show table all\ndefault via 192.0.2.1 dev wan1 table 101 proto 201\n" +
		"# sysctl\nnet.ipv4.conf.wan1.rp_filter = 2\n"
	if got := f.Dump(); got != want {
		t.Errorf("Dump:\n%s\nwant:\n%s", got, want)
	}
	if n := f.Writes(); n != 4 {
		t.Errorf("Writes = %d, want 4", n)
	}
	if err := f.Do(rules.Op{Kind: rules.ReplaceRoute, Route: rules.Route{Table: 1, Dst: all, Dev: "nope"}}); err == nil {
		t.Error("route through a missing interface succeeded")
	}
	if _, err := f.ReadSysctl("net/ipv4/conf/nope/rp_filter"); !errors.Is(err, ErrNoSysctl) {
		t.Errorf("missing sysctl: %v", err)
	}

	boom := errors.New("boom")
	f.FailNth(2, boom)
	del := rules.Op{Kind: rules.DelRule, Rule: rule}
	if err := f.Do(rules.Op{Kind: rules.DelRoute, Route: route}); err != nil {
		t.Fatal(err)
	}
	if err := f.Do(del); !errors.Is(err, boom) {
		t.Fatalf("second write: %v, want boom", err)
	}
	if err := f.Do(del); err != nil {
		t.Fatal(err)
	}
	f.FailWhen(func(cmd string) bool { return strings.HasPrefix(cmd, "sysctl") }, boom)
	if err := f.WriteSysctl(rules.Sysctl{Key: "x", Value: "1"}); !errors.Is(err, boom) {
		t.Errorf("sysctl write: %v, want boom", err)
	}
	if st, _ := f.Owned(); len(st.Rules)+len(st.Routes) != 0 {
		t.Errorf("left: %+v", st)
	}
	f.ResetTranscript()
	if f.Writes() != 0 {
		t.Error("ResetTranscript kept writes")
	}
}
