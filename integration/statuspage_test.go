package integration

import (
	"bytes"
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
		Name   string `json:"name"`
		State  string `json:"state"`
		Reason string `json:"reason"`
		Flows  string `json:"flows"`
		Name_  rect   `json:"nameRect"`
		Badge  rect   `json:"badgeRect"`
		Graphs map[string]struct {
			Points int  `json:"points"`
			Rect   rect `json:"rect"`
		} `json:"graphs"`
	} `json:"links"`
	Policies []struct {
		Name   string `json:"name"`
		Active int    `json:"active"`
	} `json:"policies"`
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
      name: c.dataset.link, state: c.dataset.state,
      reason: c.querySelector(".reason").textContent,
      flows: c.querySelector('[data-num="flows"] b').textContent,
      nameRect: r(c.querySelector(".name")), badgeRect: r(c.querySelector(".badge")),
      graphs: Object.fromEntries([...c.querySelectorAll("figure")].map(f =>
        [f.dataset.graph, {points: Number(f.querySelector("svg").dataset.points || 0), rect: r(f.querySelector("svg"))}])),
    })),
    policies: [...document.querySelectorAll("#policies tbody tr")].map(tr => ({name: tr.dataset.policy, active: Number(tr.dataset.activeTier)})),
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

// TestStatusPageInBrowser loads the daemon's status page in headless
// Chromium from the dual-WAN topology while traffic runs: both links
// named and up, with throughput and rtt graphs drawn (pixels in the
// screenshot, where the page put the graphs), and the policy on its first
// tier. Then isp2's ISP blackholes it: the page, without a reload, shows
// isp2 down with the reason (a red badge in the screenshot) and the policy
// on its second tier, within a few seconds.
func TestStatusPageInBrowser(t *testing.T) {
	chromiumPath(t)
	d, dm := watchedRouter(t, func(int) string {
		return "{name: ssh-out, proto: tcp, dst_ports: [2222], policy: backup}"
	}, 8)

	b := startBrowser(t, d.Router, 1280, 1000)
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
