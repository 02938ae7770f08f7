// Package version tells which build of flowpin is running: its version,
// the commit it was built from and the Go release that built it.
//
// Nothing here is edited by hand. `make build` stamps Version (the output
// of `git describe --tags --always --dirty`) and Commit with -ldflags -X;
// a plain `go build` or `go install` leaves them empty and the Go
// toolchain's own build information is used instead: the main module's
// version and the vcs.revision and vcs.modified settings it records from
// git (see `go help buildinfo`, and -buildvcs in `go help build`).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set at link time by the Makefile:
//
//	-X flowpin/lb/version.Version=$(git describe --tags --always --dirty)
//	-X flowpin/lb/version.Commit=$(git rev-parse HEAD)
var (
	Version string
	Commit  string
)

// Info is one build's identity, as `flowpin version --json` prints it.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Modified  bool   `json:"modified"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// Get reads the stamped values, falling back to the toolchain's build
// information.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return get(Version, Commit, bi)
}

func get(stampedVersion, stampedCommit string, bi *debug.BuildInfo) Info {
	in := Info{
		Version:   stampedVersion,
		Commit:    stampedCommit,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	var revision string
	var modified bool
	if bi != nil {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if in.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			// Since Go 1.24 a build inside a git checkout gets a version
			// from the tags: v1.2.3, or a pseudo-version with +dirty.
			in.Version = bi.Main.Version
		}
	}
	if in.Commit == "" {
		in.Commit = revision
	}
	if in.Version == "" {
		in.Version = "devel"
		if revision != "" {
			in.Version += "-" + short(revision)
		}
	}
	if stampedVersion != "" {
		modified = strings.HasSuffix(stampedVersion, "-dirty")
	}
	in.Modified = modified
	if in.Commit == "" {
		in.Commit = "unknown"
	}
	return in
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

// String is the one line `flowpin --version` prints.
func (in Info) String() string {
	commit := short(in.Commit)
	if in.Modified {
		commit += ", modified"
	}
	return fmt.Sprintf("%s (commit %s, %s, %s)", in.Version, commit, in.GoVersion, in.Platform)
}
