package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The JSON of `flowpin status --json` and `--flows --json` as README.md
// documents it, spelled out here rather than borrowed from package lb, so a
// renamed field fails this test.
type statusCounters struct {
	Flows                int64  `json:"flows"`
	BytesOut             uint64 `json:"bytes_out"`
	BytesIn              uint64 `json:"bytes_in"`
	PacketsOut           uint64 `json:"packets_out"`
	PacketsIn            uint64 `json:"packets_in"`
	FlowsWithoutCounters int64  `json:"flows_without_counters"`
}

type statusLink struct {
	Name        string  `json:"name"`
	Interface   string  `json:"interface"`
	Gateway     string  `json:"gateway"`
	Weight      int     `json:"weight"`
	Mark        uint32  `json:"mark"`
	State       string  `json:"state"`
	InMultipath bool    `json:"in_multipath"`
	FlowShare   float64 `json:"flow_share"`
	WeightShare float64 `json:"weight_share"`
	Rate        *struct {
		BytesOutPerSec float64 `json:"bytes_out_per_sec"`
	} `json:"rate"`
	statusCounters
}

type statusDoc struct {
	Schema   int              `json:"schema"`
	Daemon   bool             `json:"daemon"`
	Acct     bool             `json:"acct"`
	Links    []statusLink     `json:"links"`
	Unpinned statusCounters   `json:"unpinned"`
	Other    []map[string]any `json:"other_marks"`
	Total    statusCounters   `json:"total"`
	Warnings []string         `json:"warnings"`
}

type flowDoc struct {
	Matched int64 `json:"matched"`
	Flows   []struct {
		Proto    string  `json:"proto"`
		Src      string  `json:"src"`
		Dst      string  `json:"dst"`
		NATSrc   *string `json:"nat_src"`
		Link     string  `json:"link"`
		BytesOut uint64  `json:"bytes_out"`
		BytesIn  uint64  `json:"bytes_in"`
	} `json:"flows"`
}

func statusJSON(t *testing.T, ns, cfg string, extra ...string) []byte {
	t.Helper()
	out, err := flowpin(t, ns, append([]string{"status", "--json", "-c", cfg}, extra...)...)
	if err != nil {
		t.Fatalf("flowpin status %v: %v\n%s", extra, err, out)
	}
	return []byte(out)
}

func readStatus(t *testing.T, ns, cfg string) statusDoc {
	t.Helper()
	var s statusDoc
	if err := json.Unmarshal(statusJSON(t, ns, cfg), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func readFlows(t *testing.T, ns, cfg string, extra ...string) flowDoc {
	t.Helper()
	var f flowDoc
	if err := json.Unmarshal(statusJSON(t, ns, cfg, append([]string{"--flows"}, extra...)...), &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func (s statusDoc) link(t *testing.T, name string) statusLink {
	t.Helper()
	for _, l := range s.Links {
		if l.Name == name {
			return l
		}
	}
	t.Fatalf("no link %q in status", name)
	return statusLink{}
}

// linkOf says which link a NATed source address belongs to.
func (d *dualWAN) linkOf(a netip.Addr) string {
	switch a.String() {
	case d.WAN1:
		return "isp1"
	case d.WAN2:
		return "isp2"
	}
	return "?" + a.String()
}

// echoBulk sends n bytes over a new connection from ns to target through
// the echo protocol and reads them back; it returns the connection, still
// open, so its conntrack entry stays, and its local address.
func echoBulk(t *testing.T, ns, target string, n int) (net.Conn, netip.AddrPort) {
	t.Helper()
	c, err := dialIn(ns, target, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	payload := bytes.Repeat([]byte("flowpin!"), n/8)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(append([]byte(randToken()+"\n"), payload...))
		errc <- err
	}()
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatalf("bulk echo: token: %v", err)
	}
	if _, err := io.CopyN(io.Discard, br, int64(len(payload))); err != nil {
		t.Fatalf("bulk echo: read %d bytes back: %v", len(payload), err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("bulk echo: write: %v", err)
	}
	return c, c.LocalAddr().(*net.TCPAddr).AddrPort()
}

// TestStatusDualWAN is the proof of issue 3 on the dual-WAN NAT box: status
// refuses a namespace flowpin was never applied to, then, with long-lived
// connections held open, its per-link flow counts equal what the far end
// saw per NATed source, bytes grow with what was sent, --flows shows a
// known connection with its NATed address on its link, flows opened before
// apply are unpinned, and --watch keeps redrawing with rates.
func TestStatusDualWAN(t *testing.T) {
	t.Parallel()
	d := newDualWAN(t)
	// Unequal weights, so a status that swapped the links' counts would
	// almost surely disagree with the far end.
	cfg := writeFile(t, "flowpin.yaml", d.config(3, 1))

	for _, args := range [][]string{{"status", "-c", cfg}, {"status", "--json", "-c", cfg}, {"status", "--flows", "-c", cfg}} {
		out, err := flowpin(t, d.Router, args...)
		if err == nil || !strings.Contains(out, "not applied in this network namespace") {
			t.Errorf("flowpin %v before apply: err %v, output:\n%s\nwant a non-zero exit saying it is not applied", args, err, out)
		}
	}

	// Connections to the router itself from the LAN, opened before apply,
	// never cross a link: they must be counted as unpinned, not dropped.
	// A NAT box has conntrack running before flowpin (its masquerade
	// does); this table stands in for that, so these flows are tracked
	// from their first packet, while nf_conntrack_acct is still off.
	nft(t, d.Router, "table inet before_flowpin {\n\tchain c {\n\t\ttype filter hook prerouting priority 0;\n\t\tct state established accept\n\t}\n}\n")
	routerSrv := startEchoServer(t, d.Router, d.RouterLAN+":0")
	const unpinned = 3
	before := startLongLived(t, d.LAN, fmt.Sprintf("%s:%d", d.RouterLAN, routerSrv.Port()), routerSrv, unpinned, dialOpts{})
	if out, err := flowpin(t, d.Router, "apply", "-c", cfg); err != nil {
		t.Fatalf("flowpin apply: %v\n%s", err, out)
	}

	far := startEchoServer(t, d.Far, d.Service+":0")
	target := fmt.Sprintf("%s:%d", d.Service, far.Port())
	const n = 16
	ll := startLongLived(t, d.LAN, target, far, n, dialOpts{})
	sources := far.Sources()

	s := readStatus(t, d.Router, cfg)
	if s.Schema != 1 || s.Daemon || !s.Acct {
		t.Errorf("schema %d daemon %v acct %v, want 1, false, true", s.Schema, s.Daemon, s.Acct)
	}
	var pinned int64
	for _, l := range s.Links {
		want := int64(sources[addr(map[string]string{"isp1": d.WAN1, "isp2": d.WAN2}[l.Name])])
		if l.Flows != want {
			t.Errorf("link %s: status counts %d flows, the far end saw %d connections from its address (all: %v)", l.Name, l.Flows, want, sources)
		}
		wantShare := map[string]float64{"isp1": 0.75, "isp2": 0.25}[l.Name]
		if l.State != "unknown" || !l.InMultipath || l.WeightShare != wantShare {
			t.Errorf("link %s: state %q in_multipath %v weight_share %v, want unknown, true, %v", l.Name, l.State, l.InMultipath, l.WeightShare, wantShare)
		}
		pinned += l.Flows
	}
	if pinned != n {
		t.Errorf("pinned flows %d, want %d", pinned, n)
	}
	if s.Unpinned.Flows != unpinned {
		t.Errorf("unpinned flows %d, want the %d opened before apply", s.Unpinned.Flows, unpinned)
	}
	if s.Unpinned.FlowsWithoutCounters != unpinned {
		t.Errorf("unpinned flows without counters: %d, want %d (acct was off when they started)", s.Unpinned.FlowsWithoutCounters, unpinned)
	}
	if s.Total.Flows != n+unpinned || len(s.Other) != 0 {
		t.Errorf("total %d flows, other marks %v; want %d, none", s.Total.Flows, s.Other, n+unpinned)
	}

	// --flows shows a known connection with its NATed source on its link.
	known := ll.status[0]
	wantLink := d.linkOf(known.Remote.Addr())
	text, err := flowpin(t, d.Router, "status", "--flows", "--limit", "0", "-c", cfg)
	if err != nil {
		t.Fatalf("status --flows: %v\n%s", err, text)
	}
	found := false
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && f[1] == known.Local.String() {
			found = true
			if f[0] != "tcp" || f[2] != target || f[3] != known.Remote.String() || f[4] != wantLink {
				t.Errorf("--flows row %q, want tcp %s %s %s %s", line, known.Local, target, known.Remote, wantLink)
			}
		}
	}
	if !found {
		t.Errorf("--flows does not list %s:\n%s", known.Local, text)
	}
	perLink := readFlows(t, d.Router, cfg, "--link", wantLink, "--limit", "0")
	if perLink.Matched != s.link(t, wantLink).Flows {
		t.Errorf("--flows --link %s matched %d, status counts %d", wantLink, perLink.Matched, s.link(t, wantLink).Flows)
	}
	for _, f := range perLink.Flows {
		if f.Link != wantLink || f.NATSrc == nil || !strings.HasPrefix(*f.NATSrc, map[string]string{"isp1": d.WAN1, "isp2": d.WAN2}[wantLink]+":") {
			t.Errorf("--link %s listed %+v", wantLink, f)
		}
	}
	un := readFlows(t, d.Router, cfg, "--link", "unpinned")
	if un.Matched != unpinned {
		t.Errorf("--link unpinned matched %d, want %d", un.Matched, unpinned)
	}
	for _, f := range un.Flows {
		if f.NATSrc != nil || !strings.HasPrefix(f.Dst, d.RouterLAN+":") {
			t.Errorf("unpinned flow %+v, want one to %s without NAT", f, d.RouterLAN)
		}
	}
	before.stop()

	// Bytes grow with the traffic sent: 1 MiB each way over one more
	// connection, found by its local address.
	const bulk = 1 << 20
	_, local := echoBulk(t, d.LAN, target, bulk)
	var flow *struct {
		Proto    string  `json:"proto"`
		Src      string  `json:"src"`
		Dst      string  `json:"dst"`
		NATSrc   *string `json:"nat_src"`
		Link     string  `json:"link"`
		BytesOut uint64  `json:"bytes_out"`
		BytesIn  uint64  `json:"bytes_in"`
	}
	all := readFlows(t, d.Router, cfg, "--limit", "1")
	if len(all.Flows) == 1 && all.Flows[0].Src == local.String() {
		flow = &all.Flows[0]
	}
	if flow == nil {
		t.Fatalf("the bulk connection %s is not the largest flow: %+v", local, all.Flows)
	}
	// IP bytes: the payload plus 52 bytes of headers per segment, and the
	// handshake; segments are at least 1448 bytes of payload on a veth
	// most of the time, so 10% covers the headers.
	for dir, got := range map[string]uint64{"out": flow.BytesOut, "in": flow.BytesIn} {
		if got < bulk || got > bulk+bulk/10 {
			t.Errorf("bulk flow bytes_%s = %d, want between %d and %d", dir, got, bulk, bulk+bulk/10)
		}
	}
	s2 := readStatus(t, d.Router, cfg)
	l1, l2 := s.link(t, flow.Link), s2.link(t, flow.Link)
	if grew := l2.BytesOut - l1.BytesOut; grew < bulk {
		t.Errorf("link %s bytes_out grew by %d, want at least %d", flow.Link, grew, bulk)
	}
	if grew := l2.BytesIn - l1.BytesIn; grew < bulk {
		t.Errorf("link %s bytes_in grew by %d, want at least %d", flow.Link, grew, bulk)
	}

	// --watch into a pipe: frames one after another, rates from the second.
	frames := watchStatus(t, d.Router, 1500*time.Millisecond, "status", "--watch", "300ms", "-c", cfg)
	if len(frames) < 3 {
		t.Fatalf("--watch printed %d frames in 1.5s at 300ms, want at least 3:\n%s", len(frames), strings.Join(frames, "\n----\n"))
	}
	if strings.Contains(frames[0], "OUT/s") || !strings.Contains(frames[1], "OUT/s") || !strings.Contains(frames[1], "isp1") {
		t.Errorf("--watch frames: the first without rates, later ones with them:\n%s\n----\n%s", frames[0], frames[1])
	}
	lines := watchStatus(t, d.Router, 1200*time.Millisecond, "status", "--watch=300ms", "--json", "-c", cfg)
	if len(lines) < 3 {
		t.Fatalf("--watch --json printed %d lines, want at least 3", len(lines))
	}
	var w statusDoc
	if err := json.Unmarshal([]byte(lines[1]), &w); err != nil {
		t.Fatalf("--watch --json line 2: %v\n%s", err, lines[1])
	}
	// The long-lived connections exchange a line every 50ms.
	if r := w.link(t, wantLink).Rate; r == nil || r.BytesOutPerSec <= 0 {
		t.Errorf("--watch --json: link %s rate %+v, want bytes flowing", wantLink, r)
	}

	// On a terminal --watch redraws in place: the alternate screen, each
	// frame from the top-left corner, and the screen restored on SIGINT.
	// script(1) provides the terminal.
	if _, err := exec.LookPath("script"); err != nil {
		t.Log("script(1) not installed: terminal redraw not checked")
	} else {
		cmd := fmt.Sprintf("timeout --preserve-status -s INT 1.5 %s status --watch 300ms -c %s", flowpinBin, cfg)
		out, err := tryRun(d.Router, "script", "-qec", cmd, "/dev/null")
		if err != nil {
			t.Fatalf("--watch on a terminal: %v\n%q", err, out)
		}
		enter, home, leave := "\x1b[?1049h", "\x1b[H", "\x1b[?25h\x1b[?1049l"
		if !strings.HasPrefix(out, enter) || strings.Count(out, home) < 3 || !strings.HasSuffix(strings.TrimRight(out, "\r\n"), leave) {
			t.Errorf("--watch on a terminal: want %q, >= 3 frames each starting %q, then %q; got %q", enter, home, leave, out)
		}
		if strings.Count(out, "isp1") != strings.Count(out, home) {
			t.Errorf("--watch on a terminal: %d frames but %d isp1 rows", strings.Count(out, home), strings.Count(out, "isp1"))
		}
	}

	if res := ll.stop(); true {
		for i, c := range res {
			if c.Err != nil || c.Stalled {
				t.Errorf("long-lived connection %d: err %v stalled %v", i, c.Err, c.Stalled)
			}
		}
	}
}

// watchStatus runs flowpin with args for d, then interrupts it as a user
// would (SIGINT), requires a clean exit, and splits its output into frames
// (text) or lines (--json).
func watchStatus(t *testing.T, ns string, d time.Duration, args ...string) []string {
	t.Helper()
	if flowpinBin == "" {
		t.Skip("flowpin binary not built")
	}
	if err := mustOwn(ns); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, flowpinBin}, args...)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil && ctx.Err() == nil {
		t.Fatalf("flowpin %v: %v\n%s%s", args, err, out.String(), errOut.String())
	} else if cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("flowpin %v: exit %d on SIGINT, want 0\n%s", args, cmd.ProcessState.ExitCode(), errOut.String())
	}
	if strings.Contains(strings.Join(args, " "), "--json") {
		return strings.Split(strings.TrimSpace(out.String()), "\n")
	}
	var frames []string
	for _, f := range strings.Split(out.String(), "flowpin status, every ") {
		if strings.TrimSpace(f) != "" {
			frames = append(frames, f)
		}
	}
	return frames
}
