package nfttest

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"flowpin/nft"
)

// UseLine is the transcript's line for a use's table: its name and what
// its rules match and set (the cgroup's id has no nft syntax).
func UseLine(u nft.Use) string {
	var refused []string
	if u.Unreachable4 {
		refused = append(refused, "ipv4")
	}
	if u.Unreachable6 {
		refused = append(refused, "ipv6")
	}
	return fmt.Sprintf("nft add table inet %s # socket cgroupv2 level %d id %d: refuse [%s], mark %#x/%#x",
		u.Table, u.Level, u.CgroupID, strings.Join(refused, " "), u.Mark, u.Mask)
}

// AddUse adds a use's table, replacing one of the same name.
func (f *Fake) AddUse(u nft.Use) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.commit(UseLine(u)); err != nil {
		return err
	}
	if f.uses == nil {
		f.uses = map[string]nft.Use{}
	}
	f.uses[u.Table] = u
	return nil
}

// RemoveUse deletes a use's table; a missing one is not an error.
func (f *Fake) RemoveUse(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.commit("nft delete table inet " + name); err != nil {
		return err
	}
	delete(f.uses, name)
	return nil
}

// UseTables lists the uses' tables, sorted by name.
func (f *Fake) UseTables() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ReadErr != nil {
		return nil, f.ReadErr
	}
	return slices.Sorted(maps.Keys(f.uses)), nil
}

// Uses returns the uses' tables.
func (f *Fake) Uses() map[string]nft.Use {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.uses)
}
