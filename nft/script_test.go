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
