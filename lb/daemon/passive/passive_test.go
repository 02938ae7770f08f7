package passive

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"flowpin/nft/ct"
)

// flowScript says, for the n-th new flow (one every step), its link and
// after how long it is answered (0: never), and its destination
// 203.0.113.dst (0: none known).
type flowScript func(n int, at time.Duration) (link int, reply time.Duration, dst byte)

type simResult struct {
	suspects []time.Duration // when, per suspicion, in order
	links    []int
}

const v4 = unix.AF_INET

// simulate runs the detector over dur of traffic: a flow every step,
// events in time order, ticks every TickEvery, all on a fake clock.
func simulate(t *testing.T, p Params, nLinks int, dur, step time.Duration, script flowScript) simResult {
	t.Helper()
	marks := []uint32{0x100, 0x200, 0x300}[:nLinks]
	var slots []Slot
	for _, m := range marks {
		slots = append(slots, Slot{Mark: m})
	}
	d := NewDetector(p, 0xff00, slots)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type reply struct {
		at time.Duration
		id uint32
	}
	var replies []reply
	var res simResult
	collect := func(ss []Suspicion, at time.Duration) {
		for _, s := range ss {
			res.suspects = append(res.suspects, at)
			res.links = append(res.links, s.Link)
		}
	}
	n := 0
	next := time.Duration(0)
	for now := time.Duration(0); now <= dur; now += time.Millisecond {
		var evs []ct.Event
		for len(replies) > 0 && replies[0].at <= now {
			evs = append(evs, ct.Event{Type: ct.EventUpdate, ID: replies[0].id, SeenReply: true, Proto: 6})
			replies = replies[1:]
		}
		if now >= next {
			link, r, dst := script(n, now)
			id := uint32(n + 1)
			ev := ct.Event{Type: ct.EventNew, ID: id, Mark: marks[link], Proto: 6, Family: 2}
			if dst != 0 {
				ev.Dst = netip.AddrFrom4([4]byte{203, 0, 113, dst})
			}
			evs = append(evs, ev)
			if r > 0 {
				replies = append(replies, reply{now + r, id})
				// keep replies in time order
				for i := len(replies) - 1; i > 0 && replies[i].at < replies[i-1].at; i-- {
					replies[i], replies[i-1] = replies[i-1], replies[i]
				}
			}
			n++
			next += step
		}
		if len(evs) > 0 {
			collect(d.Observe(evs, t0.Add(now)), now)
		}
		if now%TickEvery == 0 {
			collect(d.Tick(t0.Add(now)), now)
		}
	}
	return res
}

func TestPassiveDetector(t *testing.T) {
	const death = 10 * time.Second
	ms := time.Millisecond
	alternate := func(n int) int { return n % 2 }
	cases := []struct {
		name   string
		links  int
		script flowScript
		// want: the links suspected, in order, and the latest time of the
		// first suspicion after death (0: none at all).
		want      []int
		within    time.Duration
		allowMore bool
	}{
		{
			name: "link 1 dies", links: 2,
			script: func(n int, at time.Duration) (int, time.Duration, byte) {
				l := alternate(n)
				if l == 1 && at >= death {
					return l, 0, 0
				}
				return l, 5 * ms, 0
			},
			want: []int{1}, within: time.Second, allowMore: true,
		},
		{
			name: "the far server dies for every link", links: 2,
			script: func(n int, at time.Duration) (int, time.Duration, byte) {
				if at >= death {
					return alternate(n), 0, 0
				}
				return alternate(n), 5 * ms, 0
			},
		},
		{
			name: "a dead server among live ones, over every link", links: 2,
			script: func(n int, at time.Duration) (int, time.Duration, byte) {
				// Flows 2 and 3 of every 4 go to the dead server.
				if at >= death && n%4 >= 2 {
					return alternate(n), 0, 0
				}
				return alternate(n), 5 * ms, 0
			},
		},
		{
			name: "a dead server among live ones, links by hash", links: 2,
			script: func(n int, at time.Duration) (int, time.Duration, byte) {
				// Every other flow goes to the dead server (203.0.113.20),
				// over whichever link the hash gives: runs of dead flows
				// on one link happen, but the server is silent on both.
				link := int(uint32(n)*2654435761>>13) % 2
				if n%2 == 1 {
					if at >= death {
						return link, 0, 20
					}
					return link, 5 * ms, 20
				}
				return link, 5 * ms, 10
			},
		},
		{
			name: "slow replies are answers", links: 2,
			script: func(n int, at time.Duration) (int, time.Duration, byte) {
				if alternate(n) == 1 && at >= death {
					return 1, 700 * ms, 0 // slower than the window, after a while
				}
				return alternate(n), 200 * ms, 0
			},
		},
		{
			name: "a link that always has unanswered flows", links: 2,
			script: func(n int, _ time.Duration) (int, time.Duration, byte) {
				// Link 1 carries one-way UDP half the time: its baseline.
				if alternate(n) == 1 && n%4 == 1 {
					return 1, 0, 0
				}
				return alternate(n), 5 * ms, 0
			},
		},
		{
			name: "the only link with traffic dies: probes decide", links: 2,
			script: func(_ int, at time.Duration) (int, time.Duration, byte) {
				if at >= death {
					return 0, 0, 0
				}
				return 0, 5 * ms, 0
			},
			want: []int{0}, within: time.Second, allowMore: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := simulate(t, Default, c.links, death+5*time.Second, 50*ms, c.script)
			if len(c.want) == 0 {
				if len(r.suspects) > 0 {
					t.Fatalf("suspected links %v at %v, want none", r.links, r.suspects)
				}
				return
			}
			if len(r.suspects) == 0 {
				t.Fatalf("no suspicion, want link %v", c.want)
			}
			for i, l := range r.links {
				if l != c.want[0] {
					t.Errorf("suspicion %d: link %d at %v, want only link %d", i, l, r.suspects[i], c.want[0])
				}
			}
			if r.suspects[0] < death {
				t.Errorf("suspected at %v, before the death at %v", r.suspects[0], death)
			}
			if got := r.suspects[0] - death; got > c.within {
				t.Errorf("suspected %v after the death, want within %v", got, c.within)
			}
			t.Logf("suspected %v after the death; %d suspicions over 5 s (cooldown %v)", r.suspects[0]-death, len(r.suspects), Default.Cooldown)
			// The cooldown spaces suspicions.
			for i := 1; i < len(r.suspects); i++ {
				if gap := r.suspects[i] - r.suspects[i-1]; gap < Default.Cooldown {
					t.Errorf("suspicions %v apart, want at least %v", gap, Default.Cooldown)
				}
			}
		})
	}
}

// A flow that ends before its window, and flows of other protocols or of
// no link, are not judged; the pending flows are bounded.
func TestPassiveDetectorIgnores(t *testing.T) {
	p := Default
	p.MaxPending = 2
	d := NewDetector(p, 0xff00, []Slot{{Mark: 0x100}})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d.Observe([]ct.Event{
		{Type: ct.EventNew, ID: 1, Mark: 0x100, Proto: 1, Family: v4},            // ICMP
		{Type: ct.EventNew, ID: 2, Mark: 0, Proto: 6, Family: v4},                // no link
		{Type: ct.EventNew, ID: 7, Mark: 0x100, Proto: 6, Family: unix.AF_INET6}, // a family the link does not have
		{Type: ct.EventNew, ID: 3, Mark: 0x100, Proto: 17, Family: v4},           // judged
		{Type: ct.EventNew, ID: 4, Mark: 0x100, Proto: 6, Family: v4},
		{Type: ct.EventDestroy, ID: 4},
		{Type: ct.EventNew, ID: 5, Mark: 0x100, Proto: 6, Family: v4},
		{Type: ct.EventNew, ID: 6, Mark: 0x100, Proto: 6, Family: v4}, // beyond MaxPending
	}, t0)
	if len(d.pending) != 2 {
		t.Errorf("%d pending, want 2 (flows 3 and 5)", len(d.pending))
	}
	d.Tick(t0.Add(time.Second))
	if _, n := d.share(0, t0.Add(time.Second)); n != 2 || len(d.pending) != 0 || len(d.queue) != 0 {
		t.Errorf("judged %d, pending %d, queued %d; want 2, 0, 0", n, len(d.pending), len(d.queue))
	}
}
