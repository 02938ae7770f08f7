// Package health judges links: the tracker that turns probe rounds into
// up and down (hysteresis, rtt and loss limits, hold-down), the probers
// (ICMP echo; tcp, http and dns in probe.go), and the link states every
// other package reads as plain values.
package health

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"flowpin/lb/config"
)

// LinkState is a link's health as a daemon sees it.
type LinkState string

const (
	// StateUnknown: no flowpin daemon runs, so nobody is probing the link.
	// Whether the interface is up says little about the path behind it.
	StateUnknown LinkState = "unknown"
	StateUp      LinkState = "up"
	StateDown    LinkState = "down"
	// StateStandby: an on-demand link that is intentionally down until
	// its tier is needed. Not an alarm.
	StateStandby LinkState = "standby"
)

// LinkHealth is one link's health as the daemon reports it.
type LinkHealth struct {
	Name string `json:"name"`
	// Family is "ipv4" or "ipv6": a link with both is judged per family
	// (an ISP's IPv6 can fail while its IPv4 works).
	Family     string    `json:"family"`
	State      LinkState `json:"state"`
	LastChange time.Time `json:"last_change"`
	Reason     string    `json:"reason"`
	// Over the last Window rounds: the median rtt, the jitter (mean
	// absolute difference of consecutive rounds' rtts) and the share of
	// probes unanswered.
	RTTMillis    float64 `json:"rtt_ms"`
	JitterMillis float64 `json:"jitter_ms"`
	Loss         float64 `json:"loss"`
	Window       int     `json:"window"`
	// FlowsKept, while the link is down: its flows were left in place
	// rather than deleted, and why (no other link could take them).
	FlowsKept      string    `json:"flows_kept,omitempty"`
	FlowsKeptSince time.Time `json:"flows_kept_since,omitzero"`
	// Operator is the mode `flowpin link` set (drain, down, up; empty:
	// auto, the checks decide), since OperatorSince.
	Operator      string    `json:"operator,omitempty"`
	OperatorSince time.Time `json:"operator_since,omitzero"`
	// Quota: the link's data cap, if it has one.
	Quota *QuotaUsage `json:"quota,omitempty"`
	// DNS are the link's DNS servers (links[].dns, or those of its lease
	// with dns: auto) as the daemon last wrote the resolv file.
	DNS []DNSServer `json:"dns,omitempty"`
}

// DNSServer is one of a link's DNS servers, and whether the resolv file
// the daemon writes lists it now (only while its link's family is up).
type DNSServer struct {
	Address  netip.Addr `json:"address"`
	InResolv bool       `json:"in_resolv"`
}

// QuotaUsage is a link's quota in its current period.
type QuotaUsage struct {
	Bytes       uint64    `json:"bytes"`
	Used        uint64    `json:"used"`
	Left        uint64    `json:"left"`
	PeriodStart time.Time `json:"period_start"`
	PeriodEnd   time.Time `json:"period_end"`
	Exhausted   bool      `json:"exhausted"`
	LastResort  bool      `json:"last_resort,omitempty"`
}

// Tracker is one link's health with hysteresis: Fall consecutive bad
// rounds take it down, Rise consecutive good rounds bring it back. A
// round is bad when fewer than quorum targets answered, or when its rtt
// exceeds MaxRTT. Loss over the last Window rounds above MaxLoss takes
// it down too, and keeps it down until the loss is back within MaxLoss.
// A link that went down stays down at least HoldDown. Carrier or
// neighbour loss takes it down at once. It is pure; the daemon feeds it.
type Tracker struct {
	Fall, Rise int
	MaxRTT     time.Duration // 0: off
	MaxLoss    float64       // 0: off
	HoldDown   time.Duration

	State      LinkState
	LastChange time.Time
	Reason     string
	// good and bad count consecutive rounds; of the bad ones, slow counts
	// the last run of rounds answered too slowly, lost the last run of
	// rounds unanswered.
	good, bad, slow, lost int
	// downWhy is the reason the link last went down, kept while it is
	// held down.
	downWhy string

	// rounds holds the last rounds, oldest at next once full.
	rounds []sample
	next   int
	seen   int
	// Changes counts transitions, for metrics.
	Changes int
}

type sample struct {
	sent, answered int
	rtt            time.Duration // valid when answered > 0
}

// NewTracker starts a link in state s (the daemon adopts what the kernel
// has: a link in the multipath route starts up).
func NewTracker(c config.HealthCheck, s LinkState, now time.Time, why string) *Tracker {
	w := c.Window
	if w <= 0 {
		w = config.DefaultWindow
	}
	t := &Tracker{Fall: c.Fall, Rise: c.Rise, MaxRTT: c.MaxRTT, MaxLoss: c.MaxLoss, HoldDown: c.HoldDown,
		State: s, LastChange: now, Reason: why, rounds: make([]sample, w)}
	if s == StateDown {
		t.downWhy = why
	}
	return t
}

// Round is what one probe round found.
type Round struct {
	Answered, Sent int
	RTT            time.Duration // the median over the probes answered
	Lost           []netip.Addr
	Err            error // the probe could not even be sent
	// Cause is what a failed probe said, when it said more than
	// nothing: "connection refused", "http status 503".
	Cause string
}

func (r Round) Good(quorum int) bool { return r.Err == nil && r.Answered >= quorum }

func (r Round) describe() string {
	if r.Err != nil {
		return "probe failed: " + r.Err.Error()
	}
	lost := make([]string, len(r.Lost))
	for i, a := range r.Lost {
		lost[i] = a.String()
	}
	out := fmt.Sprintf("%d/%d probes lost to %s", r.Sent-r.Answered, r.Sent, strings.Join(lost, ", "))
	if r.Cause != "" {
		out += " (" + r.Cause + ")"
	}
	return out
}

// Observe feeds one round. It returns true when the state changed.
func (t *Tracker) Observe(r Round, quorum int, now time.Time) bool {
	t.rounds[t.next] = sample{sent: r.Sent, answered: min(r.Answered, r.Sent), rtt: r.RTT}
	t.next = (t.next + 1) % len(t.rounds)
	t.seen++

	answered := r.Good(quorum)
	slow := answered && t.MaxRTT > 0 && r.RTT > t.MaxRTT
	switch {
	case !answered:
		t.good, t.slow = 0, 0
		t.bad++
		t.lost++
	case slow:
		t.good, t.lost = 0, 0
		t.bad++
		t.slow++
	default:
		t.bad, t.slow, t.lost = 0, 0, 0
		t.good++
	}

	if t.State != StateDown {
		switch {
		case t.bad >= t.Fall:
			return t.down(now, t.badReason(r))
		case t.lossExceeded(true):
			return t.down(now, t.lossReason())
		}
		return false
	}
	if t.good < t.Rise {
		return false
	}
	if t.lossExceeded(false) {
		// Answering again, but not yet well enough: say so.
		t.Reason = t.lossReason()
		return false
	}
	if until := t.LastChange.Add(t.HoldDown); now.Before(until) {
		t.Reason = fmt.Sprintf("held down until %s (%s)", until.Format("15:04:05"), t.downWhy)
		return false
	}
	return t.set(StateUp, now, fmt.Sprintf("up: %d good rounds (rtt %s)", t.good, Millis(r.RTT)))
}

// badReason says why fall bad rounds in a row took the link down; r is
// the last.
func (t *Tracker) badReason(r Round) string {
	switch {
	case t.slow == t.bad:
		return fmt.Sprintf("down: rtt %s > %s for %d rounds", Millis(r.RTT), Millis(t.MaxRTT), t.slow)
	case t.lost == t.bad:
		return fmt.Sprintf("down: %s, %d rounds in a row", r.describe(), t.bad)
	case t.slow > 0:
		return fmt.Sprintf("down: %d bad rounds in a row (slow or lost), the last with rtt %s > %s", t.bad, Millis(r.RTT), Millis(t.MaxRTT))
	default:
		return fmt.Sprintf("down: %d bad rounds in a row (slow or lost), the last with %s", t.bad, r.describe())
	}
}

func (t *Tracker) lossReason() string {
	return fmt.Sprintf("down: loss %s > %s over %d rounds", Percent(t.Loss()), Percent(t.MaxLoss), t.Rounds())
}

// lossExceeded: loss over the window is above MaxLoss. With full, only
// once the window is full: a few rounds after a start are too few to
// judge a link by.
func (t *Tracker) lossExceeded(full bool) bool {
	if t.MaxLoss <= 0 || full && t.seen < len(t.rounds) {
		return false
	}
	// The tolerance keeps 2 lost of 10 at exactly 20%, not above it.
	return t.Loss() > t.MaxLoss+1e-9
}

// ForceDown takes the link down at once (carrier lost, gateway neighbour
// failed). Probes then have to rise again.
func (t *Tracker) ForceDown(why string, now time.Time) bool {
	t.good = 0
	if t.State == StateDown {
		return false
	}
	return t.down(now, "down: "+why)
}

func (t *Tracker) down(now time.Time, why string) bool {
	t.downWhy = why
	return t.set(StateDown, now, why)
}

func (t *Tracker) set(s LinkState, now time.Time, why string) bool {
	t.State, t.LastChange, t.Reason = s, now, why
	t.Changes++
	return true
}

// window is the rounds seen so far, up to the window's size, oldest
// first.
func (t *Tracker) window() []sample {
	if t.seen < len(t.rounds) {
		return t.rounds[:t.seen]
	}
	return append(slices.Clone(t.rounds[t.next:]), t.rounds[:t.next]...)
}

// Streaks are the good and the bad rounds in a row that ended with the
// last one (one of them is 0). Taking a link down at once zeroes good.
func (t *Tracker) Streaks() (good, bad int) { return t.good, t.bad }

// Rounds is how many rounds Loss, RTT and Jitter are over: the window,
// or fewer just after a start.
func (t *Tracker) Rounds() int { return min(t.seen, len(t.rounds)) }

// Window is the most rounds the tracker keeps.
func (t *Tracker) Window() int { return len(t.rounds) }

// Loss is the share of the probes of the last rounds that went
// unanswered.
func (t *Tracker) Loss() float64 {
	sent, lost := 0, 0
	for _, s := range t.window() {
		sent += s.sent
		lost += s.sent - s.answered
	}
	if sent == 0 {
		return 0
	}
	return float64(lost) / float64(sent)
}

// rtts are the last rounds' rtts, oldest first, of the rounds answered.
func (t *Tracker) rtts() []time.Duration {
	var out []time.Duration
	for _, s := range t.window() {
		if s.answered > 0 {
			out = append(out, s.rtt)
		}
	}
	return out
}

// RTT is the median rtt of the last rounds answered (0: none was).
func (t *Tracker) RTT() time.Duration { return Median(t.rtts()) }

// Jitter is the mean absolute difference between the rtts of consecutive
// answered rounds (the idea of RFC 3550's interarrival jitter, without
// its smoothing): how much the delay varies from one moment to the next,
// which is what hurts calls and video. 0 with fewer than two.
func (t *Tracker) Jitter() time.Duration {
	r := t.rtts()
	if len(r) < 2 {
		return 0
	}
	var sum time.Duration
	for i := 1; i < len(r); i++ {
		d := r[i] - r[i-1]
		sum += max(d, -d)
	}
	return sum / time.Duration(len(r)-1)
}

// Median of ds (the mean of the middle two for an even count; 0 for
// none). ds is not changed.
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Millis renders d as reasons do: "250 ms", "2.5 ms", "0.12 ms".
func Millis(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms >= 10:
		return strconv.FormatFloat(math.Round(ms), 'f', -1, 64) + " ms"
	case ms >= 1:
		return strconv.FormatFloat(math.Round(ms*10)/10, 'f', -1, 64) + " ms"
	}
	return strconv.FormatFloat(math.Round(ms*100)/100, 'f', -1, 64) + " ms"
}

// Percent renders a share as reasons do: "50%", "12.5%".
func Percent(f float64) string {
	return strconv.FormatFloat(math.Round(f*1000)/10, 'f', -1, 64) + "%"
}

// Prober sends ICMP echo out of one link, whatever the routing says: the
// socket is bound to the link's device and carries the link's mark, so
// the fwmark rule routes it by the link's own table.
type Prober struct {
	conn  *net.IPConn
	id    int
	iface string
	v6    bool // ICMPv6 echo

	mu      sync.Mutex
	seq     int
	waiting map[int]chan struct{} // seq -> answered
	done    chan struct{}
}

// NewProber opens a raw ICMP (or, with v6, ICMPv6) socket bound to iface
// with mark (needs CAP_NET_RAW).
func NewProber(iface string, mark uint32, v6 bool) (*Prober, error) {
	lc := net.ListenConfig{Control: linkControl(iface, mark)}
	network, addr := "ip4:icmp", "0.0.0.0"
	if v6 {
		network, addr = "ip6:ipv6-icmp", "::"
	}
	c, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, fmt.Errorf("probe socket on %s: %w", iface, err)
	}
	p := &Prober{
		conn:    c.(*net.IPConn),
		id:      rand.IntN(0xffff) + 1,
		waiting: map[int]chan struct{}{},
		done:    make(chan struct{}),
		iface:   iface,
		v6:      v6,
	}
	go p.read()
	return p, nil
}

// Close stops the prober.
func (p *Prober) Close() {
	close(p.done)
	p.conn.Close()
}

func (p *Prober) read() {
	buf := make([]byte, 1500)
	for {
		n, _, err := p.conn.ReadFrom(buf)
		if err != nil {
			select {
			case <-p.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		proto, reply := 1, icmp.Type(ipv4.ICMPTypeEchoReply)
		if p.v6 {
			// The kernel strips the IPv6 header of a raw ICMPv6 socket's
			// packets and fills in the checksum (RFC 3542 section 3.1).
			proto, reply = 58, ipv6.ICMPTypeEchoReply
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != reply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if !ok || echo.ID != p.id {
			continue
		}
		p.mu.Lock()
		if ch, ok := p.waiting[echo.Seq]; ok {
			close(ch)
			delete(p.waiting, echo.Seq)
		}
		p.mu.Unlock()
	}
}

// Probe sends one echo to each target in parallel and waits up to timeout.
func (p *Prober) Probe(targets []netip.Addr, timeout time.Duration) Round {
	results := make(chan probeResult, len(targets))
	var sendErr error
	for _, tgt := range targets {
		p.mu.Lock()
		p.seq = (p.seq + 1) & 0xffff
		seq := p.seq
		ch := make(chan struct{})
		p.waiting[seq] = ch
		p.mu.Unlock()
		var typ icmp.Type = ipv4.ICMPTypeEcho
		dst := &net.IPAddr{IP: tgt.AsSlice()}
		if p.v6 {
			typ = ipv6.ICMPTypeEchoRequest
			if tgt.IsLinkLocalUnicast() {
				dst.Zone = p.iface // a link-local gateway is on this link
			}
		}
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: p.id, Seq: seq, Data: []byte("flowpin")}}
		b, _ := msg.Marshal(nil)
		start := time.Now()
		if _, err := p.conn.WriteTo(b, dst); err != nil {
			// ENETUNREACH and friends: the link cannot send, which is a
			// failed probe, not a daemon error.
			sendErr = err
		}
		go func(tgt netip.Addr) {
			select {
			case <-ch:
				results <- probeResult{tgt, time.Since(start), nil}
			case <-time.After(timeout):
				p.mu.Lock()
				delete(p.waiting, seq)
				p.mu.Unlock()
				results <- probeResult{target: tgt, err: context.DeadlineExceeded}
			}
		}(tgt)
	}
	r := collectRound(len(targets), results)
	if r.Answered == 0 && sendErr != nil {
		r.Err = sendErr
	}
	return r
}
