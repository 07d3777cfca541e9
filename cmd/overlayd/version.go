package main

import "runtime/debug"

// version (main.go) is set by `make`: -ldflags -X main.version=$(git
// describe --tags --always --dirty). Without it, ask the build info.
func init() {
	if version == "dev" {
		version = vcsVersion(debug.ReadBuildInfo())
	}
}

// vcsVersion names a build made without make, e.g. by `go install`: the
// module's version if it has one, else the commit go build recorded
// (-buildvcs), short as git describe gives it, "-dirty" when the tree had
// changes; "dev" when there is neither.
func vcsVersion(info *debug.BuildInfo, ok bool) string {
	if !ok {
		return "dev"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "-dirty"
		}
	}
	if rev == "" {
		return "dev"
	}
	return rev[:min(len(rev), 7)] + dirty
}
