package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/internal/simci"
)

// platformsTokensYAML is one join token per CI platform of issue 13 for
// bot %[1]s: the OIDC ones trust the simulated issuer %[2]s (Forgejo, the
// instance %[3]s, whose issuer is its /api/actions), Cloud Build's the gcp
// method on the same issuer, CodeBuild's the iam method on the STS
// stand-in %[4]s.
const platformsTokensYAML = `kind: join_token
version: v1
metadata: {name: forgejo-e2e}
spec:
  bot: %[1]s
  method: forgejo
  forgejo:
    instance: %[3]s
    allow:
      - repository_owner_id: "1234"
        ref: refs/heads/main
---
kind: join_token
version: v1
metadata: {name: azure-devops-e2e}
spec:
  bot: %[1]s
  method: azure_devops
  azure_devops:
    organization_id: ` + simci.AzureDevOpsOrgID + `
    issuer: %[2]s
    allow:
      - project_name: infra
        pipeline_name: deploy
        repository_ref: refs/heads/main
---
kind: join_token
version: v1
metadata: {name: env0-e2e}
spec:
  bot: %[1]s
  method: env0
  env0:
    issuer: %[2]s
    allow:
      - organization_id: 5c6d7e8f-0000-4000-8000-0000000000e0
        environment_name: network-prod
---
kind: join_token
version: v1
metadata: {name: semaphore-e2e}
spec:
  bot: %[1]s
  method: semaphore
  semaphore:
    organization: acme
    issuer: %[2]s
    allow:
      - project_id: 936a5312-a3b8-4921-8b3f-2cec8baac574
        branch: main
---
kind: join_token
version: v1
metadata: {name: codefresh-e2e}
spec:
  bot: %[1]s
  method: codefresh
  codefresh:
    issuer: %[2]s
    allow:
      - account_id: 5f30ebd30312313ae7f17948
        pipeline_name: app/deploy
---
kind: join_token
version: v1
metadata: {name: jenkins-e2e}
spec:
  bot: %[1]s
  method: jenkins
  jenkins:
    issuer: %[2]s
    allow:
      - folder: app
---
kind: join_token
version: v1
metadata: {name: cloud-build-e2e}
spec:
  bot: %[1]s
  method: gcp
  gcp:
    issuer: %[2]s
    allow:
      - service_accounts: 739419398126@cloudbuild.gserviceaccount.com
      - project_ids: acme-ci
---
kind: join_token
version: v1
metadata: {name: codebuild-e2e}
spec:
  bot: %[1]s
  method: iam
  iam:
    sts_endpoints: [%[4]s]
    allow:
      - aws_account: "%[5]s"
        aws_arn: "arn:aws:sts::%[5]s:assumed-role/codebuild-deploy/*"
`

// platformsCluster is a cluster with the join tokens of platformsTokensYAML
// and the stand-ins they trust.
type platformsCluster struct {
	*cluster
	forgejo *simci.Issuer
	sts     *simci.STS
}

func startPlatformsCluster(t *testing.T) *platformsCluster {
	t.Helper()
	forgejo, err := simci.StartForgejo()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { forgejo.Close() })
	sts, err := simci.StartSTS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sts.Close() })
	sts.SetCaller(simci.CodeBuildArn, simci.CodeBuildUserID)
	c, _ := startClusterWith(t, func(c *cluster) string {
		return fmt.Sprintf(roleAndBotYAML, roleName, botName, c.login) +
			fmt.Sprintf(platformsTokensYAML, botName, c.ci.URL, forgejo.Base, sts.URL, simci.STSAccount)
	})
	return &platformsCluster{cluster: c, forgejo: forgejo, sts: sts}
}

// withOverride is claims changed by override.
func withOverride(claims, override map[string]any) map[string]any {
	maps.Copy(claims, override)
	return claims
}

// platformCases are the OIDC platforms of issue 13, each with a job whose
// claims its join token admits and a change that its rules refuse.
func platformCases(pc *platformsCluster) []methodCase {
	return []methodCase{
		{
			method: "forgejo", token: "forgejo-e2e",
			job: func(t *testing.T, c *cluster, override map[string]any) methodJob {
				return methodJob{env: c.jobEnv(pc.forgejo.ForgejoEnv(withOverride(simci.ForgejoClaims(), override)))}
			},
			// Someone else registered the name acme after it was freed.
			mismatch: map[string]any{"repository_owner_id": "9999", "sub": "repo:acme-9999/app-1:ref:refs/heads/main"}, field: "repository_owner_id",
		},
		{
			method: "azure_devops", token: "azure-devops-e2e",
			job: func(t *testing.T, c *cluster, override map[string]any) methodJob {
				// The pipeline's own token (sub p://acme/infra/deploy): a
				// service connection's carries no repository_ref to rule on.
				env := c.ci.AzureDevOpsEnv(withOverride(simci.AzureDevOpsClaims(), override))
				return methodJob{env: c.jobEnv(env)}
			},
			mismatch: map[string]any{"rpo_ref": "refs/heads/feature"}, field: "repository_ref",
		},
		{
			method: "env0", token: "env0-e2e",
			job: func(t *testing.T, c *cluster, override map[string]any) methodJob {
				tok := mint(t, c, simci.Env0Claims(), "https://prod.env0.com", override)
				return methodJob{env: c.jobEnv(map[string]string{"ENV0_ENVIRONMENT_ID": "7e6d5c4b-0000-4000-8000-0000000000e3", "ENV0_OIDC_TOKEN": tok})}
			},
			mismatch: map[string]any{"organizationId": "00000000-0000-4000-8000-0000000000ff"}, field: "organization_id",
		},
		{
			method: "semaphore", token: "semaphore-e2e",
			job: func(t *testing.T, c *cluster, override map[string]any) methodJob {
				tok := mint(t, c, simci.SemaphoreClaims(), "https://acme.semaphoreci.com", override)
				return methodJob{env: c.jobEnv(map[string]string{"CI": "true", "SEMAPHORE": "true", "SEMAPHORE_OIDC_TOKEN": tok})}
			},
			mismatch: map[string]any{"branch": "feature"}, field: "branch",
		},
		{
			method: "codefresh", token: "codefresh-e2e",
			job: func(t *testing.T, c *cluster, override map[string]any) methodJob {
				return methodJob{env: c.jobEnv(c.ci.CodefreshEnv(withOverride(simci.CodefreshClaims(), override)))}
			},
			mismatch: map[string]any{"pipeline_name": "app/experiments"}, field: "pipeline_name",
		},
		{
			method: "jenkins", token: "jenkins-e2e",
			job: func(t *testing.T, c *cluster, override map[string]any) methodJob {
				tok := mint(t, c, simci.JenkinsClaims(), clusterName, override)
				return methodJob{env: c.jobEnv(map[string]string{
					"JENKINS_URL": "https://jenkins.acme.internal/", "BUILD_TAG": "jenkins-app-main-42", "MBOT_ID_TOKEN": tok,
				})}
			},
			mismatch: map[string]any{"sub": "https://jenkins.acme.internal/job/sandbox/job/main/"}, field: "folder",
		},
	}
}

// TestIssuePlatforms joins with the real binary from the environment of a
// Forgejo Actions step, an Azure Pipelines step, an env0 deployment, a
// Semaphore job, a Codefresh build and a Jenkins build, each detected and
// each against a join token of its method, the tokens fetched from the
// simulated platforms' endpoints where the platform has one; then refuses a
// job of each whose claims the rules do not admit.
func TestIssuePlatforms(t *testing.T) {
	pc := startPlatformsCluster(t)
	for _, m := range platformCases(pc) {
		t.Run(m.method, func(t *testing.T) {
			job := m.job(t, pc.cluster, nil)
			out := filepath.Join(t.TempDir(), "mbot")
			res := pc.issue(t, job.env, m.token, out, job.flags...)
			if res.code != 0 {
				t.Fatalf("mbot issue: %s", res)
			}
			if want := "mbot: " + m.method + " join as bot"; !strings.Contains(res.stderr, want) {
				t.Errorf("stderr does not say %q:\n%s", want, res.stderr)
			}
			checkIdentity(t, pc.cluster, out, m.token, m.method)
		})
		t.Run(m.method+"/rule-mismatch", func(t *testing.T) {
			job := m.job(t, pc.cluster, m.mismatch)
			wantRefused(t, pc.cluster, job.env, m.token, "rule_mismatch", m.token, m.field)
		})
	}
	t.Run("jenkins/no-plugin", func(t *testing.T) {
		env := pc.jobEnv(map[string]string{"JENKINS_URL": "https://jenkins.acme.internal/", "BUILD_TAG": "jenkins-app-main-42"})
		res := pc.issue(t, env, "jenkins-e2e", filepath.Join(t.TempDir(), "mbot"))
		if res.code == 0 {
			t.Fatalf("admitted without a token: %s", res)
		}
		for _, want := range []string{"jenkins join", "OpenID Connect Provider plugin", "mbot start --join-method bound_keypair"} {
			if !strings.Contains(res.stderr, want) {
				t.Errorf("stderr does not mention %q:\n%s", want, res.stderr)
			}
		}
	})
}

// TestIssueCIPlatformOnCloud joins from a Cloud Build step (the metadata
// server stand-in playing the build's service account) and a CodeBuild
// build (the STS stand-in naming the build's role session): detected ahead
// of the clouds, joined with gcp and iam, and named in the message and the
// audit record.
func TestIssueCIPlatformOnCloud(t *testing.T) {
	pc := startPlatformsCluster(t)
	cloudBuild := func(t *testing.T, email string) []string {
		claims := simci.GCPClaims()
		delete(claims, "google") // a build is no GCE instance
		claims["email"] = email
		m, err := simci.StartGCEMetadata(pc.ci, claims)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return pc.jobEnv(map[string]string{"BUILDER_OUTPUT": "/builder/outputs", "PROJECT_ID": "acme-ci", "GCE_METADATA_HOST": m.Host})
	}
	cases := []struct {
		name, token, method, platform string
		env                           func(t *testing.T) []string
		// audit is the claim of the audit record that names the platform.
		audit string
	}{
		{"cloud-build", "cloud-build-e2e", "gcp", "cloud_build",
			func(t *testing.T) []string { return cloudBuild(t, "739419398126@cloudbuild.gserviceaccount.com") }, "ci_platform"},
		// A user-managed service account does not show Cloud Build: the
		// record keeps what the client reported, as reported.
		{"cloud-build-own-account", "cloud-build-e2e", "gcp", "cloud_build",
			func(t *testing.T) []string { return cloudBuild(t, "mbot-ci@acme-ci.iam.gserviceaccount.com") }, "ci_platform_reported"},
		{"codebuild", "codebuild-e2e", "iam", "codebuild",
			func(t *testing.T) []string {
				return pc.jobEnv(withStrings(pc.sts.Env(), map[string]string{"CODEBUILD_BUILD_ID": "deploy:6a3c1f2e-0000-4000-8000-00000000cb01"}))
			}, "ci_platform"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "mbot")
			res := pc.issue(t, tc.env(t), tc.token, out)
			if res.code != 0 {
				t.Fatalf("mbot issue: %s", res)
			}
			if want := "mbot: " + tc.method + " join on " + tc.platform + " as bot"; !strings.Contains(res.stderr, want) {
				t.Errorf("stderr does not say %q:\n%s", want, res.stderr)
			}
			checkIdentity(t, pc.cluster, out, tc.token, tc.method)
			if got := lastJoinClaims(t, pc.cluster, tc.token)[tc.audit]; got != tc.platform {
				t.Errorf("the audit record's %s is %q, want %s", tc.audit, got, tc.platform)
			}
		})
	}
}

func withStrings(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

// lastJoinClaims are the claims of the newest admitted join with token, as
// mbot audit -o json shows them.
func lastJoinClaims(t *testing.T, c *cluster, token string) map[string]string {
	t.Helper()
	res := mustMbot(t, baseEnv(c.home), "audit", "--config", c.config, "-o", "json", "--limit", "0")
	var events []struct {
		adminAuditRecord
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &events); err != nil {
		t.Fatalf("mbot audit -o json: %v\n%s", err, res)
	}
	var last map[string]string
	var lastID int64 = -1
	for _, ev := range events {
		if ev.Event == "join" && ev.Allowed && ev.JoinToken == token && ev.ID > lastID {
			last, lastID = ev.Claims, ev.ID
		}
	}
	if last == nil {
		t.Fatalf("no admitted join with %s in the audit log:\n%s", token, res.stdout)
	}
	return last
}
