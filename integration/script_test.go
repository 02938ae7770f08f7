package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	// The script leaves out the records apply keeps in the table (the
	// values the sysctls had before), so plan would rewrite the table,
	// and only that.
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
