package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// renderRemoved writes what queue deletes from the table cur before it
// adds l: the sets l does not have, those whose type, flags or timeout
// changed (the kernel refuses to add a set again with other flags, and
// keeps an existing set's timeout on older kernels), and the chains l
// does not have or whose hook changed. It returns the sets made anew:
// they are created, with their carried elements, by the table's block.
func (l layout) renderRemoved(b *strings.Builder, cur *Current) map[string]bool {
	remade := map[string]bool{}
	if cur == nil || !cur.Exists {
		return remade
	}
	wanted := map[string]setDef{}
	for _, d := range l.sets {
		wanted[d.set.Name] = d
	}
	for _, name := range slices.Sorted(slices.Values(cur.Sets)) {
		d, ok := wanted[name]
		switch {
		case !ok:
		case cur.kinds != nil && cur.kinds[name] != setKind(d.set):
			remade[name] = true
		default:
			continue
		}
		// `delete set` deletes a map too: the kernel has one kind.
		fmt.Fprintf(b, "delete set inet %s %s\n", TableName, name)
	}
	hooks := map[string]string{}
	for _, cd := range l.chains {
		hooks[cd.name] = hookKey(cd.typ, cd.hook, cd.prio)
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for name := range cur.hooks {
			if !yield(name) {
				return
			}
		}
	}) {
		if hk, ok := hooks[name]; !ok || hk != cur.hooks[name] {
			fmt.Fprintf(b, "delete chain inet %s %s\n", TableName, name)
		}
	}
	return remade
}

// withElements adds elements, each with its own timeout (what it had
// left), to a set's block.
func withElements(text string, es []nftables.SetElement) string {
	var parts []string
	for _, e := range es {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			continue
		}
		p := a.String()
		if e.Timeout > 0 {
			p += " timeout " + nftDuration(e.Timeout.Truncate(1e6))
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return text
	}
	body := strings.TrimSuffix(text, "\n\t}")
	return body + fmt.Sprintf("\n\t\telements = { %s }\n\t}", strings.Join(parts, ",\n\t\t\t     "))
}

// Script is the nft script that turns the table cur, read from the
// kernel (with CheckElements' marks), into s: what Apply sends, as
// text. A set made anew gets the elements it had, each with the time it
// had left, read now.
func (c *Conn) Script(s Spec, cur *Current) (string, error) {
	l := s.layout()
	if err := l.carryElements(cur); err != nil {
		return "", err
	}
	return l.render(cur), nil
}
