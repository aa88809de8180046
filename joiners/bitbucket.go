package joiners

import (
	"context"
	"errors"
)

// bitbucket reads the OIDC token Bitbucket Pipelines gives a step with `oidc: true`.
type bitbucket struct{}

func init() { register(bitbucket{}, priorityBitbucket) }

func (bitbucket) Method() string { return "bitbucket" }

func (bitbucket) Signals() string { return "BITBUCKET_BUILD_NUMBER or BITBUCKET_STEP_OIDC_TOKEN" }

func (bitbucket) Detect(env Env) bool {
	return env("BITBUCKET_STEP_OIDC_TOKEN") != "" || env("BITBUCKET_BUILD_NUMBER") != ""
}

// Proof ignores audience: Bitbucket mints the token for the workspace's
// audience (or the step's oidc.audiences).
func (bitbucket) Proof(_ context.Context, env Env, _ string) (string, error) {
	if tok := env("BITBUCKET_STEP_OIDC_TOKEN"); tok != "" {
		return tok, nil
	}
	return "", errors.New("this Bitbucket Pipelines step has no BITBUCKET_STEP_OIDC_TOKEN; add `oidc: true` to the step in bitbucket-pipelines.yml")
}
