package status

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"flowpin/lb/health"
)

// Each link's DNS servers, in the JSON and the text: without a daemon
// those the config names (and dns: auto's lease left to the daemon);
// with one, its servers and whether the resolv file lists each, given
// again each time the status is served (idempotent).
func TestStatusDNS(t *testing.T) {
	c := statusConfig(t, `links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1, dns: [192.0.2.53, 9.9.9.9]}
  - {name: isp2, interface: wan2, gateway: 198.51.100.1, dns: auto}
  - {name: isp3, interface: wan3, gateway: 203.0.113.1}
`)
	s := BuildStatus(c, statusApplied(c), Tally{}, time.Unix(0, 0))
	text := func() string {
		var b bytes.Buffer
		if err := WriteStatus(&b, s); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	links := func() string {
		b, err := json.Marshal(s.Links)
		if err != nil {
			t.Fatal(err)
		}
		var ls []struct {
			Name    string          `json:"name"`
			DNS     json.RawMessage `json:"dns"`
			DNSAuto bool            `json:"dns_auto"`
		}
		if err := json.Unmarshal(b, &ls); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range ls {
			out = append(out, l.Name+" "+string(l.DNS)+" auto="+map[bool]string{true: "1", false: "0"}[l.DNSAuto])
		}
		return strings.Join(out, "\n")
	}
	want := `isp1 [{"address":"192.0.2.53"},{"address":"9.9.9.9"}] auto=0
isp2  auto=1
isp3  auto=0`
	if got := links(); got != want {
		t.Errorf("without a daemon:\n%s\nwant\n%s", got, want)
	}
	for _, line := range []string{
		"dns of isp1: 192.0.2.53 (no daemon writes the resolv file), 9.9.9.9 (no daemon writes the resolv file)\n",
		"dns of isp2: auto: from the link's lease, which the daemon reads\n",
	} {
		if !strings.Contains(text(), line) {
			t.Errorf("text lacks %q:\n%s", line, text())
		}
	}
	if strings.Contains(text(), "dns of isp3") {
		t.Errorf("a link without DNS servers has a line:\n%s", text())
	}

	addr := netip.MustParseAddr
	h := []health.LinkHealth{
		{Name: "isp1", Family: "ipv4", State: health.StateDown, DNS: []health.DNSServer{{Address: addr("192.0.2.53")}, {Address: addr("9.9.9.9"), InResolv: true}}},
		{Name: "isp2", Family: "ipv4", State: health.StateUp, DNS: []health.DNSServer{{Address: addr("198.51.100.53"), InResolv: true}, {Address: addr("9.9.9.9"), InResolv: true}}},
		{Name: "isp3", Family: "ipv4", State: health.StateUp},
	}
	for range 2 {
		s.WithHealth(h)
	}
	want = `isp1 [{"address":"192.0.2.53","in_resolv":false},{"address":"9.9.9.9","in_resolv":true}] auto=0
isp2 [{"address":"198.51.100.53","in_resolv":true},{"address":"9.9.9.9","in_resolv":true}] auto=1
isp3  auto=0`
	if got := links(); got != want {
		t.Errorf("with a daemon:\n%s\nwant\n%s", got, want)
	}
	for _, line := range []string{
		"dns of isp1: 192.0.2.53 (not in the resolv file: its link is down), 9.9.9.9 (in the resolv file)\n",
		"dns of isp2: 198.51.100.53 (in the resolv file), 9.9.9.9 (in the resolv file)\n",
	} {
		if !strings.Contains(text(), line) {
			t.Errorf("text lacks %q:\n%s", line, text())
		}
	}
	// A daemon with no lease to read for isp2 yet.
	s = BuildStatus(c, statusApplied(c), Tally{}, time.Unix(0, 0))
	s.WithHealth([]health.LinkHealth{{Name: "isp2", Family: "ipv4", State: health.StateUp}})
	if line := "dns of isp2: auto: none in the lease yet\n"; !strings.Contains(text(), line) {
		t.Errorf("text lacks %q:\n%s", line, text())
	}
}

// The quota warning is the link's own field from 80% on, in the JSON too
// (the status page shows it), set again, never repeated, each time the
// status is served.
func TestStatusQuotaWarning(t *testing.T) {
	c := statusConfig(t, `links:
  - {name: isp1, interface: wan1, gateway: 192.0.2.1}
  - {name: lte, interface: wwan0, gateway: 198.51.100.1, quota: {bytes: 1GB, period: daily}}
`)
	end := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		used uint64
		want string
	}{
		{799_000_000, ""},
		{850_000_000, "link lte used 85% of its quota (150 MB left until 2026-12-07 00:00)"},
		{1_000_000_000, "link lte used all of its quota: on standby until 2026-12-07 00:00"},
	} {
		s := BuildStatus(c, statusApplied(c), Tally{}, time.Unix(0, 0))
		q := &health.QuotaUsage{Bytes: 1_000_000_000, Used: tc.used, Left: 1_000_000_000 - tc.used, PeriodEnd: end, Exhausted: tc.used >= 1_000_000_000}
		h := []health.LinkHealth{{Name: "isp1", Family: "ipv4", State: health.StateUp}, {Name: "lte", Family: "ipv4", State: health.StateUp, Quota: q}}
		s.WithHealth(h)
		s.WithHealth(h)
		b, _ := json.Marshal(s)
		var got struct {
			Links []struct {
				QuotaWarning string `json:"quota_warning"`
			} `json:"links"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.Links[1].QuotaWarning != tc.want || got.Links[0].QuotaWarning != "" {
			t.Errorf("used %d: quota_warning %q, want %q", tc.used, got.Links[1].QuotaWarning, tc.want)
		}
		var out bytes.Buffer
		if err := WriteStatus(&out, s); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(out.String(), "of its quota"); (tc.want != "") != (n == 1) || n > 1 {
			t.Errorf("used %d: text has %d quota warnings:\n%s", tc.used, n, out.String())
		}
	}
}
