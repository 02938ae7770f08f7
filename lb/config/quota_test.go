package config

import (
	"strings"
	"testing"
	"time"
)

const quotaBase = `links:
  - name: cable
    interface: eth0
    gateway: 192.0.2.1
  - name: lte
    interface: wwan0
    gateway: 198.51.100.1
`

func TestQuota(t *testing.T) {
	for _, c := range []struct {
		extra string
		want  Quota
	}{
		{"    quota: {bytes: 20GB}\n", Quota{Bytes: 20e9, Period: Monthly, StartDay: 1}},
		{"    quota: {bytes: 20GiB, period: monthly, start_day: 31}\n    quota_last_resort: true\n", Quota{Bytes: 20 << 30, Period: Monthly, StartDay: 31, LastResort: true}},
		{"    quota: {bytes: 200 kB, period: daily}\n", Quota{Bytes: 200000, Period: Daily}},
		{"    quota: {bytes: 200000, period: 30d, start: 2026-01-31}\n", Quota{Bytes: 200000, Period: FixedDays, Days: 30, Start: time.Date(2026, 1, 31, 0, 0, 0, 0, time.Local)}},
		{"    quota: {bytes: 18446744073709551615}\n", Quota{Bytes: ^uint64(0), Period: Monthly, StartDay: 1}},
	} {
		cfg, err := Parse("f.yaml", []byte(quotaBase+c.extra))
		if err != nil {
			t.Errorf("%q: %v", c.extra, err)
			continue
		}
		if q := cfg.Links[1].Quota; q == nil || !q.Start.Equal(c.want.Start) || func() bool { w := c.want; w.Start = q.Start; return *q != w }() {
			t.Errorf("%q: quota %+v, want %+v", c.extra, q, c.want)
		}
		if cfg.Links[0].Quota != nil {
			t.Errorf("%q: cable has a quota", c.extra)
		}
	}
}

func TestQuotaBad(t *testing.T) {
	for _, c := range []struct{ extra, want string }{
		{"    quota: {bytes: 0}\n", `f.yaml:8: links[1].quota.bytes: "0": must be more than 0`},
		{"    quota: {bytes: 20 parsecs}\n", `f.yaml:8: links[1].quota.bytes: "20 parsecs" is not a size`},
		{"    quota: {bytes: 99999999999999999999999}\n", `links[1].quota.bytes: "99999999999999999999999" is not a size`},
		{"    quota: {period: daily}\n", `links[1].quota.bytes: missing`},
		{"    quota: {bytes: 1GB, period: weekly}\n", `links[1].quota.period: "weekly": want monthly, daily, or a number of days`},
		{"    quota: {bytes: 1GB, period: 0d, start: 2026-01-01}\n", `links[1].quota.period: "0d"`},
		{"    quota: {bytes: 1GB, period: 30d}\n", `links[1].quota.start: missing`},
		{"    quota: {bytes: 1GB, period: 30d, start: 31.1.2026}\n", `links[1].quota.start: "31.1.2026" is not a date`},
		{"    quota: {bytes: 1GB, start_day: 32}\n", `links[1].quota.start_day: 32 is out of range (1..31`},
		{"    quota: {bytes: 1GB, period: daily, start_day: 3}\n", `links[1].quota.start_day: 3: only a monthly period has a start day`},
		{"    quota: {bytes: 1GB, per: daily}\n", `links[1].quota: unknown key "per"`},
		{"    quota_last_resort: true\n", `f.yaml:8: links[1].quota_last_resort: true without a quota`},
	} {
		_, err := Parse("f.yaml", []byte(quotaBase+c.extra))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want one line with %q", c.extra, err, c.want)
		}
	}
}
