package joiners

import "context"

// codeBuild is AWS CodeBuild, whose builds prove who they are with the iam
// method: a GetCallerIdentity request signed with the build's service
// role, whose credentials CodeBuild serves to the build's container.
type codeBuild struct{ awsIAM }

func init() { register(codeBuild{}, priorityCodeBuild) }

func (codeBuild) CIPlatform() string { return "codebuild" }

func (codeBuild) Signals() string { return "CODEBUILD_BUILD_ID" }

func (codeBuild) Detect(env Env) bool { return env("CODEBUILD_BUILD_ID") != "" }

func (c codeBuild) Proof(ctx context.Context, env Env, audience string) (string, error) {
	return c.awsIAM.Proof(ctx, env, audience)
}
