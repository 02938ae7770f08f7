package version

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestGet(t *testing.T) {
	vcs := func(rev, modified string) *debug.BuildInfo {
		bi := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "flowpin", Version: "(devel)"}}
		bi.Settings = []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
		return bi
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	tagged := vcs(rev, "false")
	tagged.Main.Version = "v1.2.3"
	for _, tc := range []struct {
		name             string
		stamped, commit  string
		bi               *debug.BuildInfo
		version, wantRev string
		modified         bool
		goVersion        string
	}{
		{name: "make build", stamped: "v1.2.3-4-g0123456-dirty", commit: rev, bi: vcs("", ""),
			version: "v1.2.3-4-g0123456-dirty", wantRev: rev, modified: true, goVersion: "go1.99.1"},
		{name: "make build, clean tree", stamped: "v1.2.3", commit: rev, bi: vcs(rev, "true"),
			version: "v1.2.3", wantRev: rev, modified: false, goVersion: "go1.99.1"},
		{name: "go build in a checkout", bi: vcs(rev, "true"),
			version: "devel-0123456789ab", wantRev: rev, modified: true, goVersion: "go1.99.1"},
		{name: "go build at a tag", bi: tagged,
			version: "v1.2.3", wantRev: rev, goVersion: "go1.99.1"},
		{name: "no build info", version: "devel", wantRev: "unknown", goVersion: runtime.Version()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := get(tc.stamped, tc.commit, tc.bi)
			if got.Version != tc.version || got.Commit != tc.wantRev || got.Modified != tc.modified || got.GoVersion != tc.goVersion {
				t.Errorf("get = %+v, want version %q commit %q modified %v go %q", got, tc.version, tc.wantRev, tc.modified, tc.goVersion)
			}
			if got.Platform != runtime.GOOS+"/"+runtime.GOARCH {
				t.Errorf("platform %q", got.Platform)
			}
		})
	}
}

func TestString(t *testing.T) {
	in := Info{Version: "v1.2.3", Commit: "0123456789abcdef0123", Modified: true, GoVersion: "go1.99.1", Platform: "linux/arm64"}
	if got, want := in.String(), "v1.2.3 (commit 0123456789ab, modified, go1.99.1, linux/arm64)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
