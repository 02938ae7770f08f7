package status

import (
	"fmt"

	"github.com/dustin/go-humanize"

	"flowpin/lb/health"
)

// QuotaWarnShare: status warns once a link used this share of its quota.
const QuotaWarnShare = 0.8

// operatorState is the STATE cell's note of an operator's mode.
func operatorState(l LinkStatus) string {
	switch l.Operator {
	case "drain":
		return " (drained)"
	case "down", "up":
		return " (operator)"
	}
	return ""
}

// quotaLine says a link's quota for the text status; "" for a link
// without one.
func quotaLine(l LinkStatus) string {
	q := l.Quota
	if q == nil {
		return ""
	}
	return fmt.Sprintf("%s quota: %s of %s used (%.0f%%), %s left until %s", Printable(l.Name),
		humanize.Bytes(q.Used), humanize.Bytes(q.Bytes), 100*quotaShare(q), humanize.Bytes(q.Left), q.PeriodEnd.Format("2006-01-02 15:04"))
}

func quotaShare(q *health.QuotaUsage) float64 {
	if q.Bytes == 0 {
		return 1
	}
	return float64(q.Used) / float64(q.Bytes)
}

// quotaWarning is the warning about link's quota from QuotaWarnShare on,
// "" before.
func quotaWarning(name string, q *health.QuotaUsage) string {
	if q == nil {
		return ""
	}
	share := quotaShare(q)
	switch {
	case q.Exhausted && q.LastResort:
		return fmt.Sprintf("link %s used all of its quota: on standby, the last resort until %s", name, q.PeriodEnd.Format("2006-01-02 15:04"))
	case q.Exhausted:
		return fmt.Sprintf("link %s used all of its quota: on standby until %s", name, q.PeriodEnd.Format("2006-01-02 15:04"))
	case share >= QuotaWarnShare:
		return fmt.Sprintf("link %s used %.0f%% of its quota (%s left until %s)", name, 100*share, humanize.Bytes(q.Left), q.PeriodEnd.Format("2006-01-02 15:04"))
	}
	return ""
}

// withOperator copies the operator's mode and the quota from the daemon.
func (l *LinkStatus) withOperator(h health.LinkHealth) {
	l.Operator, l.OperatorSince, l.Quota = h.Operator, nil, h.Quota
	// Set, not appended to the status's warnings: a status is given the
	// latest health again each time it is served.
	l.QuotaWarning = quotaWarning(l.Name, h.Quota)
	if h.Operator != "" {
		since := h.OperatorSince
		l.OperatorSince = &since
	}
}
