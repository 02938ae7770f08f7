package nft

import (
	"os/exec"
	"testing"
)

// The here-document ends where the text ends, whatever the text holds:
// sh hands nft the text unchanged and runs nothing else.
func TestScriptEndsAfterTheText(t *testing.T) {
	for _, text := range []string{
		"table inet t {\n}\n",
		"no final newline",
		"EOF\ntouch pwned\n",
		"EOF\nEOF1\n$(touch pwned) `touch pwned` 'q\n",
	} {
		sh := "nft() { cat; }\n" + Script(text) + "\n"
		cmd := exec.Command("sh", "-e", "-c", sh)
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		want := text
		if want[len(want)-1] != '\n' {
			want += "\n"
		}
		if err != nil || string(out) != want {
			t.Errorf("%q: sh read the script as %q (err %v), want the text alone", text, out, err)
		}
	}
}

// The fix verify prints for another program's mark writer is one shell
// word per name, whatever the table and chain are called.
func TestDeleteCommandQuotesNames(t *testing.T) {
	w := MarkWriter{Family: "inet", Table: "t;touch pwned", Chain: "c$(touch pwned)", Handle: 7}
	cmd := exec.Command("sh", "-e", "-c", `nft() { printf '%s\n' "$@"; }; `+w.DeleteCommand())
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	want := "delete\nrule\ninet\nt;touch pwned\nc$(touch pwned)\nhandle\n7\n"
	if err != nil || string(out) != want {
		t.Errorf("%s: sh ran %q (err %v), want the arguments %q", w.DeleteCommand(), out, err, want)
	}
}
