package config

import (
	"path/filepath"
	"testing"
)

// Some shipped example uses each key of issues 20-24, so a user finds each
// in a config that loads: quotas, DNS servers given and from a lease, the
// exec and arp probes, domain and file sets with a rule by set, and ISP
// prefixes given and delegated.
func TestExamplesShowTheOperatorKeys(t *testing.T) {
	paths, err := filepath.Glob("../../examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, p := range paths {
		c, err := Load(p)
		if err != nil {
			t.Fatalf("%v", err)
		}
		see := func(key string, ok bool) {
			if ok && seen[key] == "" {
				seen[key] = filepath.Base(p)
			}
		}
		for _, l := range c.Links {
			see("quota", l.Quota != nil)
			see("quota_last_resort", l.Quota != nil && l.Quota.LastResort)
			see("dns", len(l.DNS) > 0)
			see("dns: auto", l.DNSAuto)
			see("check.method: exec", l.Check.Method == ProbeExec && l.Check.Command != "")
			see("check.method: arp", l.Check.Method == ProbeARP)
			see("prefixes6", len(l.Prefixes6) > 0)
			see("prefixes6: auto", l.Prefixes6Auto)
		}
		for _, s := range c.Sets {
			see("sets[].domains", len(s.Domains) > 0)
			see("sets[].files", len(s.Files) > 0)
		}
		for _, r := range c.Rules {
			see("rules[].dst_set", r.DstSet != "")
		}
	}
	for _, key := range []string{"quota", "quota_last_resort", "dns", "dns: auto", "check.method: exec", "check.method: arp",
		"prefixes6", "prefixes6: auto", "sets[].domains", "sets[].files", "rules[].dst_set"} {
		if seen[key] == "" {
			t.Errorf("no example config uses %s", key)
		} else {
			t.Logf("%s: %s", key, seen[key])
		}
	}
}
