package integration

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Two `flowpin apply` at once (two ifupdown post-up hooks) must end as one
// of them alone would: the kernel matches exactly one config, and down puts
// back the sysctls from before either.
func TestConcurrentApplies(t *testing.T) {
	skipShort(t)
	const rounds = 30
	for _, tc := range []struct {
		name string
		a, b [2]int // weights
	}{
		{"same config", [2]int{3, 1}, [2]int{3, 1}},
		{"different configs", [2]int{3, 1}, [2]int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDualWAN(t)
			cfgA := writeFile(t, "a.yaml", d.config(tc.a[0], tc.a[1]))
			cfgB := writeFile(t, "b.yaml", d.config(tc.b[0], tc.b[1]))
			s0 := state(t, d.Router)
			down := func() string {
				t.Helper()
				out, err := flowpin(t, d.Router, "down")
				if err != nil {
					t.Fatalf("down: %v\n%s", err, out)
				}
				return state(t, d.Router)
			}
			// What each config gives applied alone.
			want := map[string]string{}
			for _, cfg := range []string{cfgA, cfgB} {
				if out, err := flowpin(t, d.Router, "apply", "-c", cfg); err != nil {
					t.Fatalf("apply alone: %v\n%s", err, out)
				}
				want[cfg] = state(t, d.Router)
				if diff := cmp.Diff(s0, down()); diff != "" {
					t.Fatalf("down after a lone apply (-before +after):\n%s", diff)
				}
			}

			bad, wonByB := 0, 0
			start := time.Now()
			for round := range rounds {
				var wg sync.WaitGroup
				outs, errs := make([]string, 2), make([]error, 2)
				for i, cfg := range []string{cfgA, cfgB} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						outs[i], errs[i] = tryRun(d.Router, flowpinBin, "apply", "-c", cfg)
					}()
				}
				wg.Wait()
				var problems []string
				for i := range errs {
					if errs[i] != nil {
						problems = append(problems, fmt.Sprintf("apply %d: %v: %s", i, errs[i], strings.TrimSpace(outs[i])))
					}
				}
				got := state(t, d.Router)
				if got == want[cfgB] && got != want[cfgA] {
					wonByB++
				}
				if got != want[cfgA] && got != want[cfgB] {
					problems = append(problems, "kernel matches neither config alone (-A +now):\n"+cmp.Diff(want[cfgA], got))
				}
				if diff := cmp.Diff(s0, down()); diff != "" {
					problems = append(problems, "down did not restore the state before (-before +after):\n"+diff)
				}
				if len(problems) > 0 {
					bad++
					if bad <= 2 {
						t.Errorf("round %d:\n%s", round, strings.Join(problems, "\n"))
					}
				}
			}
			t.Logf("%d of %d rounds of two simultaneous applies went wrong; b's config won %d (%v)", bad, rounds, wonByB, time.Since(start).Round(time.Millisecond))
			if bad > 0 {
				t.Errorf("%d of %d rounds went wrong", bad, rounds)
			}
		})
	}
}

// Beside a running daemon, apply and down refuse and write nothing: the
// daemon would undo their writes at its next sync.
func TestApplyRefusedBesideDaemon(t *testing.T) {
	skipShort(t)
	d := newDualWAN(t)
	dm := startDaemon(t, d.Router, checkedConfig(d, d.GW2))
	time.Sleep(300 * time.Millisecond) // first probe rounds
	before := state(t, d.Router)
	repairs := strings.Count(dm.logs(), "repaired kernel state")
	want := fmt.Sprintf("flowpin: a flowpin daemon (pid %d) manages this network namespace: change its config and restart it, or stop it first\n", dm.cmd.Process.Pid)

	other := writeFile(t, "other.yaml", d.config(3, 1))
	for _, args := range [][]string{{"apply", "-c", other}, {"down"}} {
		out, err := flowpin(t, d.Router, args...)
		if err == nil || out != want {
			t.Errorf("flowpin %s beside the daemon: err %v, output:\n%s\nwant a non-zero exit saying:\n%s", args[0], err, out, want)
		}
	}
	time.Sleep(300 * time.Millisecond) // a sync would have run
	if diff := cmp.Diff(before, state(t, d.Router)); diff != "" {
		t.Errorf("kernel changed (-before +after):\n%s", diff)
	}
	if n := strings.Count(dm.logs(), "repaired kernel state"); n != repairs {
		t.Errorf("the daemon repaired the kernel %d times after the refused commands: they wrote", n-repairs)
	}

	if _, err := dm.stop(); err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
	if out := apply(t, d.Router, d.config(3, 1)); kernelWrites(t, out) == 0 {
		t.Errorf("apply after the daemon stopped wrote nothing: %s", out)
	}
	if out, err := flowpin(t, d.Router, "down"); err != nil {
		t.Errorf("down after the daemon stopped: %v\n%s", err, out)
	}
}

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root and network namespaces")
	}
}
