package daemon

import (
	"sync"
	"time"
)

// SetCountAge is how long a domain set's element count from the kernel
// serves the metrics before it is counted again.
const SetCountAge = 30 * time.Second

// knownSetCounts counts sets' elements for the metrics without listing a
// file set at each scrape (a 100k-range set's listing is a tenth of a
// second or more of the kernel's time): a file set holds what the last
// sync wrote (drift is repaired at once: setdrift.go). A domain set's
// elements are a resolver's, so only the kernel knows them: counted at
// most every SetCountAge.
type knownSetCounts struct {
	d      *Daemon
	kernel SetCounter

	mu     sync.Mutex
	asked  string // the names last asked of the kernel
	counts map[string]int
	at     time.Time
}

// SetCounter is a SetCounter for the metrics that asks kernel only about
// the sets whose elements the daemon did not write, and not at every
// scrape.
func (d *Daemon) SetCounter(kernel SetCounter) SetCounter {
	return &knownSetCounts{d: d, kernel: kernel}
}

func (k *knownSetCounts) SetCounts(names []string) (map[string]int, error) {
	out := map[string]int{}
	var written map[string]int
	if p := k.d.setCheck.written.Load(); p != nil {
		written = *p
	}
	var ask []string
	for _, n := range names {
		if c, ok := written[n]; ok {
			out[n] = c
		} else {
			ask = append(ask, n)
		}
	}
	if len(ask) == 0 {
		return out, nil
	}
	counts, err := k.fromKernel(ask)
	if err != nil {
		return nil, err
	}
	for n, c := range counts {
		out[n] = c
	}
	return out, nil
}

func (k *knownSetCounts) fromKernel(names []string) (map[string]int, error) {
	key := ""
	for _, n := range names {
		key += n + "\x00"
	}
	now := k.d.deps.Clock.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.counts != nil && k.asked == key && now.Sub(k.at) < SetCountAge {
		return k.counts, nil
	}
	counts, err := k.kernel.SetCounts(names)
	if err != nil {
		return nil, err
	}
	k.asked, k.counts, k.at = key, counts, now
	return counts, nil
}
