package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/mbot-dev/mbot/identity"
)

// OutputTypeJWT writes JWT-SVIDs: OIDC tokens issued by the authority,
// which AWS IAM, Vault or any OIDC relying party can trust.
const OutputTypeJWT = "workload-identity-jwt"

// Files of a workload-identity-jwt output.
const (
	// FileJWTSVID is the JWT-SVID for the first audience, alone in the
	// file (no newline), as AWS_WEB_IDENTITY_TOKEN_FILE and tbot expect.
	FileJWTSVID = "jwt_svid"
	// FileJWTSVIDs maps every audience to its JWT-SVID (JSON object).
	FileJWTSVIDs = "jwt_svids.json"
	// FileJWTJSON says what the output holds; it holds no token.
	FileJWTJSON = "workload-identity-jwt.json"
)

func init() {
	outputKinds[OutputTypeJWT] = jwtOutput{}
	identity.RegisterFiles(FileJWTSVID, FileJWTSVIDs, FileJWTJSON)
}

// JWTOutput is what a workload-identity-jwt output asks for in mbot.yaml:
//
//   - type: workload-identity-jwt
//     destination: ./jwt
//     audiences: [sts.amazonaws.com]   # each granted by a role's jwt_audiences
//     spiffe_id: /ci/payments/deploy    # optional subject (ApplicationOutput's field)
type JWTOutput struct {
	Audiences []string `yaml:"audiences"`
}

// CheckAndSetDefaults checks a workload-identity-jwt output's audiences.
func (j *JWTOutput) CheckAndSetDefaults() error {
	switch {
	case len(j.Audiences) == 0:
		return badField("audiences", "is required: the audiences to issue a JWT-SVID for (what each relying party expects in aud), granted by a role's jwt_audiences")
	case len(j.Audiences) > identity.MaxJWTAudiences:
		return badField("audiences", "lists %d audiences; at most %d", len(j.Audiences), identity.MaxJWTAudiences)
	}
	for i, aud := range j.Audiences {
		if err := identity.CheckAudience("audience", aud); err != nil {
			return badField("audiences", "%v", err)
		}
		if slices.Contains(j.Audiences[:i], aud) {
			return badField("audiences", "lists %s twice", identity.Quote(aud))
		}
	}
	return nil
}

type jwtOutput struct{}

func (jwtOutput) keys() (sshKey, tlsKey bool) { return false, false }

func (jwtOutput) setFields(o *Output) []string {
	var set []string
	if len(o.Audiences) > 0 {
		set = append(set, "audiences")
	}
	if o.SPIFFEID != "" {
		set = append(set, "spiffe_id")
	}
	return set
}

func (jwtOutput) checkAndSetDefaults(o *Output) error {
	if err := checkSPIFFEIDField(o.SPIFFEID); err != nil {
		return err
	}
	return o.JWTOutput.CheckAndSetDefaults()
}

func (jwtOutput) request(o *Output, req *identity.OutputRequest) {
	req.JWT = &identity.JWTRequest{Audiences: o.Audiences, SPIFFEID: o.SPIFFEID}
}

// JWTSummary is workload-identity-jwt.json: what the output holds, without
// the tokens themselves.
type JWTSummary struct {
	Cluster   string    `json:"cluster"`
	Bot       string    `json:"bot"`
	Output    string    `json:"output"`
	Type      string    `json:"type"`
	SPIFFEID  string    `json:"spiffe_id"`
	Issuer    string    `json:"issuer"`
	Audiences []string  `json:"audiences"`
	Roles     []string  `json:"roles"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// Files names each file written, by purpose.
	Files map[string]string `json:"files"`
}

func (jwtOutput) render(dir string, keys *identity.Keys, resp *identity.JoinResponse, grant *identity.OutputResponse) ([]identity.File, error) {
	g := grant.JWT
	if g == nil || len(g.SVIDs) == 0 {
		return nil, errors.New("the authority's answer holds no JWT-SVID")
	}
	tokens := map[string]string{}
	var auds []string
	for _, s := range g.SVIDs {
		if err := checkJWTSVID(s, g); err != nil {
			return nil, fmt.Errorf("the authority's JWT-SVID for %s: %w", identity.Quote(identity.Truncate(s.Audience, 64)), err)
		}
		if _, dup := tokens[s.Audience]; dup {
			return nil, fmt.Errorf("the authority's answer holds two JWT-SVIDs for %s", identity.Quote(s.Audience))
		}
		tokens[s.Audience] = s.Token
		auds = append(auds, s.Audience)
	}
	tokensJSON, err := json.MarshalIndent(tokens, "", "  ")
	if err != nil {
		return nil, err
	}
	sumJSON, err := json.MarshalIndent(JWTSummary{Cluster: resp.ClusterName, Bot: resp.Bot, Output: grant.Name, Type: OutputTypeJWT,
		SPIFFEID: g.SPIFFEID, Issuer: g.Issuer, Audiences: auds, Roles: grant.Roles, NotBefore: grant.NotBefore, NotAfter: grant.NotAfter,
		Files: map[string]string{"jwt_svid": FileJWTSVID, "jwt_svids": FileJWTSVIDs}}, "", "  ")
	if err != nil {
		return nil, err
	}
	return []identity.File{
		{Name: FileJWTSVID, Data: []byte(g.SVIDs[0].Token), Mode: 0o600},
		{Name: FileJWTSVIDs, Data: append(tokensJSON, '\n'), Mode: 0o600},
		{Name: FileJWTJSON, Data: append(sumJSON, '\n'), Mode: 0o600},
	}, nil
}

// checkJWTSVID checks that a token is a compact ES256 JWS whose claims say
// what the answer says (its signature is the relying party's to check).
func checkJWTSVID(s identity.JWTSVID, g *identity.JWTGrant) error {
	if err := identity.CheckAudience("audience", s.Audience); err != nil {
		return err
	}
	tok, err := jwt.ParseSigned(s.Token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return fmt.Errorf("not a signed JWT: %w", err)
	}
	var c jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		return err
	}
	if c.Subject != g.SPIFFEID || c.Issuer != g.Issuer || len(c.Audience) != 1 || c.Audience[0] != s.Audience || c.Expiry == nil {
		return errors.New("its claims are not the subject, issuer and audience the answer names")
	}
	return nil
}

// config is the type's own mbot.yaml fields.
func (jwtOutput) config() any { return JWTOutput{} }
