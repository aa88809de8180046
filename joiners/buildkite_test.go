package joiners_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/joiners"
)

// buildkiteEnv is the environment of a Buildkite job step.
var buildkiteEnv = map[string]string{
	"CI":                           "true",
	"BUILDKITE":                    "true",
	"BUILDKITE_JOB_ID":             "0184990a-477b-4fa8-9968-496074483cee",
	"BUILDKITE_AGENT_ACCESS_TOKEN": "agent-access-token",
	"BUILDKITE_ORGANIZATION_SLUG":  "acme-inc",
	"BUILDKITE_PIPELINE_SLUG":      "super-duper-app",
	"BUILDKITE_BRANCH":             "main",
}

func TestBuildkiteDetect(t *testing.T) {
	tests := []detectCase{
		{"Buildkite job", buildkiteEnv, "buildkite"},
		{"Buildkite agent on AWS", merge(buildkiteEnv, awsEnv), "buildkite"},
		{"Bitbucket variables in a Buildkite job", merge(buildkiteEnv, map[string]string{"BITBUCKET_BUILD_NUMBER": "7"}), "bitbucket"},
		{"GitHub Actions job with BUILDKITE=true", merge(githubEnv, buildkiteEnv), "github"},
		{"CircleCI job with BUILDKITE=true", merge(circleciEnv, buildkiteEnv), "circleci"},
	}
	runDetectCases(t, tests)
	if j, err := joiners.Detect(envOf(map[string]string{"BUILDKITE": "1"})); err == nil && j.Method() == "buildkite" {
		t.Error("BUILDKITE=1 detected as Buildkite; the agent sets BUILDKITE=true")
	}
}

// fakeAgent puts a buildkite-agent first in PATH that records its arguments
// in the returned file and then runs script (sh).
func fakeAgent(t *testing.T, script string) (argsFile string) {
	t.Helper()
	dir := t.TempDir()
	argsFile = filepath.Join(dir, "args")
	body := "#!/bin/sh\nprintf '%s\\n' \"$@\" > '" + argsFile + "'\n" + script + "\n"
	if err := os.WriteFile(filepath.Join(dir, "buildkite-agent"), []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return argsFile
}

func TestBuildkiteProof(t *testing.T) {
	const audience = "https://auth.acme.internal:8443 acme"
	// The agent prints the token and a newline on stdout, and logs on stderr.
	args := fakeAgent(t, `
[ "$1 $2 $3" = "oidc request-token --audience" ] || { echo "unexpected arguments: $*" >&2; exit 2; }
echo "2025-06-02 10:30:00 INFO   Requesting OIDC token" >&2
echo "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJhY21lIn0.c2lnbmF0dXJl"`)
	got, err := proof(t, "buildkite", buildkiteEnv, audience)
	if err != nil {
		t.Fatalf("Proof: %v", err)
	}
	if got != "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJhY21lIn0.c2lnbmF0dXJl" {
		t.Errorf("Proof = %q, want the token the agent printed", got)
	}
	data, err := os.ReadFile(args)
	if err != nil {
		t.Fatalf("buildkite-agent was not run: %v", err)
	}
	want := "oidc\nrequest-token\n--audience\n" + audience + "\n"
	if string(data) != want {
		t.Errorf("buildkite-agent was called with\n%s\nwant\n%s", data, want)
	}
}

func TestBuildkiteProofRefused(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		timeout time.Duration
		want    []string
	}{
		{"agent API refuses", `echo "fatal: failed to get OIDC token: POST .../oidc/tokens: 403 Forbidden" >&2; exit 1`, 0,
			[]string{"buildkite-agent oidc request-token --audience acme failed", "exit status 1", "403 Forbidden"}},
		{"agent prints no token", `echo "OIDC is not enabled for this pipeline"`, 0,
			[]string{"printed no token", "OIDC is not enabled"}},
		{"agent prints nothing", `exit 0`, 0, []string{"printed no token"}},
		{"agent hangs", `exec sleep 30`, 300 * time.Millisecond,
			[]string{"did not answer within 300ms", "Buildkite API"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fakeAgent(t, tc.script)
			if tc.timeout > 0 {
				defer joiners.SetBuildkiteAgentTimeout(tc.timeout)()
			}
			start := time.Now()
			got, err := proof(t, "buildkite", buildkiteEnv, "acme")
			if err == nil {
				t.Fatalf("Proof = %q, want an error", got)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Proof took %s", d)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestBuildkiteProofWithoutAgent(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	got, err := proof(t, "buildkite", buildkiteEnv, "acme")
	if err == nil {
		t.Fatalf("Proof = %q, want an error", got)
	}
	if !strings.Contains(err.Error(), "buildkite-agent is not in PATH") {
		t.Errorf("error %q does not say buildkite-agent is missing", err)
	}
}
