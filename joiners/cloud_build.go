package joiners

import "context"

// cloudBuild is Google Cloud Build, whose steps prove who they are with
// the gcp method: the build's service account's identity token, from the
// metadata server every step can reach.
type cloudBuild struct{ gcp }

func init() { register(cloudBuild{}, priorityCloudBuild) }

func (cloudBuild) CIPlatform() string { return "cloud_build" }

func (cloudBuild) Signals() string { return "BUILDER_OUTPUT and PROJECT_ID" }

// Detect: Cloud Build sets BUILDER_OUTPUT and PROJECT_ID in every step; the
// DMI name gcp looks at is not Google's in a build's container.
func (cloudBuild) Detect(env Env) bool { return env("BUILDER_OUTPUT") != "" && env("PROJECT_ID") != "" }

func (c cloudBuild) Proof(ctx context.Context, env Env, audience string) (string, error) {
	return c.gcp.Proof(ctx, env, audience)
}
