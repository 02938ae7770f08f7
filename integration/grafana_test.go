package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// A query of the dashboard: its expression and legend, and where it is.
type dashQuery struct {
	where, expr, legend string
}

// dashboardQueries reads examples/grafana-dashboard.json and returns every
// PromQL expression in it: panel targets (rows' nested panels too),
// annotations and template variables.
func dashboardQueries(t *testing.T) []dashQuery {
	t.Helper()
	b, err := os.ReadFile("../examples/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title       string            `json:"title"`
		UID         string            `json:"uid"`
		Schema      int               `json:"schemaVersion"`
		Panels      []json.RawMessage `json:"panels"`
		Annotations struct {
			List []struct {
				Name string `json:"name"`
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || dash.Schema == 0 || len(dash.Panels) == 0 {
		t.Fatalf("grafana-dashboard.json: title %q uid %q schemaVersion %d, %d panels", dash.Title, dash.UID, dash.Schema, len(dash.Panels))
	}
	type panel struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		GridPos struct{ X, Y, W, H int } `json:"gridPos"`
		Targets []struct {
			RefID  string `json:"refId"`
			Expr   string `json:"expr"`
			Legend string `json:"legendFormat"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var qs []dashQuery
	ids := map[int]bool{}
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("panel: %v", err)
			}
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %q: gridPos %+v off the 24-column grid", p.Title, p.GridPos)
			}
			if p.Type != "row" && (p.Datasource == nil || p.Datasource.UID != "${datasource}") {
				t.Errorf("panel %q: datasource is not the dashboard's ${datasource} variable", p.Title)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if refs[tg.RefID] || tg.RefID == "" {
					t.Errorf("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
				qs = append(qs, dashQuery{where: fmt.Sprintf("panel %q %s", p.Title, tg.RefID), expr: tg.Expr, legend: tg.Legend})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, a := range dash.Annotations.List {
		if a.Expr != "" {
			qs = append(qs, dashQuery{where: "annotation " + a.Name, expr: a.Expr})
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		// label_values(SELECTOR, LABEL): the selector is PromQL.
		m := regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`).FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
		}
		qs = append(qs, dashQuery{where: "variable " + v.Name, expr: m[1], legend: "{{" + m[2] + "}}"})
	}
	for _, q := range qs {
		if q.expr == "" {
			t.Errorf("%s: empty expression", q.where)
		}
		// Brackets balance: a cheap check that the expression is whole.
		var stack []rune
		pairs := map[rune]rune{')': '(', '}': '{', ']': '['}
		inStr := false
		for _, c := range q.expr {
			switch {
			case c == '"':
				inStr = !inStr
			case inStr:
			case c == '(' || c == '{' || c == '[':
				stack = append(stack, c)
			case pairs[c] != 0:
				if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
					t.Errorf("%s: unbalanced %q in %s", q.where, c, q.expr)
				}
				if len(stack) > 0 {
					stack = stack[:len(stack)-1]
				}
			}
		}
		if len(stack) > 0 || inStr {
			t.Errorf("%s: unclosed brackets or quotes in %s", q.where, q.expr)
		}
	}
	return qs
}

// exposition maps each sample name on a /metrics page to its label names.
func exposition(body string) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	label := regexp.MustCompile(`(\w+)="`)
	for _, l := range strings.Split(body, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		name, rest, _ := strings.Cut(l, "{")
		if !strings.Contains(l, "{") {
			name, _, _ = strings.Cut(l, " ")
			rest = ""
		}
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for _, m := range label.FindAllStringSubmatch(rest, -1) {
			out[name][m[1]] = true
		}
	}
	return out
}

var (
	metricRef   = regexp.MustCompile(`\b(flowpin_[a-z0-9_]+)(\{[^}]*\})?`)
	matcher     = regexp.MustCompile(`(\w+)\s*(?:=~|!~|!=|=)\s*"`)
	byClause    = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	legendLabel = regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`)
)

// Labels Prometheus adds when it scrapes: no exporter has them.
var targetLabels = map[string]bool{"instance": true, "job": true}

// TestGrafanaDashboardMetrics: examples/grafana-dashboard.json parses, and
// every metric it queries, with every label it selects on, groups by or
// names in a legend, is on a live daemon's /metrics: links up and down,
// traffic, a policy and a traffic rule, a failover.
func TestGrafanaDashboardMetrics(t *testing.T) {
	qs := dashboardQueries(t)
	d, dm := watchedRouter(t, func(port int) string {
		return fmt.Sprintf("{name: echo, proto: tcp, dst_ports: [%d], policy: default}", port)
	}, 4)
	// A healthy router: every series the dashboard draws is there,
	// counters of what has not happened yet at 0. Some come with the
	// first probe rounds and flow counts: waited for, not slept for.
	healthy := scrapeUntil(t, d.Router, "127.0.0.1:9108", 5*time.Second, func(body string) bool { return drawsAll(qs, body) })
	checkDashboard(t, qs, healthy, "healthy")
	blackhole(t, d.ISP2)
	dm.waitState(t, "isp2", "down", 5*time.Second)
	body := scrapeUntil(t, d.Router, "127.0.0.1:9108", 5*time.Second, func(body string) bool { return drawsAll(qs, body) })
	queried := checkDashboard(t, qs, body, "after isp2 failed")
	// The list: per-link state, flows, throughput, rtt/loss,
	// failovers, sync errors.
	for _, m := range []string{"flowpin_link_up", "flowpin_link_flows", "flowpin_link_bytes_total", "flowpin_probe_rtt_seconds",
		"flowpin_link_rtt_seconds", "flowpin_link_loss_ratio", "flowpin_link_jitter_seconds", "flowpin_link_state_changes_total", "flowpin_policy_active_tier", "flowpin_sync_errors_total"} {
		if !queried[m] {
			t.Errorf("the dashboard does not query %s", m)
		}
	}
	have := exposition(body)
	var names []string
	for n := range queried {
		names = append(names, n)
	}
	sort.Strings(names)
	var unused []string
	for n := range have {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
		if strings.HasPrefix(n, "flowpin_") && !queried[n] && !queried[base+"_bucket"] && !slices.Contains(unused, base) {
			unused = append(unused, base)
		}
	}
	sort.Strings(unused)
	t.Logf("dashboard queries %d metrics: %s; not charted: %s", len(names), strings.Join(names, " "), strings.Join(unused, " "))
	if t.Failed() {
		t.Logf("metrics, healthy:\n%s\nmetrics, after isp2 failed:\n%s", healthy, body)
	}
}

// checkDashboard checks that every metric the dashboard queries is on the
// /metrics page body, with the labels the queries use, and returns the
// metrics queried.
// drawsAll says whether every metric the dashboard's queries name is on
// /metrics (checkDashboard says what is wrong).
func drawsAll(qs []dashQuery, body string) bool {
	have := exposition(body)
	for _, q := range qs {
		for _, r := range metricRef.FindAllStringSubmatch(q.expr, -1) {
			if _, ok := have[r[1]]; !ok {
				return false
			}
		}
	}
	return true
}

func checkDashboard(t *testing.T, qs []dashQuery, body, phase string) map[string]bool {
	t.Helper()
	have := exposition(body)
	queried := map[string]bool{}
	for _, q := range qs {
		refs := metricRef.FindAllStringSubmatch(q.expr, -1)
		if len(refs) == 0 {
			t.Errorf("%s: queries no flowpin metric: %s", q.where, q.expr)
			continue
		}
		var labels map[string]bool // of the expression's metrics, all of them
		for _, r := range refs {
			name := r[1]
			queried[name] = true
			got, ok := have[name]
			if !ok {
				t.Errorf("%s: %s: %s is not on /metrics", phase, q.where, name)
				continue
			}
			for _, m := range matcher.FindAllStringSubmatch(r[2], -1) {
				if !got[m[1]] && !targetLabels[m[1]] {
					t.Errorf("%s: %s: %s has no label %q", phase, q.where, name, m[1])
				}
			}
			if labels == nil {
				labels = map[string]bool{}
			}
			for l := range got {
				labels[l] = true
			}
		}
		if labels == nil {
			continue
		}
		var want []string
		for _, m := range byClause.FindAllStringSubmatch(q.expr, -1) {
			for _, l := range strings.Split(m[1], ",") {
				want = append(want, strings.TrimSpace(l))
			}
		}
		for _, m := range legendLabel.FindAllStringSubmatch(q.legend, -1) {
			want = append(want, m[1])
		}
		for _, l := range want {
			if l != "" && !labels[l] && !targetLabels[l] {
				t.Errorf("%s: %s: label %q (by or legend) is on none of its metrics: %s", phase, q.where, l, q.expr)
			}
		}
	}
	return queried
}
