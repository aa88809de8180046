package commands

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// versionLine is what `mbot --version` prints after "mbot version ". A
// release build sets version, commit and date with -ldflags
// (.goreleaser.yaml); any other build (go build or go install in a
// checkout, go install ...@v1.2.3) reads what the go command embedded:
// the module's version and the VCS revision, commit time and whether the
// work tree had changes.
func versionLine(info *debug.BuildInfo, ok bool) (line, short string) {
	if version != "dev" || !ok {
		return fmt.Sprintf("%s (commit %s, built %s)", version, commit, date), version
	}
	v := strings.TrimPrefix(info.Main.Version, "v")
	if v == "" || v == "(devel)" {
		v = "dev"
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	rev := settings["vcs.revision"]
	if rev == "" {
		// go install ...@v1.2.3 builds from the module zip: a version, no VCS.
		return fmt.Sprintf("%s (module %s %s, no VCS information)", v, info.Main.Path, info.Main.Version), v
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if settings["vcs.modified"] == "true" {
		rev += "+dirty"
	}
	at := settings["vcs.time"]
	if at == "" {
		at = "unknown"
	}
	return fmt.Sprintf("%s (commit %s, committed %s, from a checkout)", v, rev, at), v
}

// buildVersion is versionLine for this binary.
func buildVersion() (line, short string) {
	if version != "dev" {
		// A release build: no need to parse the embedded build information.
		return versionLine(nil, false)
	}
	info, ok := debug.ReadBuildInfo()
	return versionLine(info, ok)
}
