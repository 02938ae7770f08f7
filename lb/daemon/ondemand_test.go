package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"flowpin/lb/config/configtest"
	"flowpin/lb/health"
)

// An on-demand backup stays standby while the primary is up, is brought
// up when the primary dies, and once the primary has been back for keep
// its flows are flushed and it is taken down.
func TestOnDemandUpAndDown(t *testing.T) {
	h := newHarness(t)
	log := filepath.Join(t.TempDir(), "commands")
	h.c = configtest.MustParse(t, `links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    nat: true
    check: {targets: [203.0.113.10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
  - name: lte
    interface: wwan0
    gateway: 198.51.100.1
    nat: true
    tier: 2
    check: {targets: [203.0.113.10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
    on_demand: {up: "echo up >> `+log+`", down: "echo down >> `+log+`", keep: 10s}
`)
	h.k = newFakeKernel(h.rec, h.c)
	h.probers = newFakeProbers(h.c)
	// The backup's interface is down (absent) at start.
	h.k.removeIface("wwan0")
	h.probers.setMissing("wwan0", true)
	h.start()
	commands := func() string { b, _ := os.ReadFile(log); return strings.Join(strings.Fields(string(b)), " ") }

	if s := h.state("lte"); s.State != health.StateStandby {
		t.Fatalf("lte at start: %+v, want standby", s)
	}
	if got := testutil.ToFloat64(h.d.metrics.standbyVec.WithLabelValues("lte")); got != 1 {
		t.Errorf("flowpin_link_standby{lte} = %v", got)
	}
	h.round()
	h.round()
	if c := commands(); c != "" {
		t.Fatalf("commands ran while the primary is up: %q", c)
	}

	// The primary dies: the backup's up command runs.
	h.probers.set("wan1", false)
	h.events.send(Event{Kind: EventLink, Iface: "wan1", Up: false})
	h.waitState("isp1", health.StateDown)
	h.advanceSync()
	h.eventually("up command", func() bool { return commands() == "up" })
	if s := h.state("lte"); s.State != health.StateDown {
		t.Errorf("lte while coming up: %+v, want down (not standby)", s)
	}
	// Its interface appears and its probes pass.
	h.k.addIface(h.c.Links[1], 1)
	h.probers.setMissing("wwan0", false)
	h.events.send(Event{Kind: EventLink, Iface: "wwan0", Up: true})
	h.round()
	h.round()
	h.waitState("lte", health.StateUp)

	// The primary is back; the backup stays for keep (10s), then goes.
	h.probers.set("wan1", true)
	h.round()
	h.round()
	h.waitState("isp1", health.StateUp)
	h.advanceSync()
	for range 8 {
		h.round()
	}
	if c := commands(); c != "up" {
		t.Fatalf("before keep: commands %q", c)
	}
	if strings.Contains(strings.Join(h.rec.get(), "\n"), "flush mark 0x200/0xff00") {
		t.Fatalf("the backup's flows were flushed before keep:\n%s", strings.Join(h.rec.get(), "\n"))
	}
	for range 3 {
		h.round()
		h.advanceSync()
	}
	h.eventually("down command", func() bool { return commands() == "up down" })
	h.eventually("flush of the backup's flows", func() bool {
		return strings.Contains(strings.Join(h.rec.get(), "\n"), "flush mark 0x200/0xff00")
	})
	// The down command takes the interface down: standby, not an alarm.
	h.events.send(Event{Kind: EventLink, Iface: "wwan0", Up: false})
	h.waitState("lte", health.StateStandby)
	if got := testutil.ToFloat64(h.d.metrics.standbyVec.WithLabelValues("lte")); got != 1 {
		t.Errorf("flowpin_link_standby{lte} = %v", got)
	}
}

// A needed on-demand link that does not come up has its up command run
// again every ondemand.Retry.
func TestOnDemandRetriesUp(t *testing.T) {
	h := newHarness(t)
	log := filepath.Join(t.TempDir(), "commands")
	h.c = configtest.MustParse(t, `links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    check: {targets: [203.0.113.10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
  - name: lte
    interface: wwan0
    gateway: 198.51.100.1
    tier: 2
    check: {targets: [203.0.113.10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
    on_demand: {up: "echo up >> `+log+`; exit 1", down: "echo down >> `+log+`"}
`)
	h.k = newFakeKernel(h.rec, h.c)
	h.probers = newFakeProbers(h.c)
	h.k.removeIface("wwan0")
	h.probers.setMissing("wwan0", true)
	h.start()
	commands := func() string { b, _ := os.ReadFile(log); return strings.Join(strings.Fields(string(b)), " ") }
	h.probers.set("wan1", false)
	h.events.send(Event{Kind: EventLink, Iface: "wan1", Up: false})
	h.waitState("isp1", health.StateDown)
	h.advanceSync()
	h.eventually("up command", func() bool { return commands() == "up" })
	for range 28 {
		h.round()
	}
	if c := commands(); c != "up" {
		t.Fatalf("before the retry interval: %q", c)
	}
	for range 3 {
		h.round()
		h.advanceSync()
	}
	h.eventually("up command again", func() bool { return commands() == "up up" })
}

// An on-demand link's up command does not wait behind an on_change hook
// of the same link that hangs: the backup is dialled at once.
func TestOnDemandUpNotBehindHangingHook(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "commands")
	hook := filepath.Join(dir, "hook.sh")
	// lte's hook hangs (its timeout is a minute); it says when it started.
	script := "#!/bin/sh\nif [ \"$FLOWPIN_LINK\" = lte ]; then touch " + filepath.Join(dir, "hanging") + "; sleep 60; fi\n"
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	h.c = configtest.MustParse(t, `links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    nat: true
    check: {targets: [203.0.113.10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
  - name: lte
    interface: wwan0
    gateway: 198.51.100.1
    nat: true
    tier: 2
    check: {targets: [203.0.113.10], interval: 1s, timeout: 500ms, fall: 3, rise: 2}
    on_demand: {up: "echo up >> `+log+`", down: "echo down >> `+log+`", keep: 1h}
hooks:
  on_change: `+hook+`
  timeout: 1m
`)
	h.k = newFakeKernel(h.rec, h.c)
	h.probers = newFakeProbers(h.c)
	h.start()
	commands := func() string { b, _ := os.ReadFile(log); return strings.Join(strings.Fields(string(b)), " ") }

	// lte's carrier goes: its on_change hook runs, and hangs.
	h.events.send(Event{Kind: EventLink, Iface: "wwan0", Up: false})
	h.waitState("lte", health.StateDown)
	h.advanceSync()
	h.eventually("lte's hook hangs", func() bool {
		_, err := os.Stat(filepath.Join(dir, "hanging"))
		return err == nil
	})

	// The primary dies: lte is needed, and its up command runs now, not
	// once the hook is killed a minute later.
	h.events.send(Event{Kind: EventLink, Iface: "wan1", Up: false})
	h.waitState("isp1", health.StateDown)
	h.advanceSync()
	h.eventually("up command while lte's hook hangs", func() bool { return commands() == "up" })
}
