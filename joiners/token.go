package joiners

import (
	"context"
	"errors"
	"strings"
)

// JoinSecretEnv holds the secret of a token join, as printed by mbot tokens add.
const JoinSecretEnv = "MBOT_JOIN_SECRET"

// token joins with a single-use secret, for hosts that have no identity
// provider. It is never detected: the job asks for it with --join-method token.
type token struct{}

func init() { register(token{}, 0) }

func (token) Method() string { return "token" }

func (token) Signals() string { return JoinSecretEnv }

func (token) Detect(Env) bool { return false }

// Proof is the secret itself; the authority compares its hash.
func (token) Proof(_ context.Context, env Env, _ string) (string, error) {
	secret := strings.TrimSpace(env(JoinSecretEnv))
	if secret == "" {
		return "", errors.New(JoinSecretEnv + " is unset: put the secret that `mbot tokens add` printed for this join token into " +
			JoinSecretEnv + " (from the CI system's secret store, not a file in the repository)")
	}
	return secret, nil
}
