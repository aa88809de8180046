package joiners_test

import (
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/joiners"
)

// cloudBuildEnv is a step of a Google Cloud Build build.
var cloudBuildEnv = map[string]string{
	"BUILDER_OUTPUT": "/builder/outputs",
	"PROJECT_ID":     "acme-ci",
	"BUILD_ID":       "0b3c2d1e-0000-4000-8000-00000000cb0d",
	"HOME":           "/builder/home",
}

// codeBuildEnv is an AWS CodeBuild build, with the container credentials
// CodeBuild serves its service role's credentials from.
var codeBuildEnv = map[string]string{
	"CODEBUILD_BUILD_ID":                     "deploy:6a3c1f2e-0000-4000-8000-00000000cb01",
	"CODEBUILD_BUILD_ARN":                    "arn:aws:codebuild:eu-west-1:123456789012:build/deploy:6a3c1f2e-0000-4000-8000-00000000cb01",
	"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/6a3c1f2e",
	"AWS_REGION":                             "eu-west-1",
}

// TestCIPlatformOnCloud detects Cloud Build and CodeBuild ahead of the
// generic cloud detection: they join with gcp and iam, and name themselves.
func TestCIPlatformOnCloud(t *testing.T) {
	for _, tc := range []struct {
		name               string
		env                map[string]string
		method, ciPlatform string
	}{
		{"Cloud Build", cloudBuildEnv, "gcp", "cloud_build"},
		{"Cloud Build with the metadata host set", merge(cloudBuildEnv, map[string]string{"GCE_METADATA_HOST": "169.254.169.254"}), "gcp", "cloud_build"},
		{"CodeBuild", codeBuildEnv, "iam", "codebuild"},
		{"CodeBuild with keys in the environment", merge(codeBuildEnv, awsEnv), "iam", "codebuild"},
		{"a GCE machine is gcp", map[string]string{"GCE_METADATA_HOST": "169.254.169.254"}, "gcp", ""},
		{"AWS credentials are iam", awsEnv, "iam", ""},
		{"GitHub Actions running a CodeBuild-like variable is GitHub", merge(githubEnv, codeBuildEnv), "github", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, err := joiners.Detect(envOf(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if j.Method() != tc.method || joiners.CIPlatform(j) != tc.ciPlatform {
				t.Errorf("Detect picked %s on %q, want %s on %q", j.Method(), joiners.CIPlatform(j), tc.method, tc.ciPlatform)
			}
		})
	}
	// --join-method gcp and iam are the clouds' own joiners.
	for _, m := range []string{"gcp", "iam"} {
		if j, err := joiners.ByMethod(m); err != nil || joiners.CIPlatform(j) != "" {
			t.Errorf("ByMethod(%s) = %v, %v; want the cloud's own joiner", m, j, err)
		}
	}
	// mbot issue --help lists them in detection order, before the clouds.
	signals := strings.Join(joiners.DetectionSignals(), "\n")
	for _, want := range []string{"gcp on cloud_build (BUILDER_OUTPUT and PROJECT_ID)", "iam on codebuild (CODEBUILD_BUILD_ID)"} {
		if i, k := strings.Index(signals, want), strings.Index(signals, "\niam ("); i < 0 || i > k {
			t.Errorf("DetectionSignals does not list %q before the clouds:\n%s", want, signals)
		}
	}
}
