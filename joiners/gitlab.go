package joiners

import (
	"context"
	"fmt"
)

// DefaultIDTokenVar is the id_tokens variable mbot reads in GitLab CI.
const DefaultIDTokenVar = "MBOT_ID_TOKEN"

// IDTokenVarEnv names the variable holding the id_tokens variable's name,
// for pipelines that call theirs something else.
const IDTokenVarEnv = "MBOT_ID_TOKEN_VAR"

// gitLab reads the ID token that GitLab minted for the job (id_tokens:).
type gitLab struct{}

func init() { register(gitLab{}, priorityGitLab) }

func (gitLab) Method() string { return "gitlab" }

func (gitLab) Signals() string { return "GITLAB_CI=true" }

func (gitLab) Detect(env Env) bool { return env("GITLAB_CI") == "true" }

func (gitLab) Proof(_ context.Context, env Env, audience string) (string, error) {
	name := env(IDTokenVarEnv)
	if name == "" {
		name = DefaultIDTokenVar
	}
	if tok := env(name); tok != "" {
		return tok, nil
	}
	return "", fmt.Errorf("this GitLab job has no %s variable; add to the job:\n  id_tokens:\n    %s:\n      aud: %s\n(or set %s to the name of your id_tokens variable)",
		name, name, audience, IDTokenVarEnv)
}
