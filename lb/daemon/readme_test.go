package daemon

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// README names every metric the daemon exports, so a feature's metric
// does not go undocumented.
func TestReadmeNamesEveryMetric(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`"(flowpin_[a-z0-9_]+)"`)
	found := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range name.FindAllSubmatch(src, -1) {
			found++
			if !strings.Contains(string(readme), "`"+string(m[1])) {
				t.Errorf("README does not name metric %s (%s)", m[1], f)
			}
		}
	}
	if found < 20 {
		t.Fatalf("found %d metric names in the daemon's sources", found)
	}
}
