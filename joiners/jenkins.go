package joiners

import (
	"context"
	"fmt"
	"strings"
)

// jenkins reads the ID token the OpenID Connect Provider plugin binds to a
// variable of the build (withCredentials, or the credentials() helper).
type jenkins struct{}

func init() { register(jenkins{}, priorityJenkins) }

func (jenkins) Method() string { return "jenkins" }

func (jenkins) Signals() string { return "JENKINS_URL and BUILD_TAG" }

// Detect: Jenkins sets both in every build; JENKINS_URL alone is also set
// on machines that merely talk to a Jenkins.
func (jenkins) Detect(env Env) bool { return env("JENKINS_URL") != "" && env("BUILD_TAG") != "" }

// Proof reads the variable named as for GitLab: MBOT_ID_TOKEN, or the one
// MBOT_ID_TOKEN_VAR names.
func (jenkins) Proof(_ context.Context, env Env, audience string) (string, error) {
	name := env(IDTokenVarEnv)
	if name == "" {
		name = DefaultIDTokenVar
	}
	if tok := strings.TrimSpace(env(name)); tok != "" {
		return tok, nil
	}
	return "", fmt.Errorf("this Jenkins build has no %[1]s variable. Either:\n"+
		"  - install the OpenID Connect Provider plugin, add an \"OpenID Connect id token\" credential with audience %[2]s, and bind it:\n"+
		"      withCredentials([string(credentialsId: 'mbot-id-token', variable: '%[1]s')]) { sh 'mbot issue ...' }\n"+
		"    (or set %[3]s to the name of the variable you bind it to); or\n"+
		"  - without the plugin, run `mbot start --join-method bound_keypair` on the runner, which keeps a key of its own",
		name, audience, IDTokenVarEnv)
}
