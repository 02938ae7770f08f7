package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPlanFullScriptHostileNames: on a router whose uplinks have names
// full of shell syntax (the kernel takes anything but '/', ':' and white
// space), the script `plan --full` prints, run with sh in the fresh
// namespace, builds exactly the planned state (a plan afterwards has
// nothing to change; each interface has its sysctl, route and NAT rule)
// and runs nothing else (the commands hidden in the names would leave
// files in its directory).
func TestPlanFullScriptHostileNames(t *testing.T) {
	l := newLab(t)
	router, isp := l.addNS("router"), l.addNS("isp")
	names := []string{"w$(id>p1)", "w;id>p2", "w`id>p3`", "w'x", "a=b"}
	var cfg strings.Builder
	cfg.WriteString("links:\n")
	for i, name := range names {
		veth(t, router, name, isp, fmt.Sprintf("c%d", i))
		addAddr(t, router, name, fmt.Sprintf("10.%d.0.2/24", i+1))
		addAddr(t, isp, fmt.Sprintf("c%d", i), fmt.Sprintf("10.%d.0.1/24", i+1))
		fmt.Fprintf(&cfg, "  - {name: l%d, interface: %q, gateway: 10.%d.0.1, nat: true}\n", i, name, i+1)
	}
	cfgPath := writeFile(t, "hostile.yaml", cfg.String())

	script, err := flowpin(t, router, "plan", "--full", "-c", cfgPath)
	if err != nil {
		t.Fatalf("plan --full: %v\n%s", err, script)
	}
	scriptPath := writeFile(t, "flowpin.sh", script)
	dir := t.TempDir()
	out, err := tryRun(router, "sh", "-c", `cd "$1" && sh -e "$2"`, "sh", dir, scriptPath)
	t.Cleanup(func() { _, _ = flowpin(t, router, "down") })
	if err != nil {
		t.Errorf("sh -e: %v\n%s\nscript:\n%s", err, out, script)
	}
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		for _, e := range left {
			t.Errorf("the script ran a command hidden in a name: it left %s", filepath.Join(dir, e.Name()))
		}
	}

	if out, err := flowpin(t, router, "verify", "-c", cfgPath); err != nil {
		t.Errorf("verify after running the script: %v\n%s\nscript:\n%s", err, out, script)
	}
	plan, err := flowpin(t, router, "plan", "-c", cfgPath)
	// The script's records of the values the sysctls had before (those
	// apply keeps in the table) may differ from apply's, so plan may
	// rewrite the table, and only that.
	t.Logf("plan after running the script: %v\n%s", err, plan)
	for _, line := range strings.Split(plan, "\n") {
		if strings.HasPrefix(line, "ip ") || strings.HasPrefix(line, "sysctl ") || strings.HasPrefix(line, "echo ") {
			t.Errorf("after running the script, plan would still run %s", line)
		}
	}
	ruleset := run(t, router, "nft", "list", "table", "inet", "flowpin")
	for i, name := range names {
		if v := getSysctl(t, router, "net/ipv4/conf/"+name+"/rp_filter"); v != "2" {
			t.Errorf("rp_filter of %q is %s, want 2", name, v)
		}
		if routes := run(t, router, "ip", "route", "show", "table", fmt.Sprint(101+i)); !strings.Contains(routes, "dev "+name+" ") {
			t.Errorf("table %d has no route by %q:\n%s", 101+i, name, routes)
		}
		if !strings.Contains(ruleset, fmt.Sprintf("%q", name)) {
			t.Errorf("no NAT for %q:\n%s", name, ruleset)
		}
	}
	if nat := run(t, router, "nft", "list", "set", "inet", "flowpin", "nat_oif"); !strings.Contains(ruleset, "oifname @nat_oif masquerade") || strings.Count(nat, `"`) != 2*len(names) {
		t.Errorf("NAT is not one masquerade by the set of the %d interfaces:\n%s", len(names), nat)
	}
}

// TestPlanFullScriptAsApply: where the table exists, the nft script of
// `plan --full`, run by `nft -f`, makes the same table as apply, also
// when a set must be made anew: a domain set's timeout changed (the
// element a resolver added is kept, with the lifetime it had left), and
// a file set became a domain set of the same name (nft refused to add a
// set again with other flags, and the whole script failed). Two routers,
// one run by the scripts and one by apply, from the same start.
func TestPlanFullScriptAsApply(t *testing.T) {
	start := time.Now()
	l := newLab(t)
	isp := l.addNS("isp")
	routers := []string{l.addNS("bysc"), l.addNS("byap")}
	for r, router := range routers {
		for i := range 2 {
			wan := fmt.Sprintf("wan%d", i)
			veth(t, router, wan, isp, fmt.Sprintf("r%dc%d", r, i))
			addAddr(t, router, wan, fmt.Sprintf("100.64.%d.2/24", i))
		}
	}
	links := "links:\n  - {name: isp0, interface: wan0, gateway: 100.64.0.1, nat: true}\n  - {name: isp1, interface: wan1, gateway: 100.64.1.1, nat: true}\n"
	cfgs := map[string]string{
		"start":   links + "sets:\n  - {name: video, domains: [video.example]}\n  - {name: office, addresses: [192.0.2.0/24]}\nrules:\n  - {name: v, dst_set: video, policy: isp1}\n",
		"timeout": links + "sets:\n  - {name: video, domains: [video.example], timeout: 2h}\n  - {name: office, addresses: [192.0.2.0/24]}\nrules:\n  - {name: v, dst_set: video, policy: isp1}\n",
		"kind":    links + "sets:\n  - {name: video, domains: [video.example], timeout: 2h}\n  - {name: office, domains: [office.example]}\nrules:\n  - {name: v, dst_set: video, policy: isp1}\n",
	}
	paths := map[string]string{}
	for name, c := range cfgs {
		paths[name] = writeFile(t, name+".yaml", c)
	}
	for _, router := range routers {
		if out, err := flowpin(t, router, "apply", "-c", paths["start"]); err != nil {
			t.Fatalf("apply: %v\n%s", err, out)
		}
		t.Cleanup(func() { _, _ = flowpin(t, router, "down") })
		// As dnsmasq adds: no timeout of its own.
		nft(t, router, "add element inet flowpin set4_video { 203.0.113.10 }\n")
	}
	// Lifetimes and counters differ by when each ran.
	norm := regexp.MustCompile(` expires [0-9hmsd]+|(203\.0\.113\.10) timeout [0-9hmsd]+|counter packets \d+ bytes \d+`)
	table := func(router string) string {
		return norm.ReplaceAllString(run(t, router, "nft", "list", "table", "inet", "flowpin"), "$1")
	}
	for _, step := range []string{"timeout", "kind"} {
		script, err := flowpin(t, routers[0], "plan", "--full", "-c", paths[step])
		if err != nil {
			t.Fatalf("%s: plan --full: %v\n%s", step, err, script)
		}
		_, body, ok := strings.Cut(script, "nft -f - <<'EOF'\n")
		body, _, ok2 := strings.Cut(body, "\nEOF")
		if !ok || !ok2 {
			t.Fatalf("%s: no nft script in plan --full:\n%s", step, script)
		}
		if out, err := tryRunStdin(routers[0], body+"\n", "nft", "-f", "-"); err != nil {
			t.Errorf("%s: nft -f of plan --full's script: %v\n%s\nscript:\n%s", step, err, out, body)
		}
		if out, err := flowpin(t, routers[1], "apply", "-c", paths[step]); err != nil {
			t.Fatalf("%s: apply: %v\n%s", step, err, out)
		}
		byScript, byApply := table(routers[0]), table(routers[1])
		if byScript != byApply {
			t.Errorf("%s: the script made another table than apply:\n--- script\n%s\n--- apply\n%s", step, byScript, byApply)
		}
		for _, router := range routers {
			set := run(t, router, "nft", "list", "set", "inet", "flowpin", "set4_video")
			// Carried with what it had left (under an hour), not a new 2h.
			if !strings.Contains(set, "timeout 2h") || !strings.Contains(set, "203.0.113.10 timeout 59m") && !strings.Contains(set, "203.0.113.10 timeout 1h expires 59m") {
				t.Errorf("%s: %s: set4_video:\n%s", step, router, set)
			}
		}
	}
	t.Logf("TestPlanFullScriptAsApply took %v", time.Since(start).Round(100*time.Millisecond))
}
