package verify

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/internal/lazyregexp"
)

// CodebergInstance is the public Forgejo instance most Forgejo Actions
// jobs run on; its issuer serves every repository on it.
const CodebergInstance = "https://codeberg.org"

// forgejoScope: a Forgejo instance signs a token for any repository on it
// that asks (on Codeberg, any repository of anyone), so a rule names the
// owner, by name or, better, by its immutable id. Forgejo's sub for a
// repository created after the immutable-id change reads
// repo:acme-123456/app-456789:..., whose first segment still pins the owner.
var forgejoScope = &policy.OwnerScope{
	Issuer: "a Forgejo instance signs tokens for every repository on it (on Codeberg, every user's)",
	Fields: []policy.OwnerField{
		{Name: "repository_owner", Shape: "acme", Example: "<your user or organization>"},
		{Name: "repository", Pins: firstSegment("", "/"), Shape: "acme/app or acme/*"},
		{Name: "repository_owner_id", Shape: "the owner's numeric id"},
		{Name: "repository_id", Shape: "the repository's numeric id"},
		{Name: "sub", Pins: firstSegment("repo:", "/"), Shape: "repo:acme/app:ref:refs/heads/main or repo:acme/*"},
	},
}

// forgejoImmutableOwner is an owner segment in Forgejo's immutable-id
// form: the name, a dash and the owner's numeric id (acme-1234).
var forgejoImmutableOwner = lazyregexp.New(`^([^*?/]+)-([0-9]+)$`)

// checkForgejoImmutableIDs refuses a rule whose sub or repository reads as
// the immutable-id form (repo:acme-1234/app-5678:...) without the id claims:
// a dash is legal in names, so the same text is the old-form sub of a user
// named acme-1234, who could then pass for acme. The rule must also set
// repository_owner_id or repository_id to an exact value; only the real
// owner's tokens carry those ids.
func checkForgejoImmutableIDs(rules []policy.AllowRule) error {
	for i, r := range rules {
		pinned := false
		for _, f := range r.Fields {
			if (f.Name == "repository_owner_id" || f.Name == "repository_id") && !slices.ContainsFunc(f.Patterns, func(p string) bool { return !policy.IsLiteral(p) }) {
				pinned = true
			}
		}
		if pinned {
			continue
		}
		for _, f := range r.Fields {
			if f.Name != "sub" && f.Name != "repository" {
				continue
			}
			for _, p := range f.Patterns {
				owner, _, _ := strings.Cut(strings.TrimPrefix(p, "repo:"), "/")
				m := forgejoImmutableOwner.FindStringSubmatch(owner)
				if m == nil || f.Name == "sub" && !strings.HasPrefix(p, "repo:") {
					continue
				}
				return &policy.UnscopedRuleError{Line: r.Line, Message: fmt.Sprintf(
					"allow[%d] %s: %q reads as Forgejo's immutable-id form (owner %s, id %s), but it reads the same as the old-form %s of a user named %s, "+
						"who could then pass for %s; add repository_owner_id: %q to the rule (only the owner with that id carries it)",
					i, f.Name, p, m[1], m[2], f.Name, owner, m[1], m[2])}
			}
		}
	}
	return nil
}

// forgejoClaims are the claims of a Forgejo Actions ID token, as documented
// in "Forgejo Actions | Security OpenID Connect": GitHub's names, with ids
// that may be JSON numbers or strings.
type forgejoClaims struct {
	Sub               string       `json:"sub"`
	Repository        string       `json:"repository"`
	RepositoryOwner   string       `json:"repository_owner"`
	RepositoryID      numberOrText `json:"repository_id"`
	RepositoryOwnerID numberOrText `json:"repository_owner_id"`
	Workflow          string       `json:"workflow"`
	Actor             string       `json:"actor"`
	ActorID           numberOrText `json:"actor_id"`
	Ref               string       `json:"ref"`
	RefType           string       `json:"ref_type"`
	EventName         string       `json:"event_name"`
	RunID             numberOrText `json:"run_id"`
	SHA               string       `json:"sha"`
	RunnerEnvironment string       `json:"runner_environment"`
}

// The issuer each server derives from its root URL (AppURL): Forgejo's
// /api/actions discovery document names <AppURL>api/actions, Gitea's
// services/actions/oidc.go signs as <AppURL>/api/actions/oidc.
var forgejoIssuerPaths = map[string]string{"forgejo": "/api/actions", "gitea": "/api/actions/oidc"}

func init() {
	register(&oidcPlatform{
		name:          "forgejo",
		label:         "Forgejo Actions",
		sectionFields: []string{"instance", "type"},
		ruleFields: []string{"sub", "repository", "repository_owner", "repository_id", "repository_owner_id",
			"workflow", "actor", "actor_id", "ref", "ref_type", "event_name", "runner_environment"},
		scope:       forgejoScope,
		checkRules:  checkForgejoImmutableIDs,
		issuerField: "instance",
		issuer: func(s *oidcSection) (string, error) {
			software := s.Type
			if software == "" {
				software = "forgejo"
			}
			path, ok := forgejoIssuerPaths[software]
			if !ok {
				return "", fmt.Errorf("type %q is neither forgejo (the default; issuer <instance>/api/actions) nor gitea (issuer <instance>/api/actions/oidc)", s.Type)
			}
			if s.Instance == "" && s.Issuer == "" {
				return "", errors.New("instance is required: the Forgejo or Gitea instance's URL, such as " + CodebergInstance +
					"; a Forgejo instance's Actions tokens' issuer is <instance>/api/actions, a Gitea instance's (type: gitea) <instance>/api/actions/oidc")
			}
			if s.Issuer != "" {
				return s.Issuer, nil
			}
			u, err := url.Parse(s.Instance)
			if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
				return "", fmt.Errorf("instance %q is not the URL of a Forgejo instance, such as %s", s.Instance, CodebergInstance)
			}
			return strings.TrimSuffix(s.Instance, "/") + path, nil
		},
		audience: func(_ *oidcSection, env *Env) string { return env.Audience },
		claims: func(tok *oidc.IDToken) (policy.Claims, error) {
			var c forgejoClaims
			if err := tok.Claims(&c); err != nil {
				return nil, err
			}
			return requireClaims(map[string]string{
				"sub": c.Sub, "repository": c.Repository, "repository_owner": c.RepositoryOwner,
				"repository_id": string(c.RepositoryID), "repository_owner_id": string(c.RepositoryOwnerID),
				"workflow": c.Workflow, "actor": c.Actor, "actor_id": string(c.ActorID), "ref": c.Ref, "ref_type": c.RefType,
				"event_name": c.EventName, "run_id": string(c.RunID), "sha": c.SHA, "runner_environment": c.RunnerEnvironment,
			}, "sub", "repository", "repository_owner", "ref")
		},
	})
}
