package commands

import (
	"runtime/debug"
	"testing"
)

// TestVersionLine checks what --version prints for each kind of build: a
// release build (ldflags), a go build in a checkout (VCS stamped), one with
// uncommitted changes, go install ...@version (no VCS) and a build with
// nothing embedded.
func TestVersionLine(t *testing.T) {
	checkout := &debug.BuildInfo{
		Main: debug.Module{Path: "github.com/mbot-dev/mbot", Version: "v0.0.0-20261202033020-d9b77be2628e"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "d9b77be2628e858e40890c3729072268ccd734d7"},
			{Key: "vcs.time", Value: "2026-12-02T03:30:20Z"},
			{Key: "vcs.modified", Value: "false"},
		},
	}
	modified := *checkout
	modified.Main.Version = "v0.0.0-20261202033020-d9b77be2628e+dirty"
	modified.Settings = append(append([]debug.BuildSetting(nil), checkout.Settings[:3]...), debug.BuildSetting{Key: "vcs.modified", Value: "true"})
	for _, tc := range []struct {
		name                string
		ldVersion           string
		info                *debug.BuildInfo
		wantLine, wantShort string
	}{
		{"release", "1.2.3", checkout, "1.2.3 (commit abc1234, built 2026-11-01T00:00:00Z)", "1.2.3"},
		{"checkout", "dev", checkout, "0.0.0-20261202033020-d9b77be2628e (commit d9b77be2628e, committed 2026-12-02T03:30:20Z, from a checkout)", "0.0.0-20261202033020-d9b77be2628e"},
		{"modified", "dev", &modified, "0.0.0-20261202033020-d9b77be2628e+dirty (commit d9b77be2628e+dirty, committed 2026-12-02T03:30:20Z, from a checkout)", "0.0.0-20261202033020-d9b77be2628e+dirty"},
		{"go install @v", "dev", &debug.BuildInfo{Main: debug.Module{Path: "github.com/mbot-dev/mbot", Version: "v1.4.0"}}, "1.4.0 (module github.com/mbot-dev/mbot v1.4.0, no VCS information)", "1.4.0"},
		{"nothing embedded", "dev", &debug.BuildInfo{Main: debug.Module{Path: "github.com/mbot-dev/mbot", Version: "(devel)"}}, "dev (module github.com/mbot-dev/mbot (devel), no VCS information)", "dev"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := [3]string{version, commit, date}
			defer func() { version, commit, date = saved[0], saved[1], saved[2] }()
			version, commit, date = tc.ldVersion, "none", "unknown"
			if tc.ldVersion != "dev" {
				commit, date = "abc1234", "2026-11-01T00:00:00Z"
			}
			line, short := versionLine(tc.info, true)
			if line != tc.wantLine || short != tc.wantShort {
				t.Errorf("versionLine = %q, %q\nwant           %q, %q", line, short, tc.wantLine, tc.wantShort)
			}
		})
	}
}
