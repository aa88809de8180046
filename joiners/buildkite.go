package joiners

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// buildkiteAgentTimeout bounds `buildkite-agent oidc request-token`, which
// calls the Buildkite agent API.
var buildkiteAgentTimeout = 30 * time.Second

// buildkite asks the job's agent for an OIDC token with the authority's audience.
type buildkite struct{}

func init() { register(buildkite{}, priorityBuildkite) }

func (buildkite) Method() string { return "buildkite" }

func (buildkite) Signals() string { return "BUILDKITE=true" }

func (buildkite) Detect(env Env) bool { return env("BUILDKITE") == "true" }

func (buildkite) Proof(ctx context.Context, _ Env, audience string) (string, error) {
	agent, err := exec.LookPath("buildkite-agent")
	if err != nil {
		return "", errors.New("buildkite-agent is not in PATH; mbot runs `buildkite-agent oidc request-token` to get the job's OIDC token, " +
			"so run mbot issue in a Buildkite job step")
	}
	ctx, cancel := context.WithTimeout(ctx, buildkiteAgentTimeout)
	defer cancel()
	// The agent finds the job and its access token in the job's environment
	// (BUILDKITE_JOB_ID, BUILDKITE_AGENT_ACCESS_TOKEN), which it inherits.
	cmd := exec.CommandContext(ctx, agent, "oidc", "request-token", "--audience", audience)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second // do not wait for children that keep the pipes open
	err = cmd.Run()
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return "", fmt.Errorf("buildkite-agent oidc request-token did not answer within %s; check that the agent can reach the Buildkite API", buildkiteAgentTimeout)
	case err != nil:
		return "", fmt.Errorf("buildkite-agent oidc request-token --audience %s failed (%v): %s", audience, err, lastLines(stderr.String(), 5))
	}
	tok := strings.TrimSpace(stdout.String())
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \t\n") {
		return "", fmt.Errorf("buildkite-agent oidc request-token printed no token: %q", lastLines(tok, 3))
	}
	return tok, nil
}

// lastLines keeps the end of a tool's output, where it says what went wrong.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
