package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
	"gopkg.in/yaml.v3"
)

// asymmetricAlgs are the only signature algorithms accepted: a symmetric
// (HS*) token could be forged by anyone holding the issuer's public key.
var asymmetricAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA,
}

// oidcSection is the join token section shared by the OIDC-based methods.
type oidcSection struct {
	Issuer              string    `yaml:"issuer"`
	StaticJWKS          string    `yaml:"static_jwks"`
	OrganizationID      string    `yaml:"organization_id"`
	Organization        string    `yaml:"organization"`
	Instance            string    `yaml:"instance"`
	Hostname            string    `yaml:"hostname"`
	IdentityProviderURL string    `yaml:"identity_provider_url"`
	Audience            string    `yaml:"audience"`
	TenantID            string    `yaml:"tenant_id"`
	Type                string    `yaml:"type"`
	Allow               yaml.Node `yaml:"allow"`
}

// oidcPlatform describes a CI platform whose proof is an OIDC ID token.
type oidcPlatform struct {
	name string
	// label is how users call the platform, for messages.
	label string
	// sectionFields are keys the section may have besides issuer, static_jwks and allow.
	sectionFields []string
	// ruleFields are the allow-rule field names; nil means any claim name
	// (the generic oidc method, whose claims are whatever the issuer sends).
	ruleFields []string
	// retiredFields are rule fields mbot once took that the platform never
	// sends, each with what to write instead; a rule naming one is refused.
	retiredFields map[string]string
	// checkRules refuses rules that would admit too much (optional).
	checkRules func(rules []policy.AllowRule) error
	// scope says how a rule pins the tenant that owns a token, for an issuer
	// that serves many; nil when the issuer is the tenant's own.
	scope *policy.OwnerScope
	// foldCaseFields are rule fields whose values the platform compares
	// case-insensitively; their patterns are lower-cased, and claims must
	// lower-case the same fields (Azure resource groups).
	foldCaseFields []string
	// issuerField is the section key a user changes to trust another
	// issuer, for messages (default "issuer").
	issuerField string
	// issuer is the issuer URL the join token trusts.
	issuer func(s *oidcSection) (string, error)
	// audience is the aud the token must carry.
	audience func(s *oidcSection, env *Env) string
	// claims reads the platform's claims into allow-rule fields.
	claims func(tok *oidc.IDToken) (policy.Claims, error)
	// tokenClaims are claims of the token, by their names in it, that the
	// audit record of a refused proof keeps besides the rule fields: those
	// of platforms whose claim names are not the rule fields' (org_id,
	// organizationId).
	tokenClaims []string
}

func (p *oidcPlatform) Name() string { return p.name }

func (p *oidcPlatform) issuerKey() string {
	if p.issuerField != "" {
		return p.issuerField
	}
	return "issuer"
}

func (p *oidcPlatform) Compile(tokenName string, section *yaml.Node, env *Env) (Verifier, error) {
	if section == nil {
		return nil, fmt.Errorf("join token %q has method %s but no spec.%s section with allow rules", tokenName, p.name, p.name)
	}
	if err := checkKeys(section, "spec."+p.name, append([]string{"issuer", "static_jwks", "allow"}, p.sectionFields...)); err != nil {
		return nil, err
	}
	var s oidcSection
	if err := section.Decode(&s); err != nil {
		return nil, err
	}
	issuer, err := p.issuer(&s)
	if err != nil {
		return nil, fmt.Errorf("line %d: spec.%s: %v", section.Line, p.name, err)
	}
	if s.StaticJWKS == "" {
		// The authority will fetch the issuer's discovery document and keys.
		if err := checkRemoteURL(issuer); err != nil {
			line, key := section.Line, p.name
			for _, k := range []string{"issuer", p.issuerKey()} {
				if n := resources.Lookup(section, k); n != nil {
					line, key = n.Line, p.name+"."+k
					break
				}
			}
			return nil, fmt.Errorf("line %d: spec.%s: the issuer %v", line, key, err)
		}
	}
	if len(p.foldCaseFields) > 0 {
		s.Allow = lowerRuleValues(s.Allow, p.foldCaseFields)
	}
	if err := p.refuseRetired(&s.Allow); err != nil {
		return nil, err
	}
	known, fields := p.ruleFields, strings.Join(p.ruleFields, ", ")
	if known == nil {
		known, fields = ruleFieldNames(&s.Allow), "any claim of the token"
	}
	rules, err := policy.ParseAllowRules(&s.Allow, known)
	if s.Allow.Kind == 0 {
		rules, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("line %d: spec.%s.allow: a join token needs at least one allow rule (fields: %s)",
			section.Line, p.name, fields)
	}
	if p.checkRules != nil {
		if err := p.checkRules(rules); err != nil {
			return nil, err
		}
	}
	if err := p.scope.Check(rules); err != nil {
		return nil, err
	}
	v := &oidcVerifier{platform: p, tokenName: tokenName, issuer: issuer, audience: p.audience(&s, env), env: env, rules: rules}
	if s.StaticJWKS != "" {
		keys, err := parseJWKS(s.StaticJWKS)
		if err != nil {
			return nil, fmt.Errorf("line %d: spec.%s.static_jwks: %v", resources.Lookup(section, "static_jwks").Line, p.name, err)
		}
		v.static = oidc.NewVerifier(issuer, &oidc.StaticKeySet{PublicKeys: keys}, verifierConfig())
	}
	return v, nil
}

func parseJWKS(text string) ([]crypto.PublicKey, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(text), &set); err != nil {
		return nil, fmt.Errorf("not a JWKS document: %v", err)
	}
	var keys []crypto.PublicKey
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return nil, fmt.Errorf("key %q is private; put only public keys in static_jwks", k.KeyID)
		}
		keys = append(keys, k.Key)
	}
	if len(keys) == 0 {
		return nil, errors.New("the JWKS has no keys")
	}
	return keys, nil
}

// verifierConfig leaves audience and lifetime to oidcVerifier, which checks
// them with its own leeway and error messages.
func verifierConfig() *oidc.Config {
	return &oidc.Config{SupportedSigningAlgs: asymmetricAlgs, SkipClientIDCheck: true, SkipExpiryCheck: true}
}

type oidcVerifier struct {
	platform  *oidcPlatform
	tokenName string
	issuer    string
	audience  string
	env       *Env
	rules     []policy.AllowRule
	static    *oidc.IDTokenVerifier // set when the join token pins static_jwks
}

func (v *oidcVerifier) Rules() []policy.AllowRule { return v.rules }

func (v *oidcVerifier) Verify(ctx context.Context, proof string) (*Admission, error) {
	iss, err := unverifiedIssuer(proof)
	if err != nil {
		return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: the proof is not a %s OIDC token (%v)", v.tokenName, v.platform.label, err)
	}
	if iss != v.issuer {
		return nil, identity.Errorf(identity.CodeWrongIssuer,
			"join token %q trusts %s tokens from issuer %s, but this token was issued by %s; use a join token for that issuer or set spec.%s.%s",
			v.tokenName, v.platform.label, v.issuer, iss, v.platform.name, v.platform.issuerKey())
	}
	verifier := v.static
	if verifier == nil {
		if verifier, err = v.env.remoteVerifier(ctx, v.issuer); err != nil {
			return nil, v.unavailable(err)
		}
	}
	vctx, fetchFailed := withKeysUnavailable(ctx)
	tok, err := verifier.Verify(vctx, proof)
	if fetchFailed.err != nil {
		return nil, v.unavailable(fetchFailed.err)
	}
	if err != nil {
		return nil, &identity.Error{Code: identity.CodeProofInvalid, Err: err,
			Message: fmt.Sprintf("join token %q: the token's signature does not verify against %s's keys (%s); present a token freshly issued by the platform",
				v.tokenName, v.issuer, strings.TrimPrefix(err.Error(), "oidc: "))}
	}
	if !slices.Contains(tok.Audience, v.audience) {
		return nil, identity.Errorf(identity.CodeWrongAudience, "join token %q expects audience %q, but the token is for %q; request the token with audience %q",
			v.tokenName, v.audience, strings.Join(tok.Audience, ","), v.audience)
	}
	var extra struct {
		NotBefore *json.Number `json:"nbf"`
		JTI       string       `json:"jti"`
	}
	if err := tok.Claims(&extra); err != nil {
		return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: unreadable claims: %v", v.tokenName, err)
	}
	if err := v.checkLifetime(tok, extra.NotBefore); err != nil {
		return nil, err
	}
	claims, err := v.platform.claims(tok)
	if err != nil {
		var missing missingClaimError
		if errors.As(err, &missing) {
			return nil, identity.Errorf(identity.CodeClaimMissing, "join token %q: the token has no %q claim, which every %s token carries; is this a %s token?",
				v.tokenName, string(missing), v.platform.label, v.platform.label)
		}
		return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: %v", v.tokenName, err)
	}
	id := extra.JTI
	if id == "" {
		// Key on the signed claims, not the token's text: other texts of the
		// same token verify too (spare base64url bits, ECDSA's s and n-s).
		var signed json.RawMessage
		if err := tok.Claims(&signed); err != nil {
			return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: unreadable claims: %v", v.tokenName, err)
		}
		id = string(signed)
	}
	sum := sha256.Sum256([]byte(v.issuer + "\x00" + id))
	return &Admission{Claims: claims, ProofID: hex.EncodeToString(sum[:]), UsableUntil: tok.Expiry.Add(Leeway)}, nil
}

func (v *oidcVerifier) unavailable(err error) *identity.Error {
	return &identity.Error{Code: identity.CodeIssuerUnavailable, Err: err,
		Message: fmt.Sprintf("join token %q: cannot fetch the signing keys of %s (%v); check that the authority can reach it, or set static_jwks", v.tokenName, v.issuer, err)}
}

func (v *oidcVerifier) checkLifetime(tok *oidc.IDToken, nbf *json.Number) error {
	now := v.env.now()
	if tok.Expiry.IsZero() {
		return identity.Errorf(identity.CodeProofInvalid, "join token %q: the token has no exp claim; only expiring tokens are accepted", v.tokenName)
	}
	if now.After(tok.Expiry.Add(Leeway)) {
		return identity.Errorf(identity.CodeProofExpired, "join token %q: the token expired at %s (%s ago); fetch a fresh token in the same job step that runs mbot issue",
			v.tokenName, tok.Expiry.UTC().Format(time.RFC3339), now.Sub(tok.Expiry).Round(time.Second))
	}
	if nbf != nil {
		if f, err := nbf.Float64(); err == nil {
			if start := time.Unix(int64(f), 0); now.Add(Leeway).Before(start) {
				return identity.Errorf(identity.CodeProofNotYetValid, "join token %q: the token is not valid before %s; check the clocks of the authority and the issuer",
					v.tokenName, start.UTC().Format(time.RFC3339))
			}
		}
	}
	if !tok.IssuedAt.IsZero() && now.Add(Leeway).Before(tok.IssuedAt) {
		return identity.Errorf(identity.CodeProofNotYetValid, "join token %q: the token claims to be issued at %s, in the future; check the clocks of the authority and the issuer",
			v.tokenName, tok.IssuedAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// unverifiedIssuer reads iss without checking the signature, only to choose
// how to verify and to explain a wrong issuer; nothing is admitted on it.
func unverifiedIssuer(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("a JWT has three dot-separated parts")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", errors.New("the payload is not base64url")
	}
	var c struct {
		Issuer string `json:"iss"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", errors.New("the payload is not JSON")
	}
	if c.Issuer == "" {
		return "", errors.New("the token has no iss claim")
	}
	return c.Issuer, nil
}

// missingClaimError names a claim every token of the platform must have.
type missingClaimError string

func (m missingClaimError) Error() string { return fmt.Sprintf("missing claim %q", string(m)) }

// requireClaims turns a platform's claims, named as allow-rule fields, into
// Claims; each field in required must be present.
func requireClaims(fields map[string]string, required ...string) (policy.Claims, error) {
	for _, name := range required {
		if fields[name] == "" {
			return nil, missingClaimError(name)
		}
	}
	out := policy.Claims{}
	for k, v := range fields {
		if v != "" {
			out[k] = []string{v}
		}
	}
	return out, nil
}

// requireJWTClaims returns a missingClaimError for the first claim whose
// value is empty; pairs alternate the claim's name in the token and its value.
func requireJWTClaims(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			return missingClaimError(pairs[i])
		}
	}
	return nil
}

// lowerRuleValues returns allow with the values of fields lower-cased in
// every rule. It changes a copy: the nodes are the stored resource's.
func lowerRuleValues(allow yaml.Node, fields []string) yaml.Node {
	allow = copyNode(allow)
	if allow.Kind != yaml.SequenceNode {
		return allow
	}
	for _, rule := range allow.Content {
		for i := 0; i+1 < len(rule.Content); i += 2 {
			if !slices.Contains(fields, rule.Content[i].Value) {
				continue
			}
			values := []*yaml.Node{rule.Content[i+1]}
			if rule.Content[i+1].Kind == yaml.SequenceNode {
				values = rule.Content[i+1].Content
			}
			for _, v := range values {
				if v.Kind == yaml.ScalarNode {
					v.Value = strings.ToLower(v.Value)
				}
			}
		}
	}
	return allow
}

func copyNode(n yaml.Node) yaml.Node {
	if len(n.Content) > 0 {
		content := make([]*yaml.Node, len(n.Content))
		for i, c := range n.Content {
			cc := copyNode(*c)
			content[i] = &cc
		}
		n.Content = content
	}
	return n
}

// ruleFieldNames lists the field names the allow rules use, which are the
// known fields of a method that takes any claim name.
func ruleFieldNames(allow *yaml.Node) []string {
	names := []string{}
	for _, rule := range allow.Content {
		for i := 0; i+1 < len(rule.Content); i += 2 {
			names = append(names, rule.Content[i].Value)
		}
	}
	return names
}

// registeredClaims are left out of a generic token's claims: the verifier
// checks them already or they differ in every token, so a rule on them
// would be a mistake, and they would only clutter the audit record.
var registeredClaims = []string{"iss", "aud", "exp", "iat", "nbf", "jti"}

// refuseRegisteredClaims explains why a rule on iss, aud, exp... cannot match.
func refuseRegisteredClaims(rules []policy.AllowRule) error {
	for i, r := range rules {
		for _, f := range r.Fields {
			if slices.Contains(registeredClaims, f.Name) {
				return fmt.Errorf("line %d: allow[%d].%s: rules cannot test %s; the join token's issuer and audience are checked on every token, "+
					"and the others change with every token", r.Line, i, f.Name, strings.Join(registeredClaims, ", "))
			}
		}
	}
	return nil
}

// flattenClaims turns every top-level string, boolean and number claim, and
// every list of strings, into a rule field of the same name. Objects and
// mixed lists are left out. sub is required, as OpenID Connect requires it.
func flattenClaims(tok *oidc.IDToken) (policy.Claims, error) {
	var raw map[string]json.RawMessage
	if err := tok.Claims(&raw); err != nil {
		return nil, err
	}
	out := policy.Claims{}
	for name, text := range raw {
		if slices.Contains(registeredClaims, name) {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(text))
		dec.UseNumber() // keep 12345678901234567 as sent, not as a float
		var value any
		if err := dec.Decode(&value); err != nil {
			return nil, fmt.Errorf("claim %q: %v", name, err)
		}
		switch v := value.(type) {
		case string:
			if v != "" {
				out[name] = []string{v}
			}
		case bool:
			out[name] = []string{strconv.FormatBool(v)}
		case json.Number:
			out[name] = []string{v.String()}
		case []any:
			var list []string
			for _, item := range v {
				s, ok := item.(string)
				if !ok {
					list = nil
					break
				}
				list = append(list, s)
			}
			if len(list) > 0 {
				out[name] = list
			}
		}
	}
	if len(out["sub"]) == 0 {
		return nil, missingClaimError("sub")
	}
	return out, nil
}

// sharedIssuers are public issuers that sign tokens for every customer of a
// platform, by host, with the method that knows how to scope their rules.
var sharedIssuers = map[string]string{
	"token.actions.githubusercontent.com": "github",
	"gitlab.com":                          "gitlab",
	"agent.buildkite.com":                 "buildkite",
	"app.terraform.io":                    "terraform_cloud",
	"oidc.circleci.com":                   "circleci",
	"accounts.google.com":                 "gcp",
	"sts.windows.net":                     "azure",
	"login.microsoftonline.com":           "azure",
	"api.bitbucket.org":                   "bitbucket",
	"vstoken.dev.azure.com":               "azure_devops",
	"codeberg.org":                        "forgejo",
	"login.app.env0.com":                  "env0",
	"oidc.codefresh.io":                   "codefresh",
}

// refuseSharedIssuer keeps the generic method off the issuers of platforms
// mbot has a method for: the generic method cannot tell which of the
// platform's customers a rule must pin, so a rule such as sub: "*" would
// admit all of them.
func refuseSharedIssuer(u *url.URL) error {
	if m, ok := sharedIssuers[strings.ToLower(u.Hostname())]; ok {
		return fmt.Errorf("issuer %s signs tokens for every customer of its platform; use method: %s instead of oidc, whose rules must name your organization or project",
			u, m)
	}
	return nil
}

// The generic method trusts any OIDC issuer the join token names (Jenkins
// with the OpenID Connect Provider plugin, Forgejo or Gitea Actions,
// TeamCity), with rules over whatever claims it sends.
func init() {
	register(&oidcPlatform{
		name:          "oidc",
		label:         "generic",
		sectionFields: []string{"audience"},
		checkRules:    refuseRegisteredClaims,
		// The issuer is the admin's own (refuseSharedIssuer), yet a rule of
		// globs only would admit any workload it serves.
		scope: &policy.OwnerScope{Issuer: "the join token's issuer", AnyLiteral: true},
		issuer: func(s *oidcSection) (string, error) {
			if s.Issuer == "" {
				return "", errors.New("issuer is required: the URL of the OIDC issuer, whose discovery document is <issuer>/.well-known/openid-configuration")
			}
			// Compile checks the scheme (checkRemoteURL); here only whose issuer it is.
			u, err := url.Parse(s.Issuer)
			if err != nil {
				return "", fmt.Errorf("issuer %q is not an https:// URL", s.Issuer)
			}
			if err := refuseSharedIssuer(u); err != nil {
				return "", err
			}
			return s.Issuer, nil
		},
		audience: func(s *oidcSection, env *Env) string {
			if s.Audience != "" {
				return s.Audience
			}
			return env.Audience
		},
		claims: flattenClaims,
	})
}

// UnverifiedClaims reads the claims of a proof that was refused, without
// checking anything, for the audit record only: who presented it. It keeps
// the allow-rule fields (every claim for the generic oidc method) and iss,
// sub and aud, as text; nil when the proof is not a JWT with a JSON payload.
// Nothing is ever admitted on these claims.
func (v *oidcVerifier) UnverifiedClaims(proof string) policy.Claims {
	parts := strings.Split(proof, ".")
	if len(parts) != 3 {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil
	}
	keep := func(k string) bool {
		return v.platform.ruleFields == nil || slices.Contains(v.platform.ruleFields, k) || slices.Contains(v.platform.tokenClaims, k) ||
			k == "iss" || k == "sub" || k == "aud"
	}
	claims := policy.Claims{}
	for k, val := range raw {
		if !keep(k) {
			continue
		}
		switch val := val.(type) {
		case string:
			claims[k] = []string{val}
		case json.Number:
			claims[k] = []string{val.String()}
		case bool:
			claims[k] = []string{strconv.FormatBool(val)}
		case []any:
			var vs []string
			for _, item := range val {
				if s, ok := item.(string); ok {
					vs = append(vs, s)
				}
			}
			if len(vs) > 0 {
				claims[k] = vs
			}
		}
	}
	if len(claims) == 0 {
		return nil
	}
	return claims
}

// refuseRetired names the first rule field of allow that is one of the
// platform's retired fields, with what to write instead.
func (p *oidcPlatform) refuseRetired(allow *yaml.Node) error {
	if allow.Kind != yaml.SequenceNode || len(p.retiredFields) == 0 {
		return nil
	}
	for i, rule := range allow.Content {
		if rule.Kind != yaml.MappingNode {
			continue
		}
		for j := 0; j+1 < len(rule.Content); j += 2 {
			key := rule.Content[j]
			if msg, ok := p.retiredFields[key.Value]; ok {
				return fmt.Errorf("line %d: spec.%s.allow[%d].%s: %s", key.Line, p.name, i, key.Value, msg)
			}
		}
	}
	return nil
}
