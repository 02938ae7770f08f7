// Package lb_test checks the shape of the house: which package may depend
// on which. lb itself holds no code; its subpackages are flowpin's core.
package lb_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
	Deps         []string
	Standard     bool
}

func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "flowpin/...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[p.ImportPath] = p
	}
	return pkgs
}

func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".") && first != "flowpin"
}

func TestLayout(t *testing.T) {
	pkgs := listPackages(t)
	for _, want := range []string{"flowpin/lb/config", "flowpin/lb/plan", "flowpin/lb/apply", "flowpin/lb/health",
		"flowpin/lb/status", "flowpin/lb/ctl", "flowpin/lb/diagnose", "flowpin/lb/daemon", "flowpin/rules", "flowpin/nft", "flowpin/nft/ct"} {
		if _, ok := pkgs[want]; !ok {
			t.Errorf("package %s is missing", want)
		}
	}
	for path, p := range pkgs {
		adapter := path == "flowpin/rules" || path == "flowpin/nft" || strings.HasPrefix(path, "flowpin/rules/") || strings.HasPrefix(path, "flowpin/nft/")
		for _, d := range p.Deps {
			switch {
			case adapter && strings.HasPrefix(d, "flowpin/lb"):
				t.Errorf("adapter %s depends on %s: adapters import nothing from lb", path, d)
			case strings.Contains(d, "prometheus") && !strings.HasPrefix(path, "flowpin/lb/daemon") && !strings.HasPrefix(path, "flowpin/cmd/"):
				t.Errorf("%s depends on %s: metrics live in lb/daemon only", path, d)
			}
		}
	}
	// The config model links nothing but the standard library, yaml,
	// go-humanize (quota sizes like 20GB) and x/net's publicsuffix (a
	// set's domain must not be a public suffix); both need only the
	// standard library themselves.
	for _, d := range pkgs["flowpin/lb/config"].Deps {
		if !isStd(d) && !strings.HasPrefix(d, "go.yaml.in/yaml/") && d != "github.com/dustin/go-humanize" && d != "golang.org/x/net/publicsuffix" {
			t.Errorf("lb/config depends on %s: it may use only the standard library and yaml", d)
		}
	}
	// Dependencies point down: no package of lb imports one above it.
	// ctl, the socket's client, sits under the daemon that serves it.
	order := []string{"config", "plan", "apply", "health", "status", "ctl", "diagnose", "daemon"}
	rank := map[string]int{}
	for i, n := range order {
		rank["flowpin/lb/"+n] = i
	}
	for path, p := range pkgs {
		r, ok := rank[path]
		if !ok {
			continue
		}
		for _, imp := range p.Imports {
			if ri, ok := rank[imp]; ok && ri > r {
				t.Errorf("%s imports %s, which sits above it", path, imp)
			}
		}
	}
}

// kernelLibraries are the libraries that speak to the kernel: netlink,
// nftables, conntrack and network namespaces. rules and nft (nft/ct for
// conntrack) wrap them; lb reaches the kernel only through those.
var kernelLibraries = []string{
	"github.com/vishvananda/netlink",
	"github.com/vishvananda/netns",
	"github.com/google/nftables",
	"github.com/ti-mo/conntrack",
	"github.com/ti-mo/netfilter",
	"github.com/mdlayher/netlink",
}

// kernelLibraryTests may import kernel libraries in their tests: the
// real-kernel test of the flow walk counts the table with ti-mo/conntrack's
// own Dump, an implementation independent of the one it checks.
var kernelLibraryTests = []string{"flowpin/lb/status"}

func isKernelLibrary(path string) bool {
	for _, l := range kernelLibraries {
		if path == l || strings.HasPrefix(path, l+"/") {
			return true
		}
	}
	return false
}

// TestKernelThroughAdapters: no package of lb imports a kernel library;
// it declares an interface and rules, nft or nft/ct satisfy it.
func TestKernelThroughAdapters(t *testing.T) {
	for path, p := range listPackages(t) {
		if path != "flowpin/lb" && !strings.HasPrefix(path, "flowpin/lb/") {
			continue
		}
		for _, imp := range p.Imports {
			if isKernelLibrary(imp) {
				t.Errorf("%s imports %s: lb reaches the kernel through rules and nft", path, imp)
			}
		}
		if slices.Contains(kernelLibraryTests, path) {
			continue
		}
		for _, imp := range append(slices.Clone(p.TestImports), p.XTestImports...) {
			if isKernelLibrary(imp) {
				t.Errorf("%s's tests import %s: lb reaches the kernel through rules and nft", path, imp)
			}
		}
	}
}

// TestPackagesOnLayout: the project's Go lives in cmd (wiring), lb (the
// core), nft and rules (the kernel adapters) and integration (the real-
// kernel tests), so a reader knows where a thing belongs.
func TestPackagesOnLayout(t *testing.T) {
	roots := []string{"cmd", "lb", "nft", "rules", "integration"}
	for path := range listPackages(t) {
		rel, _ := strings.CutPrefix(path, "flowpin/")
		top, _, _ := strings.Cut(rel, "/")
		if path == "flowpin" || !slices.Contains(roots, top) {
			t.Errorf("package %s lives outside %s", path, strings.Join(roots, ", "))
		}
	}
}
