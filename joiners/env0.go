package joiners

import (
	"context"
	"errors"
)

// env0 reads the OIDC token env0 puts into a deployment's environment.
type env0 struct{}

func init() { register(env0{}, priorityEnv0) }

func (env0) Method() string { return "env0" }

func (env0) Signals() string { return "ENV0_ENVIRONMENT_ID or ENV0_OIDC_TOKEN" }

func (env0) Detect(env Env) bool {
	return env("ENV0_ENVIRONMENT_ID") != "" || env("ENV0_OIDC_TOKEN") != ""
}

// Proof: env0 mints the token, with its fixed audience, before the
// deployment starts.
func (env0) Proof(_ context.Context, env Env, _ string) (string, error) {
	if tok := env("ENV0_OIDC_TOKEN"); tok != "" {
		return tok, nil
	}
	return "", errors.New("this env0 deployment has no ENV0_OIDC_TOKEN; enable it under Organization Settings > Policies > " +
		"\"Enable OIDC during deployments\" (or select an OIDC credential for the environment)")
}
