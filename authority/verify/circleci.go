package verify

import (
	"errors"
	"fmt"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/internal/lazyregexp"
)

// uuidShape is a UUID in its usual 8-4-4-4-12 hex form.
var uuidShape = lazyregexp.New(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// circleciClaims are the claims of a CircleCI OIDC token, as documented in
// "Using OpenID Connect tokens in jobs".
type circleciClaims struct {
	Sub        string   `json:"sub"`
	ProjectID  string   `json:"oidc.circleci.com/project-id"`
	ContextIDs []string `json:"oidc.circleci.com/context-ids"`
	VCSOrigin  string   `json:"oidc.circleci.com/vcs-origin"`
	VCSRef     string   `json:"oidc.circleci.com/vcs-ref"`
}

func init() {
	register(&oidcPlatform{
		name:          "circleci",
		label:         "CircleCI",
		sectionFields: []string{"organization_id"},
		ruleFields:    []string{"project_id", "context_id"},
		// No scope on rules: the required organization_id, a literal UUID,
		// makes both the issuer and the audience the organization's own.
		issuer: func(s *oidcSection) (string, error) {
			if s.OrganizationID == "" {
				return "", errors.New("organization_id is required: the CircleCI organization id, the audience of its tokens")
			}
			if !uuidShape.MatchString(s.OrganizationID) {
				return "", fmt.Errorf("organization_id %q is not a CircleCI organization id: a UUID such as 6d4d8d6e-2b61-4b59-a3e2-3c4f7f1f0c51, "+
					"shown under Organization Settings > Overview", s.OrganizationID)
			}
			if s.Issuer != "" {
				return s.Issuer, nil
			}
			return "https://oidc.circleci.com/org/" + s.OrganizationID, nil
		},
		// CircleCI tokens are minted for the organization, not for us.
		audience: func(s *oidcSection, _ *Env) string { return s.OrganizationID },
		claims: func(tok *oidc.IDToken) (policy.Claims, error) {
			var c circleciClaims
			if err := tok.Claims(&c); err != nil {
				return nil, err
			}
			claims, err := requireClaims(map[string]string{
				"sub": c.Sub, "project_id": c.ProjectID, "vcs_origin": c.VCSOrigin, "vcs_ref": c.VCSRef,
			}, "sub", "project_id")
			if err != nil {
				return nil, err
			}
			if !strings.HasPrefix(c.Sub, "org/") {
				return nil, fmt.Errorf("sub %q is not of the form org/<org>/project/<project>/user/<user>", c.Sub)
			}
			if len(c.ContextIDs) > 0 {
				claims["context_id"] = c.ContextIDs
			}
			return claims, nil
		},
	})
}
