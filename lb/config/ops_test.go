package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const backupLinks = `links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
  - name: lte
    interface: wwan0
    gateway: 198.51.100.1
    tier: 2
`

func TestParseHooksAndOnDemand(t *testing.T) {
	hook := filepath.Join(t.TempDir(), "hook.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := Parse("f.yaml", []byte(backupLinks+`    on_demand:
      up: "ifup wwan0"
      down: ifdown wwan0
      keep: 2s
hooks:
  on_change: `+hook+`
  timeout: 3s
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hooks != (Hooks{OnChange: hook, Timeout: 3 * time.Second}) {
		t.Errorf("hooks = %+v", c.Hooks)
	}
	if c.Links[0].OnDemand != nil {
		t.Errorf("isp1 on demand: %+v", c.Links[0].OnDemand)
	}
	if od := c.Links[1].OnDemand; od == nil || *od != (OnDemand{Up: "ifup wwan0", Down: "ifdown wwan0", Keep: 2 * time.Second}) {
		t.Errorf("lte on demand: %+v", od)
	}
}

func TestParseOnDemandDefaultKeep(t *testing.T) {
	c, err := Parse("f.yaml", []byte(backupLinks+"    on_demand: {up: a, down: b}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Links[1].OnDemand.Keep != DefaultKeep {
		t.Errorf("keep = %v", c.Links[1].OnDemand.Keep)
	}
}

func TestParseHooksErrors(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "plain")
	if err := os.WriteFile(notExec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ tail, want string }{
		{"hooks:\n  on_change: hook.sh\n", `f.yaml:10: hooks.on_change: "hook.sh" is not an absolute path`},
		{"hooks:\n  on_change: " + dir + "/nope\n", `f.yaml:10: hooks.on_change: "` + dir + `/nope": no such file or directory`},
		{"hooks:\n  on_change: " + notExec + "\n", `f.yaml:10: hooks.on_change: "` + notExec + `" is not an executable file`},
		{"hooks:\n  on_change: " + dir + "\n", `is not an executable file`},
		{"hooks:\n  timeout: 0s\n", `f.yaml:10: hooks.timeout: 0s is out of range`},
		{"hooks:\n  timeout: 2h\n", `hooks.timeout: 2h0m0s is out of range`},
		{"hooks:\n  on_chnage: /x\n", `unknown key "on_chnage" (did you mean "on_change"?)`},
		{"    on_demand: {down: b}\n", `f.yaml:9: links[1].on_demand.up: missing`},
		{"    on_demand: {up: a}\n", `links[1].on_demand.down: missing`},
		{"    on_demand: {up: a, down: b, keep: -1s}\n", `f.yaml:9: links[1].on_demand.keep: -1s: must be more than 0`},
		{"    on_demand: {up: a, down: b, keep: soon}\n", `links[1].on_demand.keep: "soon" is not`},
	} {
		_, err := Parse("f.yaml", []byte(backupLinks+tc.tail))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.tail, err, tc.want)
		}
	}
}

func TestParseOnDemandNotBackup(t *testing.T) {
	_, err := Parse("f.yaml", []byte(`links:
  - name: isp1
    interface: wan1
    gateway: 192.0.2.1
    on_demand: {up: a, down: b}
`))
	want := `f.yaml:5: links[0].on_demand: link "isp1" is in the first tier of every policy`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want %q", err, want)
	}
}
