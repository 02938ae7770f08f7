package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// README's HA pair section shows examples/ha as they are (TestHATakeover
// runs those files), and the example config is valid: the documentation
// cannot drift from what is tested.
func TestHAExampleInREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"flowpin.yaml", "keepalived-a.conf", "conntrackd-a.conf"} {
		b, err := os.ReadFile(filepath.Join("../../examples/ha", f))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(readme), string(b)) {
			t.Errorf("README.md does not show examples/ha/%s as it is", f)
		}
	}
	c, err := Load("../../examples/ha/flowpin.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !c.HA || len(c.NATSources()) != 2 {
		t.Errorf("examples/ha/flowpin.yaml: ha %v, nat sources %v", c.HA, c.NATSources())
	}
	// fw-b's files differ from fw-a's only where README says.
	for _, f := range []struct{ a, b string }{
		{"keepalived-a.conf", "keepalived-b.conf"},
		{"conntrackd-a.conf", "conntrackd-b.conf"},
	} {
		a, _ := os.ReadFile(filepath.Join("../../examples/ha", f.a))
		b, _ := os.ReadFile(filepath.Join("../../examples/ha", f.b))
		swapped := strings.NewReplacer("fw-a", "fw-b", "priority 150", "priority 100", "state MASTER", "state BACKUP",
			"\n        IPv4_address 10.255.0.1\n", "\n        IPv4_address 10.255.0.2\n",
			"Destination_Address 10.255.0.2", "Destination_Address 10.255.0.1").Replace(string(a))
		if swapped != string(b) {
			t.Errorf("examples/ha/%s differs from %s in more than README says", f.b, f.a)
		}
	}
}
