// Why this file walks the YAML node tree by reflection instead of letting
// yaml.v3 decode into the raw structs with Decoder.KnownFields(true):
// yaml.v3's errors name a line and a Go type ("line 7: field intervl not
// found in type config.rawCheck", "cannot unmarshal !!str `x` into int"),
// not the field a user wrote. Walking the nodes, every error names the
// field's path and its line, says what was wanted in the config's words,
// and suggests the nearest known key:
//
//	f.yaml:7: links[0].check: unknown key "intervl" (did you mean "interval"?)
//
// It also bounds the work of aliases and merge keys (maxNodes), and
// refuses a quoted number or duration with a reason. Scalars are still
// decoded by yaml.v3 (Node.Decode). FuzzParse (fuzz_test.go) fuzzes it.

package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// The known keys of a section are the yaml tags of its raw struct: a new
// section is a new struct field, nothing more. A slice field may carry
// `max:"N"`, the most elements it takes.

// maxNodes bounds the work of one decode. Aliases and merge keys can make
// a small file stand for an exponentially large tree; no real config comes
// near this (100 links of 30 values each are 6,000 nodes).
const maxNodes = 100_000

type decoder struct {
	file  string
	nodes int
}

func (d *decoder) errAt(n *yaml.Node, path, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &ConfigError{File: d.file, Line: line, Field: path, Msg: fmt.Sprintf(format, args...)}
}

var durationType = reflect.TypeFor[time.Duration]()

// nodeDecoder is a schema value that takes more than one shape (dns: a
// list of addresses, or auto) and decodes its node itself.
type nodeDecoder interface {
	decodeNode(d *decoder, path string, n *yaml.Node) error
}

// decode fills v (settable) from n. path names v in messages.
func (d *decoder) decode(path string, n *yaml.Node, v reflect.Value) error {
	if d.nodes++; d.nodes > maxNodes {
		return d.errAt(n, path, "the config expands to more than %d values (aliases or merge keys?)", maxNodes)
	}
	n = resolve(n)
	if isNull(n) {
		return nil // absent: leave the zero value, a nil pointer
	}
	if v.CanAddr() {
		if u, ok := v.Addr().Interface().(nodeDecoder); ok {
			return u.decodeNode(d, path, n)
		}
	}
	switch v.Kind() {
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		if err := d.decode(path, n, p.Elem()); err != nil {
			return err
		}
		v.Set(p)
		return nil
	case reflect.Struct:
		if v.Type() != durationType {
			return d.mapping(path, n, v)
		}
	case reflect.Slice:
		return d.sequence(path, n, v, 0)
	case reflect.Map:
		return d.namedMap(path, n, v)
	}
	if n.Kind != yaml.ScalarNode {
		return d.errAt(n, path, "want a single value, not %s", kindName(n))
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		if quoted(n) && unquotedDecodes(n, v.Type()) {
			return d.errAt(n, path, "%s is in quotes, which make it a string: write it without them", quote(n.Value))
		}
		return d.errAt(n, path, "%s is not %s", quote(n.Value), typeName(v.Type()))
	}
	return nil
}

func quoted(n *yaml.Node) bool {
	return n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0
}

// unquotedDecodes says whether n would decode into a t without its quotes.
func unquotedDecodes(n *yaml.Node, t reflect.Type) bool {
	bare := *n
	bare.Style, bare.Tag = 0, ""
	return bare.Decode(reflect.New(t).Interface()) == nil
}

func (d *decoder) sequence(path string, n *yaml.Node, v reflect.Value, limit int) error {
	if n.Kind != yaml.SequenceNode {
		return d.errAt(n, path, "want a list, not %s", kindName(n))
	}
	if limit > 0 && len(n.Content) > limit {
		return d.errAt(n, path, "%d entries: at most %d are supported", len(n.Content), limit)
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		if err := d.decode(fmt.Sprintf("%s[%d]", path, i), item, s.Index(i)); err != nil {
			return err
		}
	}
	v.Set(s)
	return nil
}

func (d *decoder) mapping(path string, n *yaml.Node, v reflect.Value) error {
	if n.Kind != yaml.MappingNode {
		if path == "" {
			return d.errAt(n, path, "the config is %s; it must be a mapping of keys (links: ...)", kindName(n))
		}
		return d.errAt(n, path, "want a mapping of keys, not %s", kindName(n))
	}
	fields := structFields(v.Type())
	pairs, err := d.pairs(path, n, n)
	if err != nil {
		return err
	}
	for _, p := range pairs {
		f, ok := fields[p.key.Value]
		if !ok {
			msg := "unknown key " + quote(p.key.Value)
			if path == "" {
				msg += " at the top level"
			}
			if near := nearest(p.key.Value, fields); near != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", near)
			}
			return d.errAt(p.key, path, "%s", msg)
		}
		sub := p.key.Value
		if path != "" {
			sub = path + "." + sub
		}
		fv := v.Field(f.index)
		if f.max > 0 {
			if val := resolve(p.value); !isNull(val) {
				err = d.sequence(sub, val, fv, f.max)
			}
		} else {
			err = d.decode(sub, p.value, fv)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// namedMap fills a map[string]T: sections named by the user (hooks: {up:
// ..., down: ...}), each at path.name.
func (d *decoder) namedMap(path string, n *yaml.Node, v reflect.Value) error {
	if n.Kind != yaml.MappingNode {
		return d.errAt(n, path, "want a mapping of names, not %s", kindName(n))
	}
	if v.Type().Key().Kind() != reflect.String {
		panic("config: a map in the schema must have string keys")
	}
	pairs, err := d.pairs(path, n, n)
	if err != nil {
		return err
	}
	m := reflect.MakeMapWithSize(v.Type(), len(pairs))
	for _, p := range pairs {
		elem := reflect.New(v.Type().Elem()).Elem()
		sub := path + "." + p.key.Value
		if !validName(p.key.Value) {
			sub = path + "[" + quote(p.key.Value) + "]" // hooks["a b"]
		}
		if err := d.decode(sub, p.value, elem); err != nil {
			return err
		}
		m.SetMapIndex(reflect.ValueOf(p.key.Value).Convert(v.Type().Key()), elem)
	}
	v.Set(m)
	return nil
}

type pair struct{ key, value *yaml.Node }

// pairs lists a mapping's entries with merge keys (<<: *defaults) resolved:
// a key written in the mapping wins over a merged one, and an earlier
// merged mapping over a later one, as the YAML merge key spec says. at is
// the mapping being decoded, where a budget error points.
func (d *decoder) pairs(path string, n, at *yaml.Node) ([]pair, error) {
	var own, merged []pair
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if d.nodes++; d.nodes > maxNodes {
			return nil, d.errAt(at, path, "the config expands to more than %d values (aliases or merge keys?)", maxNodes)
		}
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			val = resolve(val)
			var from []*yaml.Node
			switch val.Kind {
			case yaml.MappingNode:
				from = []*yaml.Node{val}
			case yaml.SequenceNode:
				from = val.Content
			}
			if len(from) == 0 {
				return nil, d.errAt(k, path, "a merge key (<<) takes a mapping or a list of them")
			}
			for _, m := range from {
				m = resolve(m)
				if m.Kind != yaml.MappingNode {
					return nil, d.errAt(m, path, "a merge key (<<) takes a mapping or a list of them, not %s", kindName(m))
				}
				ps, err := d.pairs(path, m, at)
				if err != nil {
					return nil, err
				}
				merged = append(merged, ps...)
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return nil, d.errAt(k, path, "a key must be a plain word, not %s", kindName(k))
		}
		if seen[k.Value] {
			return nil, d.errAt(k, path, "key %s appears twice", quote(k.Value))
		}
		seen[k.Value] = true
		own = append(own, pair{k, val})
	}
	for _, p := range merged {
		if !seen[p.key.Value] {
			seen[p.key.Value] = true
			own = append(own, p)
		}
	}
	return own, nil
}

type fieldInfo struct {
	index int
	max   int // for a slice: most elements; 0 is no limit
}

// structFields maps the yaml keys of a raw struct to its fields.
func structFields(t reflect.Type) map[string]fieldInfo {
	out := map[string]fieldInfo{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fi := fieldInfo{index: i}
		if m := f.Tag.Get("max"); m != "" {
			n, err := strconv.Atoi(m)
			if err != nil || f.Type.Kind() != reflect.Slice {
				panic(fmt.Sprintf("config: field %s: max:%q wants a number, on a slice", f.Name, m))
			}
			fi.max = n
		}
		out[name] = fi
	}
	return out
}

func resolve(n *yaml.Node) *yaml.Node {
	// The parser refuses an alias to an anchor that is not yet complete,
	// so this ends.
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		return resolve(n.Content[0])
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a single value"
	}
	return "an empty document"
}

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration (like 500ms or 2s)"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Int64 || t.Kind() == reflect.Int:
		return "an integer"
	case t.Kind() == reflect.String:
		return "a string"
	}
	return "a " + t.String()
}

// nearest is the known key closest to key, within two edits, if no other
// is as close. A key all of whose characters would have to change ("x"
// for "ha") is a different word, not a typo of it.
func nearest(key string, known map[string]fieldInfo) string {
	if len(key) > 64 {
		return ""
	}
	found, best, tie := "", 3, false
	for k := range known {
		switch d := editDistance(key, k); {
		case d >= len(key):
		case d < best:
			found, best, tie = k, d, false
		case d == best:
			tie = true
		}
	}
	if tie {
		return ""
	}
	return found
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// quoteMax is how much of a value a message echoes.
const quoteMax = 64

// quote is how every message shows a value from the config: Go-quoted, so
// control characters and terminal escape sequences arrive as \x1b and the
// like, and cut to quoteMax bytes, so a megabyte of garbage is one short
// line.
func quote(s string) string {
	if len(s) <= quoteMax {
		return strconv.Quote(s)
	}
	cut := quoteMax
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:cut]), len(s))
}
