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

// quotaLine says a link's quota for the text status, with a warning at
// QuotaWarnShare; "" for a link without one.
func quotaLine(l LinkStatus) (line, warning string) {
	q := l.Quota
	if q == nil {
		return "", ""
	}
	share := 1.0
	if q.Bytes > 0 {
		share = float64(q.Used) / float64(q.Bytes)
	}
	line = fmt.Sprintf("%s quota: %s of %s used (%.0f%%), %s left until %s", Printable(l.Name),
		humanize.Bytes(q.Used), humanize.Bytes(q.Bytes), 100*share, humanize.Bytes(q.Left), q.PeriodEnd.Format("2006-01-02 15:04"))
	switch {
	case q.Exhausted && q.LastResort:
		warning = fmt.Sprintf("link %s used all of its quota: on standby, the last resort until %s", l.Name, q.PeriodEnd.Format("2006-01-02 15:04"))
	case q.Exhausted:
		warning = fmt.Sprintf("link %s used all of its quota: on standby until %s", l.Name, q.PeriodEnd.Format("2006-01-02 15:04"))
	case share >= QuotaWarnShare:
		warning = fmt.Sprintf("link %s used %.0f%% of its quota (%s left until %s)", l.Name, 100*share, humanize.Bytes(q.Left), q.PeriodEnd.Format("2006-01-02 15:04"))
	}
	return line, warning
}

// withOperator copies the operator's mode and the quota from the daemon.
func (l *LinkStatus) withOperator(h health.LinkHealth) {
	l.Operator, l.OperatorSince, l.Quota = h.Operator, nil, h.Quota
	if h.Operator != "" {
		since := h.OperatorSince
		l.OperatorSince = &since
	}
}
