package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// Quota is a link's data cap: Bytes in both directions per period. A link
// that used them goes to standby until the period ends.
type Quota struct {
	Bytes  uint64
	Period QuotaPeriod
	// StartDay is the day of the month a monthly period begins (1..31; in
	// a shorter month, its last day).
	StartDay int
	// Days is the length of a fixed period ("30d"), counted in calendar
	// days from Start, a local midnight.
	Days  int
	Start time.Time
	// LastResort: an exhausted link still takes new flows when no other
	// link of its family can.
	LastResort bool
}

// QuotaPeriod is how a quota renews.
type QuotaPeriod string

// Quota periods.
const (
	Monthly QuotaPeriod = "monthly"
	Daily   QuotaPeriod = "daily"
	// FixedDays: every Days days from Start.
	FixedDays QuotaPeriod = "days"
)

// MaxQuotaDays bounds a fixed period (about ten years).
const MaxQuotaDays = 3660

type rawQuota struct {
	Bytes    string  `yaml:"bytes"`
	Period   *string `yaml:"period"`
	StartDay *int64  `yaml:"start_day"`
	Start    *string `yaml:"start"`
}

// fillQuota takes link i's quota and quota_last_resort. Sizes are read by
// go-humanize: SI units are powers of 10 (20GB = 20*10^9 bytes), IEC
// units powers of 2 (20GiB = 20*2^30), as ISPs bill in the former.
func (c *Config) fillQuota(i int, rl *rawLink, l *Link) error {
	rq := rl.Quota
	if rq == nil {
		if rl.QuotaLastResort != nil {
			return c.LinkError(i, "quota_last_resort", "%v without a quota: give links[%d].quota too", *rl.QuotaLastResort, i)
		}
		return nil
	}
	q := &Quota{Period: Monthly, StartDay: 1}
	if rl.QuotaLastResort != nil {
		q.LastResort = *rl.QuotaLastResort
	}
	s := strings.TrimSpace(rq.Bytes)
	if s == "" {
		return c.LinkError(i, "quota.bytes", "missing: how much the link may carry per period (like 20GB; GB = 10^9 bytes, GiB = 2^30)")
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return c.LinkError(i, "quota.bytes", "%s is not a size (like 20GB, 500MiB or 200000; GB = 10^9 bytes, GiB = 2^30)", quote(rq.Bytes))
	}
	if n == 0 {
		return c.LinkError(i, "quota.bytes", "%s: must be more than 0 (to keep a link out, leave it out of the config or use flowpin link %s down)", quote(rq.Bytes), l.Name)
	}
	q.Bytes = n
	if rq.Period != nil {
		p := strings.TrimSpace(*rq.Period)
		switch {
		case p == string(Monthly), p == string(Daily):
			q.Period = QuotaPeriod(p)
		case strings.HasSuffix(p, "d"):
			d, err := strconv.Atoi(strings.TrimSuffix(p, "d"))
			if err != nil || d < 1 || d > MaxQuotaDays {
				return c.LinkError(i, "quota.period", "%s: want monthly, daily, or a number of days from 1d to %dd", quote(p), MaxQuotaDays)
			}
			q.Period, q.Days = FixedDays, d
		default:
			return c.LinkError(i, "quota.period", "%s: want monthly, daily, or a number of days (like 30d)", quote(p))
		}
	}
	if q.Period != Monthly {
		q.StartDay = 0
	}
	if rq.StartDay != nil {
		if q.Period != Monthly {
			return c.LinkError(i, "quota.start_day", "%d: only a monthly period has a start day", *rq.StartDay)
		}
		if d := *rq.StartDay; d < 1 || d > 31 {
			return c.LinkError(i, "quota.start_day", "%d is out of range (1..31; in a shorter month the period starts on its last day)", d)
		}
		q.StartDay = int(*rq.StartDay)
	}
	switch {
	case q.Period == FixedDays && rq.Start == nil:
		return c.LinkError(i, "quota.start", "missing: a period of %d days needs the date the first one began (like 2026-01-31)", q.Days)
	case q.Period != FixedDays && rq.Start != nil:
		return c.LinkError(i, "quota.start", "%s: only a period of a number of days has a start date", quote(*rq.Start))
	case rq.Start != nil:
		t, err := time.ParseInLocation(time.DateOnly, strings.TrimSpace(*rq.Start), time.Local)
		if err != nil {
			return c.LinkError(i, "quota.start", "%s is not a date (YYYY-MM-DD)", quote(*rq.Start))
		}
		q.Start = t
	}
	l.Quota = q
	return nil
}

// String is the quota as the config says it, for status and logs.
func (q *Quota) String() string {
	switch q.Period {
	case Monthly:
		return fmt.Sprintf("%s monthly from day %d", humanize.Bytes(q.Bytes), q.StartDay)
	case Daily:
		return humanize.Bytes(q.Bytes) + " daily"
	}
	return fmt.Sprintf("%s every %d days from %s", humanize.Bytes(q.Bytes), q.Days, q.Start.Format(time.DateOnly))
}
