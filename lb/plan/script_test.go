package plan

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"flowpin/rules"
)

// hostileConfig has interfaces whose names the kernel takes (anything but
// '/', ':' and white space) and a shell would not read as one word.
const hostileConfig = `links:
  - {name: a, interface: "w$(id>p1)", gateway: 10.1.0.1, nat: true}
  - {name: b, interface: "w;id>p2", gateway: 10.2.0.1, nat: true}
  - {name: c, interface: "w` + "`id>p3`" + `", gateway: 10.3.0.1, nat: true}
  - {name: d, interface: "w'x", gateway: 10.4.0.1, gateway6: '2001:db8:4::1', nat: true}
  - {name: e, interface: "a=b", gateway: 10.5.0.1}
`

func hostileIfaces() map[string]rules.Iface {
	return ifaces(iface("w$(id>p1)", true, "10.1.0.2/24"), iface("w;id>p2", true, "10.2.0.2/24"), iface("w`id>p3`", true, "10.3.0.2/24"),
		iface("w'x", true, "10.4.0.2/24", "2001:db8:4::2/64"), iface("a=b", true, "10.5.0.2/24"))
}

// recorder defines the commands a plan script runs as shell functions
// that write their arguments (NUL-terminated, one call a line) to fd 3,
// and nft's standard input to $NFT_IN.
// The two sides of `echo V | tee F` run at once; tee's recorder reads
// its input to the end first, so echo is always recorded before it and
// the two records never interleave.
const recorder = `rec() { for a in "$@"; do printf '%s\0' "$a"; done; printf '\n'; } >&3
ip() { rec ip "$@"; }
sysctl() { rec sysctl "$@"; }
echo() { rec echo "$@"; }
tee() { cat >/dev/null; rec tee "$@"; }
nft() { rec nft "$@"; cat >"$NFT_IN"; }
`

// runScript runs lines with sh in an empty directory, the commands
// replaced by recorders: it returns each call's arguments, what nft read,
// and the files the script left in its directory.
func runScript(t *testing.T, lines []string) (calls [][]string, nftIn string, left []string) {
	t.Helper()
	cwd, tmp := t.TempDir(), t.TempDir()
	script := filepath.Join(tmp, "script.sh")
	if err := os.WriteFile(script, []byte(recorder+strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	callsFile, err := os.Create(filepath.Join(tmp, "calls"))
	if err != nil {
		t.Fatal(err)
	}
	defer callsFile.Close()
	cmd := exec.Command("sh", "-e", script)
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), "NFT_IN="+filepath.Join(tmp, "nft.in"))
	cmd.ExtraFiles = []*os.File{callsFile}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sh: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(callsFile.Name())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(bytes.TrimSuffix(raw, []byte("\n")), []byte("\n")) {
		var call []string
		for _, a := range bytes.Split(bytes.TrimSuffix(line, []byte{0}), []byte{0}) {
			call = append(call, string(a))
		}
		calls = append(calls, call)
	}
	in, err := os.ReadFile(filepath.Join(tmp, "nft.in"))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(cwd)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		left = append(left, e.Name())
	}
	return calls, string(in), left
}

// plan --full prints a script for an operator to run: with interface
// names full of shell syntax, sh runs exactly the commands planned, each
// name one word, and nothing else.
func TestFullScriptQuotesNames(t *testing.T) {
	d, err := Plan(mustParse(t, hostileConfig), hostileIfaces())
	if err != nil {
		t.Fatal(err)
	}
	lines := FullScript(d)
	golden(t, "hostile-names.golden", strings.Join(lines, "\n")+"\n")
	calls, nftIn, left := runScript(t, lines)
	if len(left) > 0 {
		t.Errorf("the script ran something it should not have: it left %v", left)
	}

	// Sysctls and nft in the script's order (early sysctls, routing,
	// nft, late sysctls); routing is checked below.
	sysctlCalls := func(list []rules.Sysctl) [][]string {
		var out [][]string
		for _, s := range list {
			if strings.Contains(s.Key, "=") {
				out = append(out, []string{"echo", s.Value}, []string{"tee", "/proc/sys/" + s.Key})
				continue
			}
			out = append(out, []string{"sysctl", "-w", s.Name() + "=" + s.Value})
		}
		return out
	}
	want := sysctlCalls(d.Sysctls)
	want = append(want, []string{"nft", "-f", "-"})
	want = append(want, sysctlCalls(d.LateSysctls)...)
	wantRoutes := len(rules.Diff(rules.State{}, d.Routing))
	var got, routing [][]string
	for _, c := range calls {
		if c[0] == "ip" {
			routing = append(routing, c)
			continue
		}
		got = append(got, c)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sysctl and nft calls (-want +got):\n%s", diff)
	}
	if len(routing) != wantRoutes {
		t.Errorf("%d ip calls, want %d", len(routing), wantRoutes)
	}
	// Every route's device reaches ip as one word, after "dev".
	devs := map[string]int{}
	for _, c := range routing {
		for i, a := range c {
			if a == "dev" && i+1 < len(c) {
				devs[c[i+1]]++
			}
		}
	}
	for name := range hostileIfaces() {
		if devs[name] == 0 {
			t.Errorf("no ip call has dev %q; devs: %v", name, devs)
		}
	}
	if len(devs) != len(hostileIfaces()) {
		t.Errorf("ip calls name devices %v, want only the links' interfaces", devs)
	}
	balance := []string{"ip", "route", "replace", "default", "table", "100", "proto", "201",
		"nexthop", "via", "10.1.0.1", "dev", "w$(id>p1)", "weight", "1",
		"nexthop", "via", "10.2.0.1", "dev", "w;id>p2", "weight", "1",
		"nexthop", "via", "10.3.0.1", "dev", "w`id>p3`", "weight", "1",
		"nexthop", "via", "10.4.0.1", "dev", "w'x", "weight", "1",
		"nexthop", "via", "10.5.0.1", "dev", "a=b", "weight", "1"}
	if !slices.ContainsFunc(routing, func(c []string) bool { return slices.Equal(c, balance) }) {
		t.Errorf("no ip call is the multipath route %q; calls:\n%q", balance, routing)
	}
	if nftIn != d.NFT.Render() {
		t.Errorf("nft read:\n%s\nwant:\n%s", nftIn, d.NFT.Render())
	}
}
