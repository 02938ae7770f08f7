package config_test

import (
	"testing"

	"flowpin/lb/config"
)

// Hooks read a policy's tier from this variable, and the config refuses
// policies whose variables collide by it.
func TestPolicyEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"default":     "FLOWPIN_POLICY_DEFAULT_TIER",
		"Default":     "FLOWPIN_POLICY_DEFAULT_TIER",
		"cable-first": "FLOWPIN_POLICY_CABLE_FIRST_TIER",
		"cable_first": "FLOWPIN_POLICY_CABLE_FIRST_TIER",
		"voip.2":      "FLOWPIN_POLICY_VOIP_2_TIER",
		"ärger":       "FLOWPIN_POLICY__RGER_TIER",
	} {
		if got := config.PolicyEnvName(in); got != want {
			t.Errorf("PolicyEnvName(%q) = %q, want %q", in, got, want)
		}
	}
}
