package integration

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// reloadStorm reloads the daemon every period with `flowpin reload`,
// alternating between two configs (the file is replaced whole, so no
// reload reads half of it), until the returned stop, which says how many
// reloads were applied and the first error.
func reloadStorm(t testing.TB, dm *daemon, period time.Duration, configs ...string) (stop func() (int, error)) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var applied atomic.Int32
	var firstErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			tmp := fmt.Sprintf("%s.%d", dm.cfg, i)
			err := os.WriteFile(tmp, []byte(configs[i%len(configs)]), 0o644)
			if err == nil {
				err = os.Rename(tmp, dm.cfg)
			}
			var out string
			if err == nil {
				out, err = tryRun(dm.ns, flowpinBin, "reload")
			}
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("reload %d: %w\n%s", i, err, out)
				}
				continue
			}
			applied.Add(1)
		}
	}()
	return func() (int, error) {
		close(done)
		wg.Wait()
		return int(applied.Load()), firstErr
	}
}

// failoverTime blackholes isp2 and returns how long after it the daemon
// judged isp2 down (the state change's own time), then restores isp2 and
// waits until it is up again.
func failoverTime(t testing.TB, d *dualWAN, dm *daemon) time.Duration {
	t.Helper()
	start := time.Now()
	restore := blackhole(t, d.ISP2)
	l := dm.waitState(t, "isp2", "down", 8*time.Second)
	took := l.StateSince.Sub(start)
	if !strings.Contains(l.Reason, "probes lost") {
		t.Errorf("isp2 down for another reason: %q", l.Reason)
	}
	restore()
	dm.waitState(t, "isp2", "up", 8*time.Second)
	return took
}

// TestReloadStormFailover: with a reload every 0.5 s, isp2 dying silently
// is still judged down within 2.5 s (its checks: 300 ms rounds, fall 3),
// as without reloads in the same run, and new connections then all go by
// isp1.
func TestReloadStormFailover(t *testing.T) {
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	dm := startDaemon(t, d.Router, weightedConfig(d, 1, 1))
	untilAllSucceed(t, d, srv, time.Now(), 5*time.Second)

	calm := failoverTime(t, d, dm)
	t.Logf("without reloads: isp2 judged down %v after it died", calm.Round(time.Millisecond))

	stop := reloadStorm(t, dm, 500*time.Millisecond, weightedConfig(d, 2, 1), weightedConfig(d, 1, 1))
	time.Sleep(1200 * time.Millisecond) // the storm is under way
	start := time.Now()
	restore := blackhole(t, d.ISP2)
	l := dm.waitState(t, "isp2", "down", 8*time.Second)
	stormy := l.StateSince.Sub(start)
	took := untilAllSucceed(t, d, srv, start, 8*time.Second)
	time.Sleep(time.Second) // more reloads with isp2 down: it stays down
	if st := dm.linkStates(t)["isp2"]; st.State != "down" {
		t.Errorf("isp2 %q after more reloads, want down", st.State)
	}
	n, err := stop()
	restore()
	t.Logf("a reload every 0.5 s (%d applied in %v): isp2 judged down %v after it died (%v without reloads); new connections all succeed after %v",
		n, time.Since(start.Add(-1200*time.Millisecond)).Round(100*time.Millisecond), stormy.Round(time.Millisecond), calm.Round(time.Millisecond), took.Round(time.Millisecond))
	if err != nil {
		t.Errorf("a reload failed: %v", err)
	}
	if n < 5 {
		t.Errorf("only %d reloads applied: not a storm", n)
	}
	if stormy > 2500*time.Millisecond {
		t.Errorf("failover under reloads took %v, want at most 2.5 s", stormy)
	}
	if logs := dm.logs(); strings.Count(logs, "reloaded the config") < n {
		t.Errorf("the log shows fewer reloads than %d", n)
	}
}
