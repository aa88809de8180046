package verify

import (
	"errors"
	"fmt"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
)

// spaceliftClaims are the claims of a Spacelift run's OIDC token, as
// documented in "OIDC Federation": standard claims.
type spaceliftClaims struct {
	Sub        string `json:"sub"`
	SpaceID    string `json:"spaceId"`
	CallerType string `json:"callerType"`
	CallerID   string `json:"callerId"`
	RunType    string `json:"runType"`
	RunID      string `json:"runId"`
	Scope      string `json:"scope"`
}

func init() {
	register(&oidcPlatform{
		name:          "spacelift",
		label:         "Spacelift",
		sectionFields: []string{"hostname"},
		ruleFields:    []string{"space_id", "caller_id", "caller_type", "scope"},
		issuerField:   "hostname",
		// No scope on rules: each Spacelift account is its own issuer and
		// audience (its host name), so hostname, required and glob-free,
		// pins the account.
		issuer: func(s *oidcSection) (string, error) {
			if s.Hostname == "" {
				return "", errors.New("hostname is required: your Spacelift account's host, such as acme.app.spacelift.io")
			}
			if strings.ContainsAny(s.Hostname, ":/*? ") {
				return "", fmt.Errorf("hostname %q must be a bare host name such as acme.app.spacelift.io, without https://, a path or globs", s.Hostname)
			}
			if s.Issuer != "" {
				return s.Issuer, nil
			}
			return "https://" + s.Hostname, nil
		},
		// Spacelift mints its tokens for the account's host name.
		audience: func(s *oidcSection, _ *Env) string { return s.Hostname },
		claims: func(tok *oidc.IDToken) (policy.Claims, error) {
			var c spaceliftClaims
			if err := tok.Claims(&c); err != nil {
				return nil, err
			}
			if err := requireJWTClaims("sub", c.Sub, "spaceId", c.SpaceID, "callerType", c.CallerType,
				"callerId", c.CallerID, "scope", c.Scope); err != nil {
				return nil, err
			}
			return requireClaims(map[string]string{
				"sub": c.Sub, "space_id": c.SpaceID, "caller_type": c.CallerType, "caller_id": c.CallerID,
				"run_type": c.RunType, "run_id": c.RunID, "scope": c.Scope,
			})
		},
	})
}
