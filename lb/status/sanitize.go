package status

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Printable makes s safe to print on a terminal: every control character
// (C0, DEL, C1), Unicode format character (bidi overrides and the like)
// and byte that is not UTF-8 is written as a Go-style escape ("\x1b",
// "\u202e"), and a backslash as "\\" so an escape cannot be forged.
// Link names, reasons and flow fields can come from outside this process
// (another process's socket, conntrack): printed raw, an escape sequence
// in them would reach the terminal of whoever runs `flowpin status`.
// Tabs and newlines are escaped too: they would break the table.
func Printable(s string) string {
	clean := true
	for _, r := range s {
		if r == '\\' || r == utf8.RuneError || (r != ' ' && !unicode.IsGraphic(r)) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r == ' ' || unicode.IsGraphic(r):
			b.WriteString(s[i : i+n])
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += n
	}
	return b.String()
}
