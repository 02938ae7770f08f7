package config_test

import (
	"testing"

	"flowpin/lb/config"
	"flowpin/lb/daemon/hooks"
)

// The config refuses policies whose hook variables collide by the same
// mapping the daemon uses to name them; the two must not drift apart.
func TestPolicyEnvNameIsTheDaemons(t *testing.T) {
	for in, want := range map[string]string{
		"default":     "FLOWPIN_POLICY_DEFAULT_TIER",
		"Default":     "FLOWPIN_POLICY_DEFAULT_TIER",
		"cable-first": "FLOWPIN_POLICY_CABLE_FIRST_TIER",
		"cable_first": "FLOWPIN_POLICY_CABLE_FIRST_TIER",
		"voip.2":      "FLOWPIN_POLICY_VOIP_2_TIER",
		"ärger":       "FLOWPIN_POLICY__RGER_TIER",
	} {
		if got := config.PolicyEnvName(in); got != want {
			t.Errorf("config.PolicyEnvName(%q) = %q, want %q", in, got, want)
		}
		if got := hooks.PolicyEnvName(in); got != want {
			t.Errorf("hooks.PolicyEnvName(%q) = %q, want %q", in, got, want)
		}
	}
}
