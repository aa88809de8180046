package joiners

import (
	"context"
	"errors"
)

// spacelift reads the OIDC token Spacelift puts into every run's environment.
type spacelift struct{}

func init() { register(spacelift{}, prioritySpacelift) }

func (spacelift) Method() string { return "spacelift" }

func (spacelift) Signals() string { return "SPACELIFT_OIDC_TOKEN" }

func (spacelift) Detect(env Env) bool { return env("SPACELIFT_OIDC_TOKEN") != "" }

// Proof ignores audience: Spacelift mints the token for the account's host name.
func (spacelift) Proof(_ context.Context, env Env, _ string) (string, error) {
	if tok := env("SPACELIFT_OIDC_TOKEN"); tok != "" {
		return tok, nil
	}
	return "", errors.New("SPACELIFT_OIDC_TOKEN is unset; Spacelift sets it in every run and task, " +
		"so run mbot issue from a stack's hook or task, not outside Spacelift")
}
