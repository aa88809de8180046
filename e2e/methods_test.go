package e2e

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/internal/simci"
)

// The join tokens of the methods cluster, and what their sections trust.
const (
	tokenSpacelift      = "spacelift-e2e"
	tokenTerraformCloud = "terraform-cloud-e2e"
	tokenBitbucket      = "bitbucket-e2e"
	tokenBuildkite      = "buildkite-e2e"
	tokenOIDC           = "oidc-e2e"

	spaceliftHost     = "acme.app.spacelift.io"
	bitbucketAudience = "ari:cloud:bitbucket::workspace/3c9d7e2a-8b1f-4e6d-a5c4-2b3a1d0e9f8c"
	tfcTag            = "MBOT"
)

// methodsTokensYAML is one join token per method of this file for bot
// %[2]s, each trusting the simulated issuer %[3]s.
const methodsTokensYAML = `kind: join_token
version: v1
metadata: {name: ` + tokenSpacelift + `}
spec:
  bot: %[2]s
  method: spacelift
  spacelift:
    hostname: ` + spaceliftHost + `
    issuer: %[3]s
    allow:
      - space_id: legacy
        caller_type: stack
        caller_id: infra
---
kind: join_token
version: v1
metadata: {name: ` + tokenTerraformCloud + `}
spec:
  bot: %[2]s
  method: terraform_cloud
  terraform_cloud:
    issuer: %[3]s
    allow:
      - organization_name: acme
        workspace_name: app-production
        run_phase: apply
---
kind: join_token
version: v1
metadata: {name: ` + tokenBitbucket + `}
spec:
  bot: %[2]s
  method: bitbucket
  bitbucket:
    identity_provider_url: %[3]s
    audience: ` + bitbucketAudience + `
    allow:
      - workspace_uuid: "{3c9d7e2a-8b1f-4e6d-a5c4-2b3a1d0e9f8c}"
        branch_name: main
---
kind: join_token
version: v1
metadata: {name: ` + tokenBuildkite + `}
spec:
  bot: %[2]s
  method: buildkite
  buildkite:
    issuer: %[3]s
    allow:
      - organization_slug: acme-inc
        pipeline_slug: super-duper-app
---
kind: join_token
version: v1
metadata: {name: ` + tokenOIDC + `}
spec:
  bot: %[2]s
  method: oidc
  oidc:
    issuer: %[3]s
    allow:
      - sub: https://jenkins.acme.internal/job/app/*
        production: true
`

// startMethodsCluster is startCluster with the join tokens of methodsTokensYAML.
func startMethodsCluster(t *testing.T) *cluster {
	t.Helper()
	c, _ := startClusterWith(t, func(c *cluster) string {
		return fmt.Sprintf(roleAndBotYAML, roleName, botName, c.login) +
			fmt.Sprintf(methodsTokensYAML, roleName, botName, c.ci.URL)
	})
	return c
}

// mint signs the platform's claims, changed by override, for aud.
func mint(t *testing.T, c *cluster, claims map[string]any, aud string, override map[string]any) string {
	t.Helper()
	claims = maps.Clone(claims)
	claims["aud"] = aud
	maps.Copy(claims, override)
	tok, err := c.ci.Mint(claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// methodJob is a job of one platform: the environment `mbot issue` runs in
// and the flags it needs beyond the connection.
type methodJob struct {
	env   []string
	flags []string
}

// methodCase is one join method of this file, with a job whose claims the
// join token admits and one whose claims it does not.
type methodCase struct {
	method, token string
	job           func(t *testing.T, c *cluster, override map[string]any) methodJob
	// mismatch changes the claims so that the join token's rule refuses
	// them, and names the rule field that differs.
	mismatch map[string]any
	field    string
}

var methodCases = []methodCase{
	{
		method: "spacelift", token: tokenSpacelift,
		job: func(t *testing.T, c *cluster, override map[string]any) methodJob {
			tok := mint(t, c, simci.SpaceliftClaims(), spaceliftHost, override)
			return methodJob{env: c.jobEnv(map[string]string{"SPACELIFT_OIDC_TOKEN": tok, "TF_VAR_spacelift_stack_id": "infra"})}
		},
		mismatch: map[string]any{"callerId": "infra-sandbox"}, field: "caller_id",
	},
	{
		method: "terraform_cloud", token: tokenTerraformCloud,
		job: func(t *testing.T, c *cluster, override map[string]any) methodJob {
			// A tagged token, as a workspace with TFC_WORKLOAD_IDENTITY_AUDIENCE_MBOT gets.
			tok := mint(t, c, simci.TerraformCloudClaims(), clusterName, override)
			return methodJob{env: c.jobEnv(map[string]string{
				"TFC_RUN_ID": "run-X3n1AUXNGWbfECsJ", "MBOT_TFC_TAG": tfcTag, "TFC_WORKLOAD_IDENTITY_TOKEN_" + tfcTag: tok,
			})}
		},
		mismatch: map[string]any{"terraform_run_phase": "plan"}, field: "run_phase",
	},
	{
		method: "bitbucket", token: tokenBitbucket,
		job: func(t *testing.T, c *cluster, override map[string]any) methodJob {
			tok := mint(t, c, simci.BitbucketClaims(), bitbucketAudience, override)
			return methodJob{env: c.jobEnv(map[string]string{"CI": "true", "BITBUCKET_BUILD_NUMBER": "118", "BITBUCKET_STEP_OIDC_TOKEN": tok})}
		},
		mismatch: map[string]any{"branchName": "feature/login"}, field: "branch_name",
	},
	{
		method: "buildkite", token: tokenBuildkite,
		job: func(t *testing.T, c *cluster, override map[string]any) methodJob {
			// The agent answers only the request mbot must make.
			tok := mint(t, c, simci.BuildkiteClaims(), clusterName, override)
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "buildkite-agent"), `#!/bin/sh
if [ "$*" != "oidc request-token --audience `+clusterName+`" ]; then
  echo "buildkite-agent: unexpected arguments: $*" >&2
  exit 2
fi
echo '`+tok+`'
`, 0o755)
			env := []string{"PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH"), "HOME=" + c.home}
			return methodJob{env: withVars(env, map[string]string{
				"CI": "true", "BUILDKITE": "true", "BUILDKITE_JOB_ID": "0184990a-477b-4fa8-9968-496074483cee",
			})}
		},
		mismatch: map[string]any{"pipeline_slug": "other-app"}, field: "pipeline_slug",
	},
	{
		method: "oidc", token: tokenOIDC,
		job: func(t *testing.T, c *cluster, override map[string]any) methodJob {
			file := filepath.Join(t.TempDir(), "id-token")
			writeFile(t, file, mint(t, c, simci.JenkinsClaims(), clusterName, override)+"\n", 0o600)
			return methodJob{
				env:   c.jobEnv(map[string]string{"JENKINS_URL": "https://jenkins.acme.internal/", "MBOT_OIDC_TOKEN_FILE": file}),
				flags: []string{"--join-method", "oidc"},
			}
		},
		mismatch: map[string]any{"production": false}, field: "production",
	},
}

// TestIssueMethods joins with the real binary from the environment of a
// Spacelift run, a Terraform Cloud run, a Bitbucket step, a Buildkite job
// (with a buildkite-agent in PATH) and a Jenkins job with a token file,
// each against a join token of its method; then refuses a job of each
// whose claims the join token's rules do not admit.
func TestIssueMethods(t *testing.T) {
	c := startMethodsCluster(t)
	for _, m := range methodCases {
		t.Run(m.method, func(t *testing.T) {
			job := m.job(t, c, nil)
			out := filepath.Join(t.TempDir(), "mbot")
			res := c.issue(t, job.env, m.token, out, job.flags...)
			if res.code != 0 {
				t.Fatalf("mbot issue: %s", res)
			}
			// The detected (or named) method is the join token's.
			if want := "mbot: " + m.method + " join as bot"; !strings.Contains(res.stderr, want) {
				t.Errorf("stderr does not say %q:\n%s", want, res.stderr)
			}
			checkIdentity(t, c, out, m.token, m.method)
		})
	}
	for _, m := range methodCases {
		t.Run(m.method+"/rule-mismatch", func(t *testing.T) {
			// Named by MBOT_JOIN_METHOD this time; wantRefused passes no flags.
			job := m.job(t, c, m.mismatch)
			env := withVars(job.env, map[string]string{"MBOT_JOIN_METHOD": m.method})
			wantRefused(t, c, env, m.token, "rule_mismatch", m.token, m.field)
		})
	}
	t.Run("spacelift/replay", func(t *testing.T) {
		job := methodCases[0].job(t, c, nil)
		if res := c.issue(t, job.env, tokenSpacelift, filepath.Join(t.TempDir(), "mbot")); res.code != 0 {
			t.Fatalf("first use of the token: %s", res)
		}
		wantRefused(t, c, job.env, tokenSpacelift, "proof_replayed", tokenSpacelift)
	})
}
