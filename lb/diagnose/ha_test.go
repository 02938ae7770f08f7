package diagnose

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"flowpin/lb/config"
	"flowpin/lb/plan"
	"flowpin/lb/status"
	"flowpin/nft"
)

const haCfg = `ha: true
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.2}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, nat: true, nat_source: 198.51.100.2}
`

func TestHAChecks(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte(haCfg))
	if err != nil {
		t.Fatal(err)
	}
	c, err = config.Assign(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	vip1, vip2 := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("198.51.100.2")
	good := &nft.Current{Exists: true,
		Chains:  map[string][]string{"prerouting": {nft.GuardWhy + " #0123abcd", "links by iif x"}},
		Sets:    []string{"nat_source4"},
		Records: nft.Records{Links: []nft.LinkRecord{{Name: "isp1", Mark: 0x100, Table: 101}, {Name: "isp2", Mark: 0x200, Table: 102}}},
	}
	stale := &nft.Current{Exists: true, Chains: map[string][]string{"prerouting": {"links by iif x"}},
		Records: nft.Records{Links: []nft.LinkRecord{{Name: "isp1", Mark: 0x300, Table: 105}}}}
	for _, tc := range []struct {
		name string
		cur  *nft.Current
		vips []plan.VIP
		want map[string]string // check -> "ok: prefix" or "FAIL: prefix"
	}{
		{"primary, as planned", good, []plan.VIP{{Addr: vip1, Iface: "wan1"}, {Addr: vip2, Iface: "wan2"}}, map[string]string{
			"ha layout": "ok: marks and tables from the config alone", "ha guard": "ok: TCP packets",
			"ha nat_source": "ok: new flows are SNATed to the VIPs", "ha role": "ok: primary"}},
		{"backup", good, []plan.VIP{{Addr: vip1}, {Addr: vip2}}, map[string]string{"ha role": "ok: backup"}},
		{"split, stale table", stale, []plan.VIP{{Addr: vip1, Iface: "wan1"}, {Addr: vip2}}, map[string]string{
			"ha layout": "FAIL: the config gives isp1 mark 0x100 table 101, isp2 mark 0x200 table 102, but isp1 applied with mark 0x300 table 105",
			"ha guard":  "FAIL: missing", "ha nat_source": "FAIL: the table has no nat_source map", "ha role": "FAIL: split: this node holds 192.0.2.2 on wan1 but not 198.51.100.2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]string{}
			for _, ch := range HAChecks(c, &plan.Desired{VIPs: tc.vips}, tc.cur) {
				s := "FAIL: "
				if ch.OK {
					s = "ok: "
				}
				got[ch.Name] = s + ch.Detail
			}
			for name, want := range tc.want {
				if !strings.HasPrefix(got[name], want) {
					t.Errorf("%s:\n got %q\nwant %q...", name, got[name], want)
				}
			}
		})
	}
	c.HA = false
	if ch := HAChecks(c, &plan.Desired{}, good); ch != nil {
		t.Errorf("checks without ha: %v", ch)
	}
}

func TestPeerChecks(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte(haCfg))
	if err != nil {
		t.Fatal(err)
	}
	c, _ = config.Assign(c, nil)
	peer := func(role plan.Role, mark2 uint32) *status.Status {
		return &status.Status{MarkMask: 0xff00, HA: &status.HAStatus{Role: role}, Links: []status.LinkStatus{
			{Name: "isp1", Mark: 0x100, Table: 101}, {Name: "isp2", Mark: mark2, Table: 102}}}
	}
	for _, tc := range []struct {
		name   string
		role   plan.Role
		peer   *status.Status
		err    error
		layout string
		roles  string
	}{
		{"consistent", plan.RoleBackup, peer(plan.RolePrimary, 0x200), nil, "ok", "ok: exactly one node holds the VIPs: this node is backup, the peer primary"},
		{"split brain", plan.RolePrimary, peer(plan.RolePrimary, 0x200), nil, "ok", "FAIL: both nodes hold the VIPs"},
		{"nobody", plan.RoleBackup, peer(plan.RoleBackup, 0x200), nil, "ok", "FAIL: this node is backup and the peer backup"},
		{"other marks", plan.RolePrimary, peer(plan.RoleBackup, 0x300), nil, "FAIL: the nodes pin differently, so a takeover would route synced flows by the wrong links: link isp2: mark 0x200 table 102 here, mark 0x300 table 102 there", "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]string{}
			for _, ch := range PeerChecks(c, tc.role, tc.peer, tc.err) {
				s := "FAIL: "
				if ch.OK {
					s = "ok: "
				}
				got[ch.Name] = s + ch.Detail
			}
			if !strings.HasPrefix(got["ha peer layout"], tc.layout) || !strings.HasPrefix(got["ha peer role"], tc.roles) {
				t.Errorf("got %q", got)
			}
		})
	}
	ch := PeerChecks(c, plan.RolePrimary, nil, errors.New("connection refused"))
	if len(ch) != 1 || ch[0].OK || !strings.Contains(ch[0].Detail, "connection refused; only this node's side is checked") {
		t.Errorf("unreachable peer: %+v", ch)
	}
}
