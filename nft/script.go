package nft

import (
	"fmt"
	"slices"
	"strings"
)

// Script is text for `nft -f -` as a shell here-document, to print for an
// operator to run. The delimiter is quoted, so the shell expands nothing
// in the text, and no line of the text equals it, so no line can end the
// document early and have the rest run as shell commands.
func Script(text string) string {
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	lines := strings.Split(text, "\n")
	delim := "EOF"
	for n := 1; slices.Contains(lines, delim); n++ {
		delim = fmt.Sprintf("EOF%d", n)
	}
	return "nft -f - <<'" + delim + "'\n" + text + delim
}
