package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/identity"
)

func init() {
	platforms = append(platforms, platform{
		name:     "forgejo",
		audience: "acme",
		section: func(issuer string) string {
			return "issuer: " + issuer + "\nallow:\n  - repository_owner_id: \"1234\"\n    ref: refs/heads/main\n"
		},
		claims: policy.Claims{
			"sub":                 {"repo:acme-1234/app-5678:ref:refs/heads/main"},
			"repository":          {"acme/app"},
			"repository_owner":    {"acme"},
			"repository_id":       {"5678"},
			"repository_owner_id": {"1234"},
			"workflow":            {"deploy.yml"},
			"actor":               {"octocat"},
			"actor_id":            {"4321"},
			"ref":                 {"refs/heads/main"},
			"ref_type":            {"branch"},
			"event_name":          {"push"},
			"run_id":              {"8891"},
			"sha":                 {"6a8c2e1f0b9d4c3a7e5f1b2d8c4a6e0f9b3d7c1a"},
		},
	})
}

func TestForgejoRules(t *testing.T) {
	runRuleCases(t, platformByName(t, "forgejo"), jose.ES256, []ruleCase{
		{name: "repository and ref", allow: "  - repository: acme/app\n    ref: refs/heads/main\n", wantMatch: true},
		{name: "owner id", allow: "  - repository_owner_id: \"1234\"\n", wantMatch: true},
		{name: "sub with the immutable ids", allow: "  - sub: repo:acme-1234/app-5678:ref:refs/heads/main\n    repository_owner_id: \"1234\"\n", wantMatch: true},
		{name: "sub of the owner's repositories", allow: "  - sub: repo:acme-1234/*\n    repository_owner_id: \"1234\"\n", wantMatch: true},
		{
			// The old-form sub of a user named acme-1234 reads the same; its owner id is its own.
			name:  "an old-form sub that reads as the immutable form",
			allow: "  - sub: repo:acme-1234/*\n    repository_owner_id: \"1234\"\n",
			edit: func(c map[string]any) {
				c["sub"], c["repository"], c["repository_owner"], c["repository_owner_id"] = "repo:acme-1234/app-5678:ref:refs/heads/main", "acme-1234/app-5678", "acme-1234", "99001"
			},
		},
		{
			name:  "ids sent as JSON numbers",
			allow: "  - repository_id: \"5678\"\n    actor_id: \"4321\"\n",
			edit: func(c map[string]any) {
				c["repository_id"], c["repository_owner_id"], c["actor_id"], c["run_id"] = 5678, 1234, 4321, 8891
			},
			wantMatch: true,
		},
		{
			name:  "the owner's name re-registered by someone else",
			allow: "  - repository_owner_id: \"1234\"\n",
			edit: func(c map[string]any) {
				c["repository_owner_id"] = "9999"
				c["sub"] = "repo:acme-9999/app-1:ref:refs/heads/main"
			},
			wantInReason: []string{"repository_owner_id wants 1234, token has 9999"},
		},
		{
			name:         "another owner",
			allow:        "  - repository: acme/*\n",
			edit:         func(c map[string]any) { c["repository"] = "acme-evil/app" },
			wantInReason: []string{"repository wants acme/*, token has acme-evil/app"},
		},
		{
			name:         "no repository claim",
			allow:        "  - repository: acme/app\n",
			edit:         func(c map[string]any) { delete(c, "repository") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"repository"`, "Forgejo Actions"},
		},
	})
}

func TestForgejoCompile(t *testing.T) {
	const notPinned = "does not pin the owner"
	runCompileCases(t, "forgejo", []compileCase{
		{"Codeberg", "instance: https://codeberg.org\nallow:\n  - repository_owner: acme\n", ""},
		{"self-hosted with a path", "instance: https://git.acme.internal/forgejo/\nallow:\n  - repository: acme/app\n", ""},
		{"no instance", "allow:\n  - repository_owner: acme\n", "instance is required"},
		{"instance with a query", "instance: https://codeberg.org/?x=1\nallow:\n  - repository_owner: acme\n", "is not the URL of a Forgejo instance"},
		{"plain http elsewhere than loopback", "instance: http://codeberg.org\nallow:\n  - repository_owner: acme\n", "line 8: spec.forgejo.instance: the issuer"},
		{"ref alone", "instance: https://codeberg.org\nallow:\n  - ref: refs/heads/main\n", notPinned},
		{"any repository", "instance: https://codeberg.org\nallow:\n  - repository: \"*\"\n", notPinned},
		{"sub of any owner", "instance: https://codeberg.org\nallow:\n  - sub: \"repo:*\"\n", notPinned},
		{"globbed owner id", "instance: https://codeberg.org\nallow:\n  - repository_owner_id: \"12*\"\n", notPinned},
		{"gitea", "instance: https://gitea.acme.internal\ntype: gitea\nallow:\n  - repository_owner_id: \"65\"\n", ""},
		{"unknown type", "instance: https://gitea.acme.internal\ntype: gogs\nallow:\n  - repository_owner_id: \"65\"\n", `type "gogs" is neither forgejo`},
	})
	// The issuer is <instance>/api/actions.
	v, err := compile(t, "forgejo", "instance: https://codeberg.org\nallow:\n  - repository_owner: acme\n", newEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	iss := startIssuer(t, jose.ES256)
	_, err = v.Verify(t.Context(), iss.Sign(t, tokenClaims(t, "forgejo", iss.URL, "acme")))
	wantRefusal(t, err, identity.CodeWrongIssuer, "https://codeberg.org/api/actions", "spec.forgejo.instance")

	// Gitea signs as <AppURL>/api/actions/oidc (services/actions/oidc.go).
	v, err = compile(t, "forgejo", "instance: https://gitea.acme.internal/\ntype: gitea\nallow:\n  - repository_owner: acme\n", newEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(t.Context(), iss.Sign(t, tokenClaims(t, "forgejo", iss.URL, "acme")))
	wantRefusal(t, err, identity.CodeWrongIssuer, "https://gitea.acme.internal/api/actions/oidc", "spec.forgejo.instance")
}
