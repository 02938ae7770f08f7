package integration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestHAVIPFailedDAD: an IPv6 VIP that failed duplicate address
// detection (another host on the link, here the ISP's router, has it) is
// not held: status says split, not primary, names the interface where it
// failed and warns. The kernel keeps such an address on the interface,
// flagged, and sends nothing from it.
func TestHAVIPFailedDAD(t *testing.T) {
	l := newLab6(t)
	r, isp := l.addNS("r"), l.addNS("isp")
	veth(t, r, "wan1", isp, "c1")
	veth(t, r, "wan2", isp, "c2")
	addAddr(t, r, "wan1", "192.0.2.3/24")
	addAddr(t, r, "wan1", "192.0.2.2/24") // isp1's VIP, held
	addAddr(t, isp, "c1", "192.0.2.1/24")
	addAddr6(t, r, "wan2", "2001:db8:2::3/64")
	addAddr6(t, isp, "c2", "2001:db8:2::1/64")
	addAddr6(t, isp, "c2", "2001:db8:2::2/64") // someone else has isp2's VIP
	settle6(t, r, isp)
	setSysctl(t, r, "net.ipv6.conf.wan2.accept_dad", "1")
	run(t, r, "ip", "-6", "addr", "add", "2001:db8:2::2/64", "dev", "wan2")
	waitFor(t, 5*time.Second, "the VIP fails DAD", func() bool {
		return strings.Contains(run(t, r, "ip", "-6", "addr", "show", "dev", "wan2"), "dadfailed")
	})
	cfg := writeFile(t, "f.yaml", `ha: true
links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, nat: true, nat_source: 192.0.2.2}
  - {name: isp2, interface: wan2, gateway6: "2001:db8:2::1", nat: true, nat_source: "2001:db8:2::2"}
`)
	if out, err := flowpin(t, r, "apply", "-c", cfg); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	out, err := flowpin(t, r, "status", "--json", "-c", cfg)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var st struct {
		HA struct {
			Role string `json:"role"`
			VIPs []struct {
				Addr      string `json:"addr"`
				Iface     string `json:"interface"`
				DADFailed string `json:"dad_failed_on"`
			} `json:"vips"`
		} `json:"ha"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("role %s, VIPs %+v", st.HA.Role, st.HA.VIPs)
	if st.HA.Role != "split" || len(st.HA.VIPs) != 2 || st.HA.VIPs[0].Iface != "wan1" || st.HA.VIPs[1].Iface != "" || st.HA.VIPs[1].DADFailed != "wan2" {
		t.Errorf("with isp2's VIP failed DAD: role %q, VIPs %+v; want split, 192.0.2.2 on wan1, 2001:db8:2::2 failed on wan2", st.HA.Role, st.HA.VIPs)
	}
	if !strings.Contains(strings.Join(st.Warnings, "\n"), "nat_source 2001:db8:2::2 on wan2 failed duplicate address detection") {
		t.Errorf("no warning of the failed VIP: %q", st.Warnings)
	}
}
