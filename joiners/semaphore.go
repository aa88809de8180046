package joiners

import (
	"context"
	"errors"
)

// semaphore reads the OIDC token Semaphore puts into every job's environment.
type semaphore struct{}

func init() { register(semaphore{}, prioritySemaphore) }

func (semaphore) Method() string { return "semaphore" }

func (semaphore) Signals() string { return "SEMAPHORE=true" }

func (semaphore) Detect(env Env) bool { return env("SEMAPHORE") == "true" }

// Proof: Semaphore mints the token for the organization's own URL before
// the job starts.
func (semaphore) Proof(_ context.Context, env Env, _ string) (string, error) {
	if tok := env("SEMAPHORE_OIDC_TOKEN"); tok != "" {
		return tok, nil
	}
	return "", errors.New("this Semaphore job has no SEMAPHORE_OIDC_TOKEN; Semaphore sets it in every job of an organization " +
		"on a plan with OpenID Connect (on Semaphore CE, enable it in the organization's settings)")
}
