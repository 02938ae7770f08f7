package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pageState is what the status page shows, read from its DOM.
type pageState struct {
	Text  string `json:"text"`
	Error string `json:"error"`
	Links []struct {
		Name      string `json:"name"`
		State     string `json:"state"`
		BadgeText string `json:"badgeText"`
		Reason    string `json:"reason"`
		Flows     string `json:"flows"`
		// Details are the card's lines by kind (operator, quota,
		// quota-warning, prefix6, dns), with where each was drawn.
		Details []struct {
			Key  string `json:"key"`
			Text string `json:"text"`
			Rect rect   `json:"rect"`
		} `json:"details"`
		Name_  rect `json:"nameRect"`
		Badge  rect `json:"badgeRect"`
		Graphs map[string]struct {
			Points int  `json:"points"`
			Rect   rect `json:"rect"`
		} `json:"graphs"`
	} `json:"links"`
	Policies []struct {
		Name   string `json:"name"`
		Active int    `json:"active"`
	} `json:"policies"`
	// Sets are the rows of the sets' table: name, filled by, rules, IPv4
	// and IPv6 elements.
	Sets map[string][]string `json:"sets"`
}

// detail is the text of a link's detail lines of kind key, joined by
// " | " ("" when the page shows none).
func (p *pageState) detail(link, key string) string {
	i, ok := p.link(link)
	if !ok {
		return ""
	}
	var out []string
	for _, d := range p.Links[i].Details {
		if d.Key == key {
			out = append(out, d.Text)
		}
	}
	return strings.Join(out, " | ")
}

// tier is the active tier the page shows for a policy (-1: not shown).
func (p *pageState) tier(policy string) int {
	for _, ps := range p.Policies {
		if ps.Name == policy {
			return ps.Active
		}
	}
	return -1
}

type rect struct{ X, Y, W, H float64 }

const pageStateJS = `(() => {
  const r = e => { const b = e.getBoundingClientRect(); return {X: b.x, Y: b.y, W: b.width, H: b.height}; };
  return {
    text: document.body.innerText,
    error: document.getElementById("error").textContent,
    links: [...document.querySelectorAll("section.link")].map(c => ({
      name: c.dataset.link, state: c.dataset.state, badgeText: c.querySelector(".badge").textContent,
      reason: c.querySelector(".reason").textContent,
      details: [...c.querySelectorAll(".details [data-detail]")].map(d => ({key: d.dataset.detail, text: d.textContent, rect: r(d)})),
      flows: c.querySelector('[data-num="flows"] b').textContent,
      nameRect: r(c.querySelector(".name")), badgeRect: r(c.querySelector(".badge")),
      graphs: Object.fromEntries([...c.querySelectorAll("figure")].map(f =>
        [f.dataset.graph, {points: Number(f.querySelector("svg").dataset.points || 0), rect: r(f.querySelector("svg"))}])),
    })),
    policies: [...document.querySelectorAll("#policies tbody tr")].map(tr => ({name: tr.dataset.policy, active: Number(tr.dataset.activeTier)})),
    sets: document.getElementById("sets").hidden ? {} : Object.fromEntries([...document.querySelectorAll("#sets tbody tr")].map(tr => [tr.dataset.set, [...tr.cells].map(td => td.textContent)])),
  };
})()`

func (p *pageState) link(name string) (i int, ok bool) {
	for i, l := range p.Links {
		if l.Name == name {
			return i, true
		}
	}
	return -1, false
}

// countPixels counts the pixels in r that differ from bg by more than a
// faint anti-aliasing shade, and those close to want (when given).
func countPixels(img image.Image, r rect, bg, want [3]int) (other, near int) {
	b := img.Bounds()
	for y := int(r.Y) + 1; y < int(r.Y+r.H)-1 && y < b.Max.Y; y++ {
		for x := int(r.X) + 1; x < int(r.X+r.W)-1 && x < b.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			c := [3]int{int(cr >> 8), int(cg >> 8), int(cb >> 8)}
			dist := func(o [3]int) int { return abs(c[0]-o[0]) + abs(c[1]-o[1]) + abs(c[2]-o[2]) }
			if dist(bg) > 60 {
				other++
			}
			if dist(want) < 40 {
				near++
			}
		}
	}
	return other, near
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// watchedRouter is the dual-WAN router running the daemon with fast checks,
// metrics and the status page on :9108, a policy "backup" that prefers
// isp2, and the traffic rule that rule gives for the echo server's port;
// held connections to that server move traffic until the test ends.
func watchedRouter(t *testing.T, rule func(port int) string, held int) (*dualWAN, *daemon) {
	t.Helper()
	d := newDualWAN(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	cfg := checkedConfig(d, d.GW2) + `policies:
  - {name: backup, tiers: [[isp2], [isp1]]}
rules:
  - ` + rule(srv.Port()) + "\n"
	dm := startDaemon(t, d.Router, cfg, "--metrics", ":9108")
	ll := startLongLived(t, d.LAN, hostPort(d.Service, srv.Port()), srv, held, dialOpts{})
	t.Cleanup(func() { ll.stop() })
	return d, dm
}

// pageRouter is watchedRouter's box with both families, and with what the
// page shows beyond the links' health: each ISP's own /56 (prefixes6), a
// DNS server of each link (the resolv file in a directory of the test's),
// a quota on isp1 whose state file says 85% of it is used this month, a
// file set and a domain set with their rules. Eight held connections to
// the far host move traffic until the test ends.
func pageRouter(t *testing.T) (*dualWAN, *daemon) {
	t.Helper()
	d := newDualWAN6(t)
	srv := startEchoServer(t, d.Far, d.Service+":0")
	dir := t.TempDir()
	office := filepath.Join(dir, "office.txt")
	if err := os.WriteFile(office, []byte("198.18.0.0/24\n198.18.2.0/24\n2001:db8:40::/48\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Monthly from the 1st, in the daemon's local time; a boot id of no
	// boot, so the counters of this one add to the 850 MB.
	now := time.Now()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.Local)
	state, _ := json.Marshal(map[string]any{"version": 1, "links": map[string]any{
		"isp1": map[string]any{"used": 850_000_000, "period_start": month, "kernel": 0, "boot": "none"}}})
	if err := os.WriteFile(filepath.Join(dir, "quota.json"), state, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(checkedConfig6(d), "    nat: true\n", "    nat: true\n    prefixes6: [2001:db8:1:100::/56]\n    dns: [203.0.113.53]\n    quota: {bytes: 1GB}\n", 1)
	cfg = strings.Replace(cfg, "    weight: 1\n    nat: true\n    check", "    weight: 1\n    nat: true\n    prefixes6: [2001:db8:2:100::/56]\n    dns: [203.0.113.54, 2001:db8:ff::54]\n    check", 1)
	cfg += fmt.Sprintf(`policies:
  - {name: backup, tiers: [[isp2], [isp1]]}
sets:
  - {name: office, files: [%s]}
  - {name: video, domains: [video.example]}
rules:
  - {name: ssh-out, proto: tcp, dst_ports: [2222], policy: backup}
  - {name: office-by-isp1, dst_set: office, policy: isp1}
  - {name: video-by-isp2, dst_set: video, policy: isp2}
`, office)
	dm := startDaemon(t, d.Router, cfg, "--metrics", ":9108", "--resolv-dir", dir,
		"--quota-state", filepath.Join(dir, "quota.json"), "--operator-state", filepath.Join(dir, "operator.json"))
	ll := startLongLived(t, d.LAN, hostPort(d.Service, srv.Port()), srv, 8, dialOpts{})
	t.Cleanup(func() { ll.stop() })
	return d, dm
}

// TestStatusPageInBrowser loads the daemon's status page in headless
// Chromium from the dual-WAN topology while traffic runs: both links
// named and up, with throughput and rtt graphs drawn (pixels in the
// screenshot, where the page put the graphs), and the policy on its first
// tier. Then isp2's ISP blackholes it: the page, without a reload, shows
// isp2 down with the reason (a red badge in the screenshot) and the policy
// on its second tier, within a few seconds. Beside the health, the page
// shows what the config and the operator add (pageRouter): each link's
// IPv6 prefix by its own link, then isp2's translated onto isp1's while
// isp2 is down; each link's DNS servers in the resolv file, then isp2's
// left out; isp1's quota with its 80% warning (drawn in the warning's
// colour); the sets with their element counts and what fills them; and,
// once `flowpin link isp2 down` is given, the operator's mode.
func TestStatusPageInBrowser(t *testing.T) {
	chromiumPath(t)
	d, dm := pageRouter(t)

	b := startBrowser(t, d.Router, 1280, 1200)
	loaded := time.Now()
	b.navigate(t, "http://127.0.0.1:9108/?interval=0.5")
	b.waitLoaded(t, "http://127.0.0.1:9108/")

	var st pageState
	waitPage := func(what string, limit time.Duration, ok func(*pageState) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			st = pageState{}
			b.eval(t, pageStateJS, &st)
			if ok(&st) {
				return time.Since(start)
			}
			if time.Since(start) > limit {
				t.Fatalf("page: %s not shown within %v; page text:\n%s\ndaemon log:\n%s", what, limit, st.Text, dm.logs())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Graphs need a few samples: the page keeps the history itself.
	waitPage("both links up with graphs", 20*time.Second, func(p *pageState) bool {
		if len(p.Links) != 2 {
			return false
		}
		for _, l := range p.Links {
			if l.State != "up" || l.Graphs["rtt"].Points < 4 || l.Graphs["throughput"].Points < 6 {
				return false
			}
		}
		return true
	})
	t.Logf("page shows both links up with graphs %v after loading", time.Since(loaded).Round(time.Millisecond))
	shot := b.screenshot(t)
	saveShot(t, "status-page-up.png", shot)
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"isp1", "isp2"} {
		i, ok := st.link(name)
		if !ok || !strings.Contains(st.Text, name) {
			t.Fatalf("page does not name %s:\n%s", name, st.Text)
		}
		l := st.Links[i]
		if l.Flows == "0" || l.Flows == "–" {
			t.Errorf("%s: flows %q with traffic running", name, l.Flows)
		}
		// The name is drawn (dark text on the card's light background).
		if n, _ := countPixels(img, l.Name_, [3]int{0xf7, 0xf9, 0xfb}, [3]int{}); n < 20 {
			t.Errorf("%s: its name's box %+v has %d drawn pixels in the screenshot", name, l.Name_, n)
		}
		// Graphs: drawn pixels on the graph background (#eef2f5) where
		// the page put each graph.
		for _, g := range []string{"throughput", "rtt"} {
			gr := l.Graphs[g]
			n, _ := countPixels(img, gr.Rect, [3]int{0xee, 0xf2, 0xf5}, [3]int{})
			t.Logf("%s %s graph: %d points, %d drawn pixels in %+v", name, g, gr.Points, n, gr.Rect)
			if n < 40 {
				t.Errorf("%s: %s graph at %+v is empty in the screenshot (%d pixels)", name, g, gr.Rect, n)
			}
		}
	}
	if tier := st.tier("backup"); tier != 1 {
		var js string
		b.eval(t, `fetch("status.json").then(r => r.text())`, &js)
		t.Errorf("policies on the page: %+v, want backup on tier 1; status.json:\n%s", st.Policies, js)
	}
	for _, c := range []struct{ link, key, want string }{
		{"isp1", "prefix6", "IPv6 prefix 2001:db8:1:100::/56: by its own link, untranslated"},
		{"isp2", "prefix6", "IPv6 prefix 2001:db8:2:100::/56: by its own link, untranslated"},
		{"isp1", "dns", "DNS: 203.0.113.53 (in the resolv file)"},
		{"isp2", "dns", "DNS: 203.0.113.54 (in the resolv file), 2001:db8:ff::54 (in the resolv file)"},
		{"isp1", "quota-warning", "warning: link isp1 used 85% of its quota"},
		{"isp1", "quota", "quota: 850 MB of 1.0 GB used (85 %), 150 MB left until "},
		{"isp2", "quota", ""},
		{"isp1", "operator", ""},
	} {
		if got := st.detail(c.link, c.key); (c.want == "") != (got == "") || !strings.HasPrefix(got, c.want) {
			t.Errorf("%s %s on the page: %q, want %q", c.link, c.key, got, c.want)
		}
	}
	// Sets: the file set's two ranges and one IPv6 range, the domain
	// set empty (no client resolved the name).
	if got := st.Sets["office"]; len(got) != 5 || !strings.HasPrefix(got[1], "file /") || !strings.HasSuffix(got[1], "/office.txt") ||
		strings.Join(append([]string{got[0]}, got[2:]...), " | ") != "office | office-by-isp1 | 2 | 1" {
		t.Errorf("set office on the page: %q, want office, its file, office-by-isp1, 2, 1", got)
	}
	if got, want := strings.Join(st.Sets["video"], " | "), "video | the resolver (dnsmasq nftset=) fills it for video.example | video-by-isp2 | 0 | 0"; got != want {
		t.Errorf("set video on the page: %q, want %q", got, want)
	}
	// flowpin status says the same in text.
	if out, err := flowpin(t, d.Router, "status", "-c", dm.cfg); err != nil {
		t.Errorf("flowpin status: %v\n%s", err, out)
	} else {
		for _, want := range []string{
			"\ndns of isp1: 203.0.113.53 (in the resolv file)\n",
			"\ndns of isp2: 203.0.113.54 (in the resolv file), 2001:db8:ff::54 (in the resolv file)\n",
			"\nprefixes6 of isp2: 2001:db8:2:100::/56 (isp2, own link, untranslated)\n",
			"\nwarning: link isp1 used 85% of its quota (150 MB left until ",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("flowpin status lacks %q:\n%s", strings.TrimSpace(want), out)
			}
		}
	}
	// The quota warning is drawn, in its colour, where the page put it.
	for _, dl := range st.Links[0].Details {
		if dl.Key == "quota-warning" {
			if _, n := countPixels(img, dl.Rect, [3]int{}, [3]int{0x8a, 0x5a, 0x00}); n < 20 {
				t.Errorf("quota warning at %+v: %d pixels of its colour in the screenshot", dl.Rect, n)
			}
		}
	}

	blackhole(t, d.ISP2)
	took := waitPage("isp2 down", 8*time.Second, func(p *pageState) bool {
		i, ok := p.link("isp2")
		return ok && p.Links[i].State == "down" && p.Links[i].Reason != "" && p.tier("backup") == 2
	})
	i2, _ := st.link("isp2")
	t.Logf("page shows isp2 down and policy backup on tier 2 %v after the blackhole (%q)", took.Round(time.Millisecond), st.Links[i2].Reason)
	if i, _ := st.link("isp1"); st.Links[i].State != "up" {
		t.Errorf("isp1 shows %q after isp2 failed", st.Links[i].State)
	}
	// isp2's IPv6 went with it: its prefix leaves by isp1, translated,
	// and its DNS servers are out of the resolv file.
	took = waitPage("isp2's prefix translated, its DNS servers out", 8*time.Second, func(p *pageState) bool {
		return p.detail("isp2", "prefix6") == "IPv6 prefix 2001:db8:2:100::/56: link down, translated to 2001:db8:1:100::/56 on isp1" &&
			p.detail("isp2", "dns") == "DNS: 203.0.113.54 (not in the resolv file), 2001:db8:ff::54 (not in the resolv file)"
	})
	t.Logf("page shows isp2's prefix translated and its DNS servers out %v later", took.Round(time.Millisecond))
	if got := st.detail("isp1", "dns"); got != "DNS: 203.0.113.53 (in the resolv file)" {
		t.Errorf("isp1 dns on the page: %q", got)
	}
	shot = b.screenshot(t)
	saveShot(t, "status-page-isp2-down.png", shot)
	if img, err = png.Decode(bytes.NewReader(shot)); err != nil {
		t.Fatal(err)
	}
	red := [3]int{0xc6, 0x28, 0x28}
	for _, name := range []string{"isp1", "isp2"} {
		i, _ := st.link(name)
		_, n := countPixels(img, st.Links[i].Badge, [3]int{}, red)
		if down := name == "isp2"; down != (n > 20) {
			t.Errorf("%s badge in the screenshot: %d red pixels (down: %v)", name, n, down)
		}
	}
	if st.Error != "" {
		t.Errorf("page shows an error: %s", st.Error)
	}

	// The operator takes isp2 out by hand.
	dm.setLink(t, "isp2", "down")
	took = waitPage("isp2 down by the operator", 5*time.Second, func(p *pageState) bool {
		i, ok := p.link("isp2")
		return ok && strings.HasPrefix(p.detail("isp2", "operator"), "operator: down since ") && p.Links[i].BadgeText == "down · operator"
	})
	t.Logf("page shows isp2's operator mode %v after flowpin link (%q)", took.Round(time.Millisecond), st.detail("isp2", "operator"))
}

// saveShot keeps a screenshot in $FLOWPIN_SCREENSHOTS, when set, for a
// person to look at.
func saveShot(t testing.TB, name string, png []byte) {
	dir := os.Getenv("FLOWPIN_SCREENSHOTS")
	if dir == "" {
		return
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Error(err)
	}
}
