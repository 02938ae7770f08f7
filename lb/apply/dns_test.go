package apply

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// apply plans dns: auto's servers from the lease as the daemon does, and
// says when there is none to read; down removes the servers' routes.
func TestApplyDNSAuto(t *testing.T) {
	b := newBox()
	lease := filepath.Join(t.TempDir(), "isp2.lease")
	if err := os.WriteFile(lease, []byte("nameserver 198.51.100.53\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	y := cfg(linkYAML("isp1", "wan1", "192.0.2.1", 1, ", dns: [192.0.2.53]"),
		linkYAML("isp2", "wan2", "198.51.100.1", 1, ", dns: auto, dns_from: "+lease),
		linkYAML("isp3", "wan3", "203.0.113.1", 1, ", dns: auto, dns_from: "+lease+".gone"))
	k := b.kernel()
	d, err := k.Prepare(b.resolve(t, y))
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(d.Warnings, "\n"); !strings.Contains(w, "link isp3: dns: auto: no lease file found yet (looked at "+lease+".gone; give dns_from)") {
		t.Errorf("warnings:\n%s", w)
	}
	if _, err := k.Apply(d); err != nil {
		t.Fatal(err)
	}
	dump := b.dump()
	for _, want := range []string{"192.0.2.53/32 via 192.0.2.1 dev wan1", "198.51.100.53/32 via 198.51.100.1 dev wan2"} {
		if !strings.Contains(dump, want) {
			t.Errorf("no route %q:\n%s", want, dump)
		}
	}
	b.down(t)
	if dump := b.dump(); strings.Contains(dump, ".53/32") {
		t.Errorf("a server's route outlived down:\n%s", dump)
	}
}
