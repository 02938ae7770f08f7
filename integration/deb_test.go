package integration

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// The files every package holds, besides the man pages (one per
// subcommand, checked against the binary's own command list).
var wantFiles = []string{
	"/usr/sbin/flowpin",
	"/usr/lib/systemd/system/flowpin.service",
	"/usr/share/bash-completion/completions/flowpin",
	"/usr/share/zsh/vendor-completions/_flowpin",
	"/usr/share/fish/vendor_completions.d/flowpin.fish",
	"/usr/share/doc/flowpin/copyright",
	"/usr/share/doc/flowpin/changelog.gz",
	"/usr/share/doc/flowpin/examples/dual-wan-nat.yaml",
	"/usr/share/doc/flowpin/examples/multihomed-server.yaml",
	"/usr/share/doc/flowpin/examples/two-gateways.yaml",
	"/usr/share/doc/flowpin/examples/dns-and-probes.yaml",
	"/usr/share/doc/flowpin/examples/sets.yaml",
	"/usr/share/doc/flowpin/examples/sets-office.txt", // sets.yaml reads it
	"/usr/share/doc/flowpin/examples/isp-prefixes6.yaml",
	"/usr/share/doc/flowpin/examples/grafana-dashboard.json",
	"/usr/share/lintian/overrides/flowpin",
	"/usr/share/man/man8/flowpin.8.gz",
}

var wantCommands = []string{"apply", "plan", "down", "run", "status", "verify", "explain", "version"}

func command(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDeb builds both packages with `make deb` (from packaging/: the nfpm
// config, maintainer scripts and copyright file) and checks each: control
// fields, the file list, the binary (architecture, static, --version),
// man pages, the unit (systemd-analyze verify), maintainer scripts, and
// lintian.
func TestDeb(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two packages with make deb")
	}
	if os.Geteuid() != 0 {
		t.Skip("make deb installs its tools with apt-get (root)")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dist := t.TempDir()
	t.Log(command(t, root, "make", "deb", "DIST="+dist))
	describe := strings.TrimSpace(command(t, root, "git", "describe", "--tags", "--always", "--dirty"))
	head := strings.TrimSpace(command(t, root, "git", "rev-parse", "HEAD"))
	debVersion := strings.TrimSpace(command(t, root, "sh", "scripts/deb-version.sh", describe))
	example, err := os.ReadFile(filepath.Join(root, "examples/flowpin.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			deb := filepath.Join(dist, "flowpin_"+debVersion+"_"+arch+".deb")
			if _, err := os.Stat(deb); err != nil {
				t.Fatalf("make deb did not write %s: %v", filepath.Base(deb), err)
			}
			checkControl(t, deb, arch, debVersion)
			x := t.TempDir()
			command(t, "", "dpkg-deb", "-x", deb, x)
			checkFiles(t, deb, x)
			checkBinary(t, filepath.Join(x, "usr/sbin/flowpin"), arch, describe, head)
			checkUnit(t, x, example)
			checkScripts(t, deb)
			checkLintian(t, deb)
		})
	}
}

func checkControl(t *testing.T, deb, arch, version string) {
	t.Helper()
	field := func(f string) string {
		out, _ := exec.Command("dpkg-deb", "-f", deb, f).Output()
		return strings.TrimSpace(string(out))
	}
	for f, want := range map[string]string{"Package": "flowpin", "Version": version, "Architecture": arch, "Section": "net"} {
		if got := field(f); got != want {
			t.Errorf("%s: %q, want %q", f, got, want)
		}
	}
	// A static Go program that talks netlink itself: no nft, no
	// conntrack, no libc.
	for _, f := range []string{"Depends", "Pre-Depends", "Recommends"} {
		if got := field(f); got != "" {
			t.Errorf("%s: %q, want none", f, got)
		}
	}
	if d := field("Description"); !strings.Contains(d, "needs no nft, ip or") || !strings.Contains(d, "not enabled on install") {
		t.Errorf("Description does not say it needs no nft/conntrack binary and is not enabled on install:\n%s", d)
	}
}

func checkFiles(t *testing.T, deb, x string) {
	t.Helper()
	var got []string
	for _, l := range strings.Split(command(t, "", "dpkg-deb", "-c", deb), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || strings.HasPrefix(f[0], "d") {
			continue
		}
		p := strings.TrimPrefix(f[5], ".")
		got = append(got, p)
		mode := f[0]
		if want := "-rw-r--r--"; p != "/usr/sbin/flowpin" && mode != want {
			t.Errorf("%s: mode %s, want %s", p, mode, want)
		}
		if f[1] != "root/root" {
			t.Errorf("%s: owner %s, want root/root", p, f[1])
		}
	}
	want := slices.Clone(wantFiles)
	for _, c := range wantCommands {
		want = append(want, "/usr/share/man/man8/flowpin-"+c+".8.gz")
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("package lacks %s", w)
		}
	}
	for _, p := range got {
		if strings.HasPrefix(p, "/etc/") {
			t.Errorf("package ships %s: the config is the operator's", p)
		}
		if strings.HasPrefix(p, "/usr/share/man/") {
			checkManPage(t, filepath.Join(x, p))
		}
	}
	for _, c := range []string{"usr/share/bash-completion/completions/flowpin", "usr/share/zsh/vendor-completions/_flowpin", "usr/share/fish/vendor_completions.d/flowpin.fish"} {
		b, err := os.ReadFile(filepath.Join(x, c))
		if err != nil || !bytes.Contains(b, []byte("flowpin")) || !bytes.Contains(b, []byte("__complete")) {
			t.Errorf("%s is not a cobra completion script for flowpin (%v)", c, err)
		}
	}
	cp, err := os.ReadFile(filepath.Join(x, "usr/share/doc/flowpin/copyright"))
	if err != nil || !bytes.Contains(cp, []byte("License: Apache-2.0")) || !bytes.Contains(cp, []byte("/usr/share/common-licenses/Apache-2.0")) {
		t.Errorf("copyright does not name the licence (%v):\n%s", err, cp)
	}
}

func checkManPage(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	name := strings.TrimSuffix(filepath.Base(path), ".8.gz")
	if !bytes.Contains(b, []byte(`.TH "FLOWPIN" "8"`)) || !bytes.Contains(b, []byte(".SH NAME\n"+name+" - ")) {
		t.Errorf("%s: not a section 8 page named %s:\n%.200s", path, name, b)
	}
	if _, err := exec.LookPath("man"); err == nil {
		// What lintian's manpage check runs: groff warnings, if any.
		cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", path)
		cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANROFFSEQ=", "MANWIDTH=80")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man %s: %v %s", path, err, stderr.Bytes())
		}
	}
}

// checkBinary: the right architecture, statically linked (no
// interpreter, no needed libraries), and, where it can run here,
// --version names the commit it was built from.
func checkBinary(t *testing.T, bin, arch, describe, head string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if f.Machine != machine {
		t.Errorf("binary is %v, want %v", f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("binary has an interpreter: not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary needs %v", libs)
	}
	if arch != runtime.GOARCH {
		return
	}
	out := command(t, "", bin, "--version")
	if want := "flowpin " + describe + " (commit " + head[:12]; !strings.HasPrefix(out, want) {
		t.Errorf("--version = %q, want it to start with %q", out, want)
	}
	if !strings.Contains(out, runtime.Version()) {
		t.Errorf("--version = %q lacks the Go version", out)
	}
}

// checkUnit: the packaged unit runs the packaged binary, waits for a
// config, keeps the example's hardening and ExecReload, and passes
// systemd-analyze verify.
func checkUnit(t *testing.T, x string, example []byte) {
	t.Helper()
	unitPath := "/usr/lib/systemd/system/flowpin.service"
	unit, err := os.ReadFile(filepath.Join(x, unitPath))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nConditionPathExists=/etc/flowpin/flowpin.yaml\n", "\nExecStart=/usr/sbin/flowpin run -c /etc/flowpin/flowpin.yaml", "\nType=notify\n"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("unit lacks %q", strings.TrimSpace(want))
		}
	}
	if bytes.Contains(unit, []byte("/usr/local/")) {
		t.Errorf("unit still names /usr/local")
	}
	// Every directive of the example, paths aside, is in the package's.
	for _, l := range strings.Split(string(example), "\n") {
		l = strings.ReplaceAll(l, "/usr/local/sbin/", "/usr/sbin/")
		if strings.Contains(l, "=") && !strings.HasPrefix(l, "#") && !bytes.Contains(unit, []byte(l+"\n")) {
			t.Errorf("unit lacks the example's %q", l)
		}
	}
	// systemd-analyze verify, on the extracted tree as --root: the unit is
	// read where the package puts it and ExecStart must name an
	// executable there. The host's own units (targets the unit orders
	// itself against) are copied beside it, since --root hides the
	// host's. --man=no: the container has no man pages of its own to
	// resolve Documentation= against; --generators=false: no generators
	// run in a container.
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze missing: make deb-deps installs systemd")
	}
	command(t, "", "cp", "-rn", "/usr/lib/systemd/system/.", filepath.Join(x, "usr/lib/systemd/system")+"/")
	cmd := exec.Command("systemd-analyze", "verify", "--man=no", "--generators=false", "--root="+x, unitPath)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitPath, err, out)
	}
}

// checkScripts: nothing enables or starts the service on install.
func checkScripts(t *testing.T, deb string) {
	t.Helper()
	ctl := t.TempDir()
	command(t, "", "dpkg-deb", "-e", deb, ctl)
	for _, s := range []string{"preinst", "postinst", "prerm", "postrm"} {
		b, err := os.ReadFile(filepath.Join(ctl, s))
		if os.IsNotExist(err) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "#") {
				continue
			}
			for _, bad := range []string{"enable", "systemctl start", "invoke start", "invoke restart", "systemctl restart"} {
				if strings.Contains(l, bad) {
					t.Errorf("%s: %q: the service must not start without a config", s, strings.TrimSpace(l))
				}
			}
		}
		command(t, "", "sh", "-n", filepath.Join(ctl, s))
	}
}

// checkLintian: no errors; warnings and infos are logged.
func checkLintian(t *testing.T, deb string) {
	t.Helper()
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Fatal("lintian missing: make deb-deps installs it")
	}
	out, err := exec.Command("lintian", "--allow-root", "--display-info", deb).CombinedOutput()
	t.Logf("lintian %s:\n%s", filepath.Base(deb), out)
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "E: ") {
			t.Errorf("lintian error: %s", l)
		}
	}
	// lintian exits 1 on errors (and on its own failure).
	if err != nil && !strings.Contains(string(out), "E: ") {
		t.Errorf("lintian: %v", err)
	}
}
