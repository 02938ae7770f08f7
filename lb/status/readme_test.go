package status

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// README's JSON reference of `flowpin status --json` names every field
// the status has (the --watch rates aside, given as "..."), so a field
// added by a feature does not go undocumented.
func TestReadmeNamesEveryStatusField(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)\nJSON \(` + "`schema`" + ` 1;.*?\n    --flows:`).Find(b)
	if m == nil {
		t.Fatal("README.md has no JSON reference of flowpin status")
	}
	ref := string(m)
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, path string) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice || ty.Kind() == reflect.Array {
			ty = ty.Elem()
		}
		if ty.Kind() != reflect.Struct || seen[ty] || ty == reflect.TypeOf(Rates{}) || ty.PkgPath() == "time" {
			return
		}
		seen[ty] = true
		for i := range ty.NumField() {
			f := ty.Field(i)
			if f.Anonymous {
				walk(f.Type, path)
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			if !strings.Contains(ref, `"`+name+`"`) {
				t.Errorf("README's JSON reference lacks %s%s", path, name)
			}
			walk(f.Type, path+name+".")
		}
	}
	walk(reflect.TypeOf(Status{}), "")
}
