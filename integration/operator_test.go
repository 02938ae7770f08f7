package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// opLink is a link's row of `flowpin status --json` with what issue 24
// adds: the operator's mode and the quota.
type opLink struct {
	Name          string     `json:"name"`
	State         string     `json:"state"`
	Reason        string     `json:"reason"`
	Operator      string     `json:"operator"`
	OperatorSince *time.Time `json:"operator_since"`
	InMultipath   bool       `json:"in_multipath"`
	Flows         int64      `json:"flows"`
	Quota         *struct {
		Bytes     uint64 `json:"bytes"`
		Used      uint64 `json:"used"`
		Left      uint64 `json:"left"`
		Exhausted bool   `json:"exhausted"`
	} `json:"quota"`
}

func (dm *daemon) opLinks(t testing.TB) map[string]opLink {
	t.Helper()
	out, err := flowpin(t, dm.ns, "status", "--json", "-c", dm.cfg)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var s struct {
		Links []opLink `json:"links"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	m := map[string]opLink{}
	for _, l := range s.Links {
		m[l.Name] = l
	}
	return m
}

// setLink runs `flowpin link NAME MODE` as root and fails the test if it
// is refused.
func (dm *daemon) setLink(t testing.TB, args ...string) {
	t.Helper()
	if out, err := flowpin(t, dm.ns, append([]string{"link"}, args...)...); err != nil {
		t.Fatalf("flowpin link %v: %v\n%s", args, err, out)
	}
}

// TestOperatorLink is issue 24's `flowpin link` and quota on the dual-WAN
// NAT box, one topology throughout:
//   - an unprivileged user (even one of group flowpin, who may read the
//     status) is refused;
//   - drain: of 30 established flows none breaks, and none of 30 new ones
//     goes by the drained link, as the far end sees them; the mode survives
//     a daemon restart;
//   - auto: the link is back in the balance;
//   - down: its flows are deleted, new ones go by the other link, the hook
//     learns it was the operator;
//   - the hostile cases: an unknown link, odd characters, taking out the
//     last link;
//   - quota: a link with 200 kB goes to standby once that much passed it,
//     and its count survives a daemon restart.
func TestOperatorLink(t *testing.T) {
	requireRoot(t)
	d := newDualWAN(t)
	gid := flowpinGroup(t, d.Router)
	nobodyBin, _ := nobodyDir(t)
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(hook, []byte(fmt.Sprintf("#!/bin/sh\n{ env | grep '^FLOWPIN_' | sort; echo END; } > %s/$FLOWPIN_LINK-$FLOWPIN_STATE.env\n", dir)), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := checkedConfig(d, d.GW2) + fmt.Sprintf("hooks:\n  on_change: %s\n", hook)
	flags := []string{"--operator-state", filepath.Join(dir, "operator.json"), "--quota-state", filepath.Join(dir, "quota.json")}
	srv := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, srv.Port())
	wan1, wan2 := netip.MustParseAddr(d.WAN1), netip.MustParseAddr(d.WAN2)
	began := time.Now()
	dm := startDaemon(t, d.Router, cfg, flags...)

	// Unprivileged: refused by the daemon (SO_PEERCRED), though the
	// group may read the status.
	for _, groups := range [][]int{{gid}, nil} {
		cmd := exec.Command("ip", append([]string{"netns", "exec", d.Router}, asNobody(groups, nobodyBin, "link", "isp2", "drain")...)...)
		out, err := cmd.CombinedOutput()
		t.Logf("as nobody (groups %v): %v: %s", groups, err, strings.TrimSpace(string(out)))
		if err == nil {
			t.Fatalf("flowpin link as nobody (groups %v) succeeded: %s", groups, out)
		}
		if len(groups) > 0 && !strings.Contains(string(out), "only root may set a link's mode") {
			t.Errorf("as a member of group flowpin: %s, want the daemon's refusal", out)
		}
	}
	if l := dm.opLinks(t)["isp2"]; l.Operator != "" || !l.InMultipath {
		t.Fatalf("isp2 after the refused drain: %+v", l)
	}

	// drain: established flows stay, new ones avoid the link.
	before := startLongLived(t, d.LAN, target, srv, 30, dialOpts{})
	onISP2 := 0
	for _, s := range before.status {
		if s.Remote.Addr() == wan2 {
			onISP2++
		}
	}
	if onISP2 == 0 || onISP2 == 30 {
		t.Fatalf("%d of 30 established flows on isp2: the test needs both links", onISP2)
	}
	drainAt := time.Now()
	dm.setLink(t, "isp2", "drain")
	t.Logf("drain applied %v after the command began", time.Since(drainAt).Round(time.Millisecond))
	// A status is served again for 100ms, with the latest health: the
	// route's part of it may be that old.
	time.Sleep(150 * time.Millisecond)
	l := dm.opLinks(t)["isp2"]
	if l.Operator != "drain" || l.InMultipath || !strings.Contains(l.Reason, "drained by operator since ") || l.State != "up" {
		t.Errorf("isp2 drained: %+v", l)
	}
	srv.Reset()
	r := connectN(t, d.LAN, target, srv, 30, dialOpts{})
	t.Logf("30 new flows with isp2 drained: %d failed, far end saw %v", r.Failed, r.PerSource)
	if r.Failed != 0 || r.PerSource[wan2] != 0 || r.PerSource[wan1] != 30 {
		t.Errorf("new flows with isp2 drained: %d failed, %v; want all 30 by isp1", r.Failed, r.PerSource)
	}
	text, _ := flowpin(t, d.Router, "status", "-c", dm.cfg)
	if !strings.Contains(text, "up (drained)") || !strings.Contains(text, "isp2: drained by operator since") {
		t.Errorf("status text with isp2 drained:\n%s", text)
	}
	// verify checks against the daemon's plan: isp2 out of the route is
	// what it wants, not drift, and takes no new flows.
	if out, err := flowpin(t, d.Router, "verify", "--no-probe", "-c", dm.cfg); err != nil || !strings.Contains(out, "isp2 out of the IPv4 multipath route (drained by operator since ") {
		t.Errorf("verify with isp2 drained: %v\n%s", err, out)
	}

	// The mode survives a daemon restart; the established flows too.
	if _, err := dm.stop(); err != nil {
		t.Fatal(err)
	}
	dm = startDaemon(t, d.Router, cfg, flags...)
	if l := dm.opLinks(t)["isp2"]; l.Operator != "drain" || l.InMultipath || l.OperatorSince == nil || l.OperatorSince.Before(drainAt.Add(-time.Second)) {
		t.Errorf("isp2 after a daemon restart: %+v", l)
	}
	srv.Reset()
	if r := connectN(t, d.LAN, target, srv, 30, dialOpts{}); r.Failed != 0 || r.PerSource[wan2] != 0 {
		t.Errorf("new flows after the restart, isp2 drained: %d failed, %v", r.Failed, r.PerSource)
	}
	time.Sleep(300 * time.Millisecond)
	broken, stayed2 := 0, 0
	for i, s := range before.stop() {
		if s.Stalled || s.Err != nil {
			broken++
			t.Errorf("established flow %d (by %v) broke: stalled=%v err=%v", i, s.Remote.Addr(), s.Stalled, s.Err)
		}
		if s.Remote.Addr() == wan2 && s.Echoes > 0 {
			stayed2++
		}
	}
	t.Logf("drain and a daemon restart: %d of 30 established flows broken; %d on isp2 went on", broken, stayed2)

	// auto: back in the balance.
	dm.setLink(t, "isp2", "auto")
	time.Sleep(150 * time.Millisecond)
	if l := dm.opLinks(t)["isp2"]; l.Operator != "" || !l.InMultipath {
		t.Errorf("isp2 after auto: %+v", l)
	}
	srv.Reset()
	r = connectN(t, d.LAN, target, srv, 60, dialOpts{})
	t.Logf("60 new flows after auto: %v", r.PerSource)
	if r.Failed != 0 || r.PerSource[wan2] < 10 || r.PerSource[wan1] < 10 {
		t.Errorf("isp2 not back in the balance: %d failed, %v", r.Failed, r.PerSource)
	}

	// down: flows deleted, new ones moved, the hook told.
	held := startLongLived(t, d.LAN, target, srv, 20, dialOpts{})
	dm.setLink(t, "isp2", "down")
	l = dm.opLinks(t)["isp2"]
	if l.State != "down" || l.Operator != "down" || !strings.HasPrefix(l.Reason, "down by operator since ") {
		t.Errorf("isp2 down by operator: %+v", l)
	}
	env := readEnv(t, filepath.Join(dir, "isp2-down.env"), 5*time.Second)
	if env["FLOWPIN_CAUSE"] != "operator" || !strings.HasPrefix(env["FLOWPIN_REASON"], "down by operator") {
		t.Errorf("hook env of the operator's down: %v", env)
	}
	srv.Reset()
	if r := connectN(t, d.LAN, target, srv, 30, dialOpts{}); r.Failed != 0 || r.PerSource[wan1] != 30 {
		t.Errorf("new flows with isp2 down: %d failed, %v", r.Failed, r.PerSource)
	}
	// isp2's flows were deleted: their next packets leave by isp1 with
	// its address, which the far end does not know, so they break; isp1's
	// go on.
	time.Sleep(stallAfter + 500*time.Millisecond)
	cut, kept := 0, 0
	for i, s := range held.stop() {
		switch s.Remote.Addr() {
		case wan2:
			if s.Stalled || s.Err != nil {
				cut++
			} else {
				t.Errorf("flow %d on isp2 went on after down: %d echoes", i, s.Echoes)
			}
		case wan1:
			if s.Stalled || s.Err != nil {
				t.Errorf("flow %d on isp1 broke when isp2 went down: stalled=%v err=%v", i, s.Stalled, s.Err)
			} else {
				kept++
			}
		}
	}
	t.Logf("down: %d flows on isp2 deleted (broken), %d on isp1 went on", cut, kept)
	if cut == 0 || kept == 0 {
		t.Errorf("held flows were %d on isp2 and %d on isp1: the test needs both", cut, kept)
	}

	// Hostile input.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"nosuch", "drain"}, `no such link "nosuch" in the config (links: isp1, isp2)`},
		{[]string{"is p2/../x\x1b", "drain"}, `no such link "is p2/../x\x1b" in the config`},
		{[]string{"isp2", "sideways"}, `want drain, down, up or auto`},
		{[]string{"isp1", "drain"}, "would leave no IPv4 link to take new flows"},
	} {
		out, err := flowpin(t, d.Router, append([]string{"link"}, c.args...)...)
		if err == nil || !strings.Contains(out, c.want) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
			t.Errorf("flowpin link %q: %v, %q; want one line with %q", c.args, err, out, c.want)
		}
	}
	if l := dm.opLinks(t)["isp1"]; l.Operator != "" || !l.InMultipath {
		t.Errorf("isp1 after the refused drain: %+v", l)
	}
	dm.setLink(t, "isp2", "auto")
	dm.waitState(t, "isp2", "up", 5*time.Second)

	// quota: 200 kB on isp2. With isp1 drained, a bulk transfer of 256 kB
	// each way passes isp2.
	qcfg := strings.Replace(cfg, "    weight: 1\n    nat: true\n    check: "+fastCheck(d)+"\nhooks:", "    weight: 1\n    nat: true\n    check: "+fastCheck(d)+"\n    quota: {bytes: 200kB, period: monthly, start_day: 1}\nhooks:", 1)
	if qcfg == cfg {
		t.Fatal("no quota put in the config")
	}
	if out, err := dm.reload(t, qcfg, false); err != nil {
		t.Fatalf("reload with a quota: %v\n%s", err, out)
	}
	dm.setLink(t, "isp1", "drain")
	bulkAt := time.Now()
	c, _ := echoBulk(t, d.LAN, target, 256<<10)
	c.Close()
	for l = dm.opLinks(t)["isp2"]; l.State != "standby"; l = dm.opLinks(t)["isp2"] {
		if time.Since(bulkAt) > 8*time.Second {
			t.Fatalf("isp2 not on standby 8s after 512 kB passed it: %+v (quota %+v)", l, l.Quota)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("isp2 on standby %v after the bulk transfer began", time.Since(bulkAt).Round(time.Millisecond))
	if l.Quota == nil || !l.Quota.Exhausted || l.Quota.Used < 200000 || l.Quota.Left != 0 || !strings.HasPrefix(l.Reason, "quota: ") {
		t.Errorf("isp2 after 512 kB: %+v (quota %+v)", l, l.Quota)
	}
	used := l.Quota.Used
	t.Logf("isp2 on standby: %s; used %d of %d", l.Reason, used, l.Quota.Bytes)
	text, _ = flowpin(t, d.Router, "status", "-c", dm.cfg)
	if !strings.Contains(text, "warning: link isp2 used all of its quota") {
		t.Errorf("status text with isp2's quota exhausted:\n%s", text)
	}
	dm.setLink(t, "isp1", "auto")
	srv.Reset()
	if r := connectN(t, d.LAN, target, srv, 30, dialOpts{}); r.Failed != 0 || r.PerSource[wan1] != 30 {
		t.Errorf("new flows with isp2 on standby for its quota: %d failed, %v", r.Failed, r.PerSource)
	}

	// The count survives a restart.
	if _, err := dm.stop(); err != nil {
		t.Fatal(err)
	}
	dm = startDaemon(t, d.Router, qcfg, flags...)
	l = dm.opLinks(t)["isp2"]
	if l.State != "standby" || l.Quota == nil || l.Quota.Used < used {
		t.Errorf("isp2 after a restart: %+v (quota %+v), want standby with at least %d used", l, l.Quota, used)
	}

	// A reload that removes a drained link forgets its mode: back in the
	// config, it is in auto.
	dm.setLink(t, "isp2", "drain")
	oneLink := qcfg[:strings.Index(qcfg, "  - name: isp2")] + qcfg[strings.Index(qcfg, "hooks:"):]
	if out, err := dm.reload(t, oneLink, false); err != nil {
		t.Fatalf("reload without isp2: %v\n%s", err, out)
	}
	if !strings.Contains(dm.logs(), `msg="operator modes of links no longer in the config forgotten" links=[isp2]`) {
		t.Errorf("no log of isp2's mode forgotten:\n%s", dm.logs())
	}
	if out, err := dm.reload(t, qcfg, false); err != nil {
		t.Fatalf("reload with isp2 again: %v\n%s", err, out)
	}
	if l := dm.opLinks(t)["isp2"]; l.Operator != "" {
		t.Errorf("isp2 back in the config: %+v", l)
	}
	t.Logf("test took %v", time.Since(began).Round(time.Millisecond))
}
