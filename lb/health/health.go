// Package health judges links: the hysteresis tracker that turns probe
// rounds into up and down, the ICMP prober, and the link states every
// other package reads as plain values.
package health

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

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
	RTTMillis  float64   `json:"rtt_ms"`
	Loss       float64   `json:"loss"`
}

// Tracker is one link's health with hysteresis: Fall consecutive bad
// rounds take it down, Rise consecutive good rounds bring it back. Carrier
// or neighbour loss takes it down at once. It is pure; the daemon feeds it.
type Tracker struct {
	Fall, Rise int

	State      LinkState
	LastChange time.Time
	Reason     string
	good, bad  int

	// RTT is the mean round-trip time of the last good round.
	RTT time.Duration
	// window holds the last probes' outcomes, for Loss.
	window []bool
	next   int
	seen   int
	// Changes counts transitions, for metrics.
	Changes int
}

// NewTracker starts a link in state s (the daemon adopts what the kernel
// has: a link in the multipath route starts up).
func NewTracker(c config.HealthCheck, s LinkState, now time.Time, why string) *Tracker {
	return &Tracker{Fall: c.Fall, Rise: c.Rise, State: s, LastChange: now, Reason: why, window: make([]bool, 20)}
}

// Round is what one probe round found.
type Round struct {
	Answered, Sent int
	RTT            time.Duration // mean of the answered probes
	Lost           []netip.Addr
	Err            error // the probe could not even be sent
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
	return fmt.Sprintf("%d/%d probes lost to %s", r.Sent-r.Answered, r.Sent, strings.Join(lost, ", "))
}

// Observe feeds one round. It returns true when the state changed.
func (t *Tracker) Observe(r Round, quorum int, now time.Time) bool {
	for i := 0; i < r.Sent; i++ {
		t.window[t.next] = i < r.Answered
		t.next = (t.next + 1) % len(t.window)
		t.seen++
	}
	if r.Good(quorum) {
		t.RTT = r.RTT
		t.bad = 0
		t.good++
		if t.State != StateUp && t.good >= t.Rise {
			return t.set(StateUp, now, fmt.Sprintf("up: %d good rounds (rtt %v)", t.good, r.RTT.Round(10*time.Microsecond)))
		}
		return false
	}
	t.good = 0
	t.bad++
	if t.State != StateDown && t.bad >= t.Fall {
		return t.set(StateDown, now, fmt.Sprintf("down: %s, %d rounds in a row", r.describe(), t.bad))
	}
	return false
}

// ForceDown takes the link down at once (carrier lost, gateway neighbour
// failed). Probes then have to rise again.
func (t *Tracker) ForceDown(why string, now time.Time) bool {
	t.good = 0
	if t.State == StateDown {
		return false
	}
	return t.set(StateDown, now, "down: "+why)
}

func (t *Tracker) set(s LinkState, now time.Time, why string) bool {
	t.State, t.LastChange, t.Reason = s, now, why
	t.Changes++
	return true
}

// Loss is the share of the last probes (up to 20) that went unanswered.
func (t *Tracker) Loss() float64 {
	n := min(t.seen, len(t.window))
	if n == 0 {
		return 0
	}
	lost := 0
	for _, ok := range t.window[:n] {
		if !ok {
			lost++
		}
	}
	return float64(lost) / float64(n)
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
	var serr error
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		err := rc.Control(func(fd uintptr) {
			if serr = unix.BindToDevice(int(fd), iface); serr != nil {
				serr = fmt.Errorf("bind to %s: %w", iface, serr)
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)); serr != nil {
				serr = fmt.Errorf("set mark: %w", serr)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
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
	r := Round{Sent: len(targets)}
	type result struct {
		target netip.Addr
		rtt    time.Duration
		ok     bool
	}
	results := make(chan result, len(targets))
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
				results <- result{tgt, time.Since(start), true}
			case <-time.After(timeout):
				p.mu.Lock()
				delete(p.waiting, seq)
				p.mu.Unlock()
				results <- result{target: tgt}
			}
		}(tgt)
	}
	var sum time.Duration
	for range targets {
		res := <-results
		if res.ok {
			r.Answered++
			sum += res.rtt
		} else {
			r.Lost = append(r.Lost, res.target)
		}
	}
	if r.Answered > 0 {
		r.RTT = sum / time.Duration(r.Answered)
	} else if sendErr != nil {
		r.Err = sendErr
	}
	return r
}
