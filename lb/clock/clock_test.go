package clock

import (
	"testing"
	"time"
)

func TestRealSleeps(t *testing.T) {
	var c Clock = Real{}
	start := c.Now()
	Sleep(c, 5*time.Millisecond)
	if c.Now().Sub(start) < 5*time.Millisecond {
		t.Error("Sleep returned early")
	}
	tm := c.NewTimer(time.Hour)
	tm.Reset(time.Millisecond)
	<-tm.C()
	tm.Stop()
}
