package daemon

import (
	"testing"
	"time"
)

func TestWatchdogPing(t *testing.T) {
	for _, tc := range []struct {
		wd    time.Duration
		every time.Duration
		short bool
	}{
		{30 * time.Second, 15 * time.Second, false},
		{time.Second, 500 * time.Millisecond, false},
		{999 * time.Millisecond, 499500 * time.Microsecond, true},
		{time.Millisecond, time.Millisecond, true},
		{time.Microsecond, time.Millisecond, true}, // WATCHDOG_USEC=1: not a timer of 500ns
	} {
		every, short := WatchdogPing(tc.wd)
		if every != tc.every || short != tc.short {
			t.Errorf("WatchdogPing(%v) = %v, %v; want %v, %v", tc.wd, every, short, tc.every, tc.short)
		}
	}
}
