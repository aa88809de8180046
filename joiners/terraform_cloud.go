package joiners

import (
	"context"
	"fmt"

	"github.com/mbot-dev/mbot/internal/lazyregexp"
)

// TFCTagEnv names the variable that selects a tagged workload identity
// token: with MBOT_TFC_TAG=MBOT, mbot reads TFC_WORKLOAD_IDENTITY_TOKEN_MBOT,
// which HCP Terraform sets when the workspace has
// TFC_WORKLOAD_IDENTITY_AUDIENCE_MBOT.
const TFCTagEnv = "MBOT_TFC_TAG"

const tfcTokenVar = "TFC_WORKLOAD_IDENTITY_TOKEN"

var tfcTag = lazyregexp.New(`^[A-Za-z0-9_]+$`)

// terraformCloud reads the workload identity token HCP Terraform or
// Terraform Enterprise puts into a run's environment.
type terraformCloud struct{}

func init() { register(terraformCloud{}, priorityTerraformCloud) }

func (terraformCloud) Method() string { return "terraform_cloud" }

func (terraformCloud) Signals() string {
	return tfcTokenVar + " or " + tfcTokenVar + "_<" + TFCTagEnv + ">"
}

func (terraformCloud) Detect(env Env) bool {
	if env(tfcTokenVar) != "" {
		return true
	}
	tag := env(TFCTagEnv)
	return tag != "" && env(tfcTokenVar+"_"+tag) != ""
}

func (terraformCloud) Proof(_ context.Context, env Env, audience string) (string, error) {
	tag := env(TFCTagEnv)
	if tag == "" {
		if tok := env(tfcTokenVar); tok != "" {
			return tok, nil
		}
		return "", fmt.Errorf("%s is unset; add the environment variable TFC_WORKLOAD_IDENTITY_AUDIENCE=%s to the workspace "+
			"(or a tagged TFC_WORKLOAD_IDENTITY_AUDIENCE_<TAG> with %s=<TAG>)", tfcTokenVar, audience, TFCTagEnv)
	}
	if !tfcTag.MatchString(tag) {
		return "", fmt.Errorf("%s=%q is not a tag; use the <TAG> of TFC_WORKLOAD_IDENTITY_AUDIENCE_<TAG> (letters, digits and _)", TFCTagEnv, tag)
	}
	// No fallback to the untagged token: it is minted for another audience.
	name := tfcTokenVar + "_" + tag
	if tok := env(name); tok != "" {
		return tok, nil
	}
	return "", fmt.Errorf("%s is unset although %s=%s; add the environment variable TFC_WORKLOAD_IDENTITY_AUDIENCE_%s=%s to the workspace",
		name, TFCTagEnv, tag, tag, audience)
}
