package daemon

import "time"

// MinWatchdog is the shortest WatchdogSec= that is safe: the loop
// pings between the things it does, and a sync of a large config, or the
// first one, can take longer than a shorter one allows.
const MinWatchdog = time.Second

// WatchdogPing is how often the loop pings a watchdog of interval wd
// (systemd's WATCHDOG_USEC): at half of it, as sd_watchdog_enabled(3)
// advises, and never at 0, which would spin the loop. short: wd is under
// MinWatchdog.
func WatchdogPing(wd time.Duration) (every time.Duration, short bool) {
	return max(wd/2, time.Millisecond), wd < MinWatchdog
}
