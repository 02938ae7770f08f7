package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// README's "Commands" block names every command a user can run, each with
// every flag of its own, so the synopsis does not fall behind the code.
func TestReadmeCommands(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)\n## Commands\n(.*?)\n`-c` defaults").FindSubmatch(b)
	if m == nil {
		t.Fatal("README.md has no Commands block")
	}
	// Each entry runs from its "    flowpin NAME" line to the next one.
	entries := map[string]string{}
	name := ""
	for _, line := range strings.Split(string(m[1]), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "flowpin" && strings.HasPrefix(line, "    flowpin ") {
			name = f[1]
		}
		if name != "" {
			entries[name] += line + "\n"
		}
	}
	root := newRoot(&bytes.Buffer{}, &bytes.Buffer{})
	for _, c := range root.Commands() {
		if !c.IsAvailableCommand() || c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		e, ok := entries[c.Name()]
		if !ok {
			t.Errorf("README's Commands lack flowpin %s", c.Name())
			continue
		}
		c.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			switch f.Name {
			case "help", "config", "verbose":
				return // -c and -v: said once below the block
			}
			if !f.Hidden && !strings.Contains(e, "--"+f.Name) {
				t.Errorf("README's flowpin %s lacks --%s", c.Name(), f.Name)
			}
		})
	}
}
