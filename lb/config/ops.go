package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Hooks are commands the daemon runs on events.
type Hooks struct {
	// OnChange runs on every link state change (empty: none).
	OnChange string
	// Timeout: a hook (or an on-demand command) that runs longer is
	// killed, with its whole process group.
	Timeout time.Duration
}

// OnDemand is a link that is brought up only when its tier becomes a
// policy's active tier, and taken down again once a higher tier has been
// back for Keep.
type OnDemand struct {
	Up, Down string // shell commands (/bin/sh -c)
	Keep     time.Duration
}

// Defaults of hooks and on-demand links.
const (
	DefaultHookTimeout = 10 * time.Second
	MaxHookTimeout     = time.Hour
	DefaultKeep        = 5 * time.Minute
)

type rawHooks struct {
	OnChange string         `yaml:"on_change"`
	Timeout  *time.Duration `yaml:"timeout"`
}

type rawOnDemand struct {
	Up   string         `yaml:"up"`
	Down string         `yaml:"down"`
	Keep *time.Duration `yaml:"keep"`
}

// fillOps takes hooks and the links' on_demand, which need the policies.
func (c *Config) fillOps(raw *rawConfig) error {
	c.Hooks.Timeout = DefaultHookTimeout
	if h := raw.Hooks; h != nil {
		if h.Timeout != nil {
			if t := *h.Timeout; t <= 0 || t > MaxHookTimeout {
				return c.FieldError("hooks.timeout", "%v is out of range (more than 0, at most %v)", t, MaxHookTimeout)
			}
			c.Hooks.Timeout = *h.Timeout
		}
		if p := h.OnChange; p != "" {
			if !filepath.IsAbs(p) {
				return c.FieldError("hooks.on_change", "%s is not an absolute path", quote(p))
			}
			fi, err := os.Stat(p)
			switch {
			case err != nil:
				return c.FieldError("hooks.on_change", "%s: %v", quote(p), unwrapPathError(err))
			case fi.IsDir() || fi.Mode()&0o111 == 0:
				return c.FieldError("hooks.on_change", "%s is not an executable file", quote(p))
			}
			c.Hooks.OnChange = p
		}
	}
	for i := range raw.Links {
		od := raw.Links[i].OnDemand
		if od == nil {
			continue
		}
		l := &c.Links[i]
		o := &OnDemand{Up: strings.TrimSpace(od.Up), Down: strings.TrimSpace(od.Down), Keep: DefaultKeep}
		if o.Up == "" {
			return c.LinkError(i, "on_demand.up", "missing: the command that brings link %s up", quote(l.Name))
		}
		if o.Down == "" {
			return c.LinkError(i, "on_demand.down", "missing: the command that takes link %s down", quote(l.Name))
		}
		if od.Keep != nil {
			if k := *od.Keep; k <= 0 {
				return c.LinkError(i, "on_demand.keep", "%v: must be more than 0", k)
			}
			o.Keep = *od.Keep
		}
		if !c.Backup(i) {
			return c.LinkError(i, "on_demand", "link %s is in the first tier of every policy it is in: an on-demand link must be a backup (tier 2 or higher in some policy)", quote(l.Name))
		}
		l.OnDemand = o
	}
	return nil
}

// Backup says whether link i is in a tier below the first of some policy.
func (c *Config) Backup(i int) bool {
	for _, p := range c.Policies {
		for k, tier := range p.Tiers {
			if k > 0 && slices.Contains(tier, i) {
				return true
			}
		}
	}
	return false
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
