package daemon

import (
	"slices"
	"strings"
	"time"
)

// syncRunner decides when the daemon syncs, after kube-proxy's
// BoundedFrequencyRunner (k8s.io/kubernetes pkg/util/async): a request
// runs at once unless the last sync was less than minInterval ago, and
// every request made meanwhile is folded into that one sync; a failed
// sync is retried with exponential backoff; with no request at all the
// kernel is still re-read every backstop, since notifications are the
// trigger and could be missed.
//
// It owns no goroutine: the daemon's loop waits on C and then calls Due,
// runs the sync, and reports the outcome to Done.
type syncRunner struct {
	clock                Clock
	minInterval          time.Duration
	backstop             time.Duration
	minBackoff, maxRetry time.Duration

	timer   Timer
	last    time.Time // start of the last sync
	pending string    // why a sync is wanted; "" when none is
	reasons int       // how many reasons pending names (see addReason)
	now     bool      // run the pending sync without waiting for minInterval
	retryAt time.Time // after a failure: not before this
	backoff time.Duration
}

func newSyncRunner(c Clock, minInterval, backstop time.Duration) *syncRunner {
	r := &syncRunner{
		clock: c, minInterval: minInterval, backstop: backstop,
		minBackoff: time.Second, maxRetry: backstop,
	}
	r.timer = c.NewTimer(backstop)
	return r
}

// C fires when a sync is due.
func (r *syncRunner) C() <-chan time.Time { return r.timer.C() }

// Request asks for a sync as soon as minInterval (and any backoff)
// allows. Requests before it runs are coalesced into it, and so are
// their reasons, the first few of them, so that the log says every kind
// of change the sync answered: the echo of the daemon's own last write
// ("nftables change") does not hide the set an operator flushed just
// after it.
func (r *syncRunner) Request(why string) {
	r.addReason(why)
	r.arm()
}

// maxReasons bounds the reasons a sync names; more are "...".
const maxReasons = 3

func (r *syncRunner) addReason(why string) {
	if r.pending == "" {
		r.pending, r.reasons = why, 1
		return
	}
	if r.reasons > maxReasons || slices.Contains(strings.Split(r.pending, "; "), why) {
		return
	}
	r.reasons++
	if r.reasons > maxReasons {
		r.pending += "; ..."
		return
	}
	r.pending += "; " + why
}

// RequestNow asks for a sync at once, backoff or not: the daemon lost
// notifications and does not know what changed.
func (r *syncRunner) RequestNow(why string) {
	r.pending, r.reasons = why, 1
	r.now = true
	r.retryAt = time.Time{}
	r.arm()
}

// next is when the next sync is due.
func (r *syncRunner) next() time.Time {
	if r.pending == "" {
		if !r.retryAt.IsZero() {
			return r.retryAt
		}
		return r.last.Add(r.backstop)
	}
	at := r.clock.Now()
	if !r.now {
		at = later(at, r.last.Add(r.minInterval))
		at = later(at, r.retryAt)
	}
	return at
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (r *syncRunner) arm() {
	r.timer.Reset(max(r.next().Sub(r.clock.Now()), 0))
}

// Due is called when C fires. It says why to sync and marks the sync as
// started.
func (r *syncRunner) Due() string {
	why := r.pending
	switch {
	case why != "":
	case !r.retryAt.IsZero():
		why = "retry"
	default:
		why = "resync"
	}
	r.pending, r.reasons, r.now = "", 0, false
	r.last = r.clock.Now()
	return why
}

// Done records the sync's outcome and arms the timer for the next one.
func (r *syncRunner) Done(err error) {
	if err == nil {
		r.backoff, r.retryAt = 0, time.Time{}
	} else {
		r.backoff = min(max(2*r.backoff, r.minBackoff), r.maxRetry)
		r.retryAt = r.clock.Now().Add(r.backoff)
	}
	r.arm()
}

// Backoff is the wait before the next retry; zero after a success.
func (r *syncRunner) Backoff() time.Duration { return r.backoff }

func (r *syncRunner) Stop() { r.timer.Stop() }
