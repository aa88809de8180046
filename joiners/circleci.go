package joiners

import (
	"context"
	"errors"
)

// circleCI reads the OIDC token CircleCI puts into every job's environment.
type circleCI struct{}

func init() { register(circleCI{}, priorityCircleCI) }

func (circleCI) Method() string { return "circleci" }

func (circleCI) Signals() string { return "CIRCLECI=true" }

func (circleCI) Detect(env Env) bool { return env("CIRCLECI") == "true" }

func (circleCI) Proof(_ context.Context, env Env, _ string) (string, error) {
	// V2 tokens carry the project and context claims; V1 is the fallback.
	for _, name := range []string{"CIRCLE_OIDC_TOKEN_V2", "CIRCLE_OIDC_TOKEN"} {
		if tok := env(name); tok != "" {
			return tok, nil
		}
	}
	return "", errors.New("this CircleCI job has no CIRCLE_OIDC_TOKEN_V2 or CIRCLE_OIDC_TOKEN; " +
		"CircleCI sets them only in jobs that use a context or run on a project with OIDC enabled")
}
