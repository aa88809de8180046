package verify_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority/policy"
)

// TestOwnerScope compiles, method by method, rules that pin the owning
// tenant (admitted) and rules that would admit every tenant of a shared
// issuer (refused with the rule and the line to add).
func TestOwnerScope(t *testing.T) {
	const (
		notPinned   = "does not pin the owner"
		allGlobs    = "sets every field to a glob"
		azureHeader = "tenant_id: " + azureTenant + "\n"
		bbHeader    = "identity_provider_url: https://api.bitbucket.org/2.0/workspaces/acme/pipelines-config/identity/oidc\naudience: " + bitbucketAudience + "\n"
	)
	cases := []struct {
		method, name, section, want string
	}{
		// github: an owner by name or id, a repository under a literal owner,
		// or a sub whose owner part is literal.
		{"github", "repository", "allow:\n  - repository: acme/app\n", ""},
		{"github", "repositories of the owner", "allow:\n  - repository: acme/*\n    ref: refs/heads/main\n", ""},
		{"github", "repository_owner", "allow:\n  - repository_owner: acme\n    environment: production\n", ""},
		{"github", "repository_id", "allow:\n  - repository_id: \"74\"\n", ""},
		{"github", "repository_owner_id", "allow:\n  - repository_owner_id: \"65\"\n    workflow: deploy\n", ""},
		{"github", "sub of a repository", "allow:\n  - sub: repo:acme/app:ref:refs/heads/main\n", ""},
		{"github", "sub of the owner's repositories", "allow:\n  - sub: repo:acme/*\n", ""},
		{"github", "customized sub with the owner id", "allow:\n  - sub: repository_owner_id:65:*\n", ""},
		{"github", "a globbed repository beside a literal owner", "allow:\n  - repository: \"*\"\n    repository_owner: acme\n", ""},
		{"github", "immutable sub of a repository", "allow:\n  - sub: repo:acme@65/app@74:ref:refs/heads/main\n", ""},
		{"github", "immutable sub of the owner's repositories", "allow:\n  - sub: repo:acme@65/*\n", ""},
		// A glob for the name beside a literal id does not pin: the rest of
		// sub (a branch may be named x@65/y) can supply "@65/".
		{"github", "immutable sub with a globbed owner name", "allow:\n  - sub: \"repo:*@65/*\"\n", notPinned},
		{"github", "ref alone", "allow:\n  - ref: refs/heads/main\n", notPinned},
		{"github", "workflow alone", "allow:\n  - workflow: deploy\n", notPinned},
		{"github", "environment alone", "allow:\n  - environment: production\n", notPinned},
		{"github", "a public reusable workflow does not scope", "allow:\n  - job_workflow_ref: acme/automation/.github/workflows/deploy.yml@refs/heads/main\n", notPinned},
		{"github", "any repository", "allow:\n  - repository: \"*\"\n", `repository: "*" does not pin it`},
		{"github", "any owner's app", "allow:\n  - repository: \"*/app\"\n", notPinned},
		{"github", "owner prefix", "allow:\n  - repository: \"acme*\"\n", notPinned},
		{"github", "? in the owner", "allow:\n  - repository: ac?e/app\n", notPinned},
		{"github", "globbed owner", "allow:\n  - repository_owner: \"acme*\"\n", notPinned},
		{"github", "globbed repository_id", "allow:\n  - repository_id: \"7*\"\n", notPinned},
		{"github", "one open pattern in a list", "allow:\n  - repository: [acme/app, \"*\"]\n", notPinned},
		{"github", "any sub", "allow:\n  - sub: \"*\"\n", notPinned},
		{"github", "sub of any owner", "allow:\n  - sub: \"repo:*/app:*\"\n", notPinned},
		{"github", "sub with an owner prefix", "allow:\n  - sub: \"repo:acme*\"\n", notPinned},
		{"github", "sub without the repo: prefix", "allow:\n  - sub: \"environment:production\"\n", notPinned},
		{"github", "second rule unscoped", "allow:\n  - repository: acme/app\n  - ref: refs/heads/main\n", "line 10: allow[1] " + notPinned},
		{"github", "GitHub Enterprise Server serves many owners too", "issuer: https://ghes.acme.internal/_services/token\nallow:\n  - ref: refs/heads/main\n", notPinned},
		// gitlab: the top-level namespace, literally.
		{"gitlab", "project_path", "allow:\n  - project_path: acme/app\n", ""},
		{"gitlab", "projects of the group", "allow:\n  - project_path: acme/*\n    ref_protected: true\n", ""},
		{"gitlab", "namespace_path", "allow:\n  - namespace_path: acme\n", ""},
		{"gitlab", "subgroups", "allow:\n  - namespace_path: acme/*\n", ""},
		{"gitlab", "ci_config_ref_uri", "allow:\n  - ci_config_ref_uri: gitlab.com/acme/app//.gitlab-ci.yml@refs/heads/main\n", ""},
		{"gitlab", "ci_config_ref_uri of the group", "allow:\n  - ci_config_ref_uri: gitlab.com/acme/*\n", ""},
		{"gitlab", "sub", "allow:\n  - sub: project_path:acme/app:ref_type:branch:ref:main\n", ""},
		{"gitlab", "sub of the group", "allow:\n  - sub: project_path:acme/*\n", ""},
		{"gitlab", "ref alone", "allow:\n  - ref: main\n    ref_protected: true\n", notPinned},
		{"gitlab", "pipeline_source alone", "allow:\n  - pipeline_source: push\n", notPinned},
		{"gitlab", "any project", "allow:\n  - project_path: \"*\"\n", notPinned},
		{"gitlab", "any group's app", "allow:\n  - project_path: \"*/app\"\n", notPinned},
		{"gitlab", "group prefix", "allow:\n  - namespace_path: \"acme*\"\n", notPinned},
		{"gitlab", "ci_config_ref_uri of any group", "allow:\n  - ci_config_ref_uri: gitlab.com/*\n", notPinned},
		{"gitlab", "ci_config_ref_uri of any host", "allow:\n  - ci_config_ref_uri: \"*/acme/app//.gitlab-ci.yml@refs/heads/main\"\n", notPinned},
		{"gitlab", "sub of any project", "allow:\n  - sub: \"project_path:*\"\n", notPinned},
		// circleci: the organization is the issuer and the audience.
		{"circleci", "organization id", "organization_id: " + circleciOrg + "\nallow:\n  - context_id: a74579f1-2e7d-451e-b009-5c082ad2729e\n", ""},
		{"circleci", "organization by name", "organization_id: acme\nallow:\n  - project_id: x\n", `organization_id "acme" is not a CircleCI organization id`},
		{"circleci", "organization glob", "organization_id: \"*\"\nallow:\n  - project_id: x\n", "is not a CircleCI organization id"},
		// terraform_cloud and buildkite: the organization.
		{"terraform_cloud", "organization_name", "allow:\n  - organization_name: acme\n    workspace_name: prod\n", ""},
		{"terraform_cloud", "organization_id", "allow:\n  - organization_id: org-ABcd1234\n", ""},
		{"terraform_cloud", "workspace alone", "allow:\n  - workspace_name: prod\n", notPinned},
		{"terraform_cloud", "organization prefix", "allow:\n  - organization_name: \"acme*\"\n", notPinned},
		{"buildkite", "organization_slug", "allow:\n  - organization_slug: acme-inc\n", ""},
		{"buildkite", "any organization", "allow:\n  - organization_slug: \"*\"\n    pipeline_slug: deploy\n", notPinned},
		// gcp: projects or service accounts, no globs.
		{"gcp", "project", "allow:\n  - project_ids: acme-ci\n", ""},
		{"gcp", "service account", "allow:\n  - service_accounts: deploy@acme-ci.iam.gserviceaccount.com\n", ""},
		{"gcp", "project prefix", "allow:\n  - project_ids: acme-*\n", notPinned},
		{"gcp", "any account of a project", "allow:\n  - service_accounts: \"*@acme-ci.iam.gserviceaccount.com\"\n", notPinned},
		// azure: a subscription or an identity, no globs.
		{"azure", "subscription", azureHeader + "allow:\n  - subscription: " + azureSubscription + "\n", ""},
		{"azure", "identity", azureHeader + "allow:\n  - oid: 9c3e5a7b-1d2f-4a6c-8e0b-3f5d7a9c1e2b\n", ""},
		{"azure", "any subscription", azureHeader + "allow:\n  - subscription: \"*\"\n    resource_groups: ci-runners\n", notPinned},
		// iam: the account, alone or in an ARN.
		{"iam", "account", "allow:\n  - aws_account: \"123456789012\"\n", ""},
		{"iam", "role of the account", "allow:\n  - aws_arn: arn:aws:sts::123456789012:assumed-role/ci-deploy/*\n", ""},
		{"iam", "exact ARN", "allow:\n  - aws_arn: arn:aws:iam::123456789012:role/ci-deploy\n", ""},
		{"iam", "any account", "allow:\n  - aws_account: \"*\"\n", notPinned},
		{"iam", "account prefix", "allow:\n  - aws_account: \"12345678901*\"\n", notPinned},
		{"iam", "not an account id", "allow:\n  - aws_account: \"1234\"\n", notPinned},
		{"iam", "role of any account", "allow:\n  - aws_arn: \"arn:aws:sts::*:assumed-role/ci-deploy/*\"\n", notPinned},
		{"iam", "any ARN", "allow:\n  - aws_arn: \"arn:*\"\n", notPinned},
		// spacelift and bitbucket: the account's own issuer, never a glob.
		{"spacelift", "account host", "hostname: acme.app.spacelift.io\nallow:\n  - space_id: legacy\n", ""},
		{"spacelift", "globbed host", "hostname: \"*.app.spacelift.io\"\nallow:\n  - space_id: legacy\n", "without https://, a path or globs"},
		{"bitbucket", "workspace issuer", bbHeader + "allow:\n  - repository_uuid: \"{0}\"\n", ""},
		{"bitbucket", "globbed issuer", "identity_provider_url: https://api.bitbucket.org/2.0/workspaces/*/pipelines-config/identity/oidc\naudience: " +
			bitbucketAudience + "\nallow:\n  - repository_uuid: \"{0}\"\n", "compared exactly"},
		// kubernetes: the cluster's own keys scope every rule.
		{"kubernetes", "any service account of the cluster", "type: oidc\nissuer: https://k8s.acme.internal\nallow:\n  - service_account: \"*\"\n", ""},
		// oidc: a private issuer, and at least one exact field per rule.
		{"oidc", "exact sub", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - sub: https://jenkins.acme.internal/job/app/job/main/\n", ""},
		{"oidc", "a glob beside an exact field", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - sub: https://jenkins.acme.internal/job/app/*\n    branch_name: main\n", ""},
		{"oidc", "globs only", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - sub: \"*\"\n", allGlobs},
		{"oidc", "GitHub's issuer", "issuer: https://token.actions.githubusercontent.com\nallow:\n  - sub: repo:acme/app:ref:refs/heads/main\n", "use method: github"},
		{"oidc", "GitLab.com", "issuer: https://gitlab.com\nallow:\n  - sub: x\n", "use method: gitlab"},
		{"oidc", "Buildkite", "issuer: https://agent.buildkite.com\nallow:\n  - sub: x\n", "use method: buildkite"},
		{"oidc", "HCP Terraform", "issuer: https://app.terraform.io\nallow:\n  - sub: x\n", "use method: terraform_cloud"},
		{"oidc", "CircleCI", "issuer: https://oidc.circleci.com/org/" + circleciOrg + "\nallow:\n  - sub: x\n", "use method: circleci"},
		{"oidc", "Google", "issuer: https://accounts.google.com\nallow:\n  - sub: x\n", "use method: gcp"},
		{"oidc", "Entra ID", "issuer: https://sts.windows.net/" + azureTenant + "/\nallow:\n  - sub: x\n", "use method: azure"},
		{"oidc", "Codeberg", "issuer: https://codeberg.org/api/actions\nallow:\n  - sub: x\n", "use method: forgejo"},
		{"oidc", "env0", "issuer: https://login.app.env0.com/\nallow:\n  - sub: x\n", "use method: env0"},
		{"oidc", "Codefresh", "issuer: https://oidc.codefresh.io\nallow:\n  - sub: x\n", "use method: codefresh"},
		{"oidc", "Azure DevOps", "issuer: https://vstoken.dev.azure.com/0f8e4c2b-1a2b-4c3d-9e8f-123456789abc\nallow:\n  - sub: x\n", "use method: azure_devops"},
		{"oidc", "a self-hosted Forgejo", "issuer: https://git.acme.internal/api/actions\nallow:\n  - sub: repo:acme/app:ref:refs/heads/main\n", ""},
		// The new methods: the tenant by an exact value, in each rule or on the section.
		{"forgejo", "owner on Codeberg", "instance: https://codeberg.org\nallow:\n  - repository_owner: acme\n", ""},
		{"forgejo", "ref alone on Codeberg", "instance: https://codeberg.org\nallow:\n  - ref: refs/heads/main\n", notPinned},
		{"forgejo", "an immutable-id sub alone", "instance: https://codeberg.org\nallow:\n  - sub: \"repo:acme-1234/app-5678:*\"\n", `reads the same as the old-form sub of a user named acme-1234`},
		{"forgejo", "an immutable-id repository alone", "instance: https://codeberg.org\nallow:\n  - repository: acme-1234/app-5678\n", `add repository_owner_id: "1234"`},
		{"forgejo", "an immutable-id sub with the owner id", "instance: https://codeberg.org\nallow:\n  - sub: \"repo:acme-1234/app-5678:*\"\n    repository_owner_id: \"1234\"\n", ""},
		{"forgejo", "an old-form sub", "instance: https://codeberg.org\nallow:\n  - sub: \"repo:acme/app:*\"\n", ""},
		{"env0", "organization", "allow:\n  - organization_id: 5c6d7e8f-0000-4000-8000-0000000000e0\n", ""},
		{"env0", "project alone", "allow:\n  - project_id: 9a8b7c6d-0000-4000-8000-0000000000e1\n", notPinned},
		{"codefresh", "account", "allow:\n  - account_id: 5f30ebd30312313ae7f17948\n", ""},
		{"codefresh", "pipeline alone", "allow:\n  - pipeline_id: 64de5cd47626b3ca134e760a\n", notPinned},
		{"semaphore", "the organization is the issuer", "organization: acme\nallow:\n  - branch: main\n", ""},
		{"azure_devops", "the organization is the issuer", "organization_id: 0f8e4c2b-1a2b-4c3d-9e8f-123456789abc\nallow:\n  - repository_ref: refs/heads/main\n", ""},
		{"jenkins", "an exact folder", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - folder: infra\n", ""},
		{"jenkins", "a glob job", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - job: \"infra/*\"\n", notPinned},
		{"jenkins", "an exact build number only", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - build_number: \"1\"\n", notPinned},
		{"jenkins", "an exact job", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - job: infra/deploy\n    build_number: \"1\"\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.method+"/"+tc.name, func(t *testing.T) {
			v, err := compile(t, tc.method, tc.section, newEnv(nil))
			checkCompiled(t, v, err, tc.want)
			var unscoped *policy.UnscopedRuleError
			if (tc.want == notPinned || tc.want == allGlobs) && !errors.As(err, &unscoped) {
				t.Errorf("error %v (%T) is not an *policy.UnscopedRuleError, which mbot lint reports", err, err)
			}
		})
	}
}

// TestOwnerScopeMessage checks that a refusal shows the rule as written and
// the line to add, as an admin upgrading a join token needs.
func TestOwnerScopeMessage(t *testing.T) {
	cases := []struct {
		method, section string
		want            []string
	}{
		{"github", "allow:\n  - ref: refs/heads/main\n    environment: production\n", []string{
			"line 9: allow[0] does not pin the owner: GitHub's issuer signs tokens for every repository",
			"repository_owner (acme), repository (acme/app or acme/*)",
			"The rule, and a line to add:\n    - ref: refs/heads/main\n      environment: production\n      repository_owner: <your org or user>   # add",
		}},
		{"gitlab", "allow:\n  - project_path: \"*\"\n", []string{
			`project_path: "*" does not pin it; a glob may narrow within an owner (acme/*), never stand for it`,
			"    - project_path: \"*\"\n      namespace_path: <your group>   # add",
		}},
		{"iam", "allow:\n  - aws_account: \"1234\"\n", []string{
			"aws_account (a 12-digit account id, no globs)",
			"aws_account: 1234 does not pin it. The rule, and a line to add:",
		}},
		{"iam", "allow:\n  - aws_arn: \"arn:aws:sts::*:assumed-role/ci/*\"\n", []string{
			`- aws_arn: "arn:aws:sts::*:assumed-role/ci/*"`,
			"      aws_account: <your 12-digit account id>   # add",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.method, func(t *testing.T) {
			_, err := compile(t, tc.method, tc.section, newEnv(nil))
			if err == nil {
				t.Fatal("compiled; want a refusal")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message does not contain %q:\n%s", w, err)
				}
			}
		})
	}
}
