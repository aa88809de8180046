package verify

import (
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
)

// GitLabIssuer is the issuer of GitLab.com CI/CD ID tokens.
const GitLabIssuer = "https://gitlab.com"

// gitlabClaims are the claims of a GitLab CI/CD ID token (id_tokens:), as
// documented in "OpenID Connect (OIDC) Authentication Using ID Tokens".
type gitlabClaims struct {
	Sub                  string `json:"sub"`
	NamespacePath        string `json:"namespace_path"`
	ProjectPath          string `json:"project_path"`
	ProjectVisibility    string `json:"project_visibility"`
	UserLogin            string `json:"user_login"`
	PipelineSource       string `json:"pipeline_source"`
	PipelineID           string `json:"pipeline_id"`
	Ref                  string `json:"ref"`
	RefType              string `json:"ref_type"`
	RefProtected         string `json:"ref_protected"`
	Environment          string `json:"environment"`
	EnvironmentProtected string `json:"environment_protected"`
	DeploymentTier       string `json:"deployment_tier"`
	CIConfigRefURI       string `json:"ci_config_ref_uri"`
	JobID                string `json:"job_id"`
	SHA                  string `json:"sha"`
}

// gitlabScope: gitlab.com signs a token for any project that asks, so a
// rule names the top-level group (or user namespace) that owns the project.
var gitlabScope = &policy.OwnerScope{
	Issuer: "a GitLab instance signs tokens for every project on it (on gitlab.com, every project in the world)",
	Fields: []policy.OwnerField{
		{Name: "namespace_path", Pins: firstSegment("", "/"), Shape: "acme or acme/*", Example: "<your group>"},
		{Name: "project_path", Pins: firstSegment("", "/"), Shape: "acme/app or acme/*"},
		{Name: "ci_config_ref_uri", Pins: segments("", "/", 2), Shape: "gitlab.com/acme/app//.gitlab-ci.yml@refs/heads/main or gitlab.com/acme/*"},
		{Name: "sub", Pins: firstSegment("project_path:", "/"), Shape: "project_path:acme/app:ref_type:branch:ref:main or project_path:acme/*"},
	},
}

func init() {
	register(&oidcPlatform{
		name:  "gitlab",
		label: "GitLab CI",
		ruleFields: []string{"sub", "ref", "ref_type", "namespace_path", "project_path", "pipeline_source",
			"environment", "user_login", "ref_protected", "environment_protected", "ci_config_ref_uri",
			"deployment_tier", "project_visibility"},
		scope: gitlabScope,
		issuer: func(s *oidcSection) (string, error) {
			if s.Issuer != "" {
				return s.Issuer, nil
			}
			return GitLabIssuer, nil
		},
		audience: func(_ *oidcSection, env *Env) string { return env.Audience },
		claims: func(tok *oidc.IDToken) (policy.Claims, error) {
			var c gitlabClaims
			if err := tok.Claims(&c); err != nil {
				return nil, err
			}
			return requireClaims(map[string]string{
				"sub": c.Sub, "ref": c.Ref, "ref_type": c.RefType, "namespace_path": c.NamespacePath,
				"project_path": c.ProjectPath, "pipeline_source": c.PipelineSource, "environment": c.Environment,
				"user_login": c.UserLogin, "ref_protected": c.RefProtected, "environment_protected": c.EnvironmentProtected,
				"ci_config_ref_uri": c.CIConfigRefURI, "deployment_tier": c.DeploymentTier,
				"project_visibility": c.ProjectVisibility, "pipeline_id": c.PipelineID, "job_id": c.JobID, "sha": c.SHA,
			}, "sub", "project_path", "namespace_path", "ref", "ref_type")
		},
	})
}
