package verify

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
	"gopkg.in/yaml.v3"
)

// TokenHashPrefix starts a token join token's secret_hash.
const TokenHashPrefix = "sha256:"

// HashTokenSecret is what a token join token stores instead of its secret.
func HashTokenSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return TokenHashPrefix + hex.EncodeToString(sum[:])
}

// tokenSection is spec.token of a join token of method token. It carries a
// secret's hash and expiry instead of allow rules.
type tokenSection struct {
	SecretHash string `yaml:"secret_hash"`
	Expires    string `yaml:"expires"`
}

type tokenMethod struct{}

func init() { register(tokenMethod{}) }

// TokenMethod is the method of single-use join tokens (mbot tokens add).
const TokenMethod = "token"

func (tokenMethod) Name() string { return TokenMethod }

func (tokenMethod) Compile(tokenName string, section *yaml.Node, env *Env) (Verifier, error) {
	if section == nil {
		return nil, fmt.Errorf("join token %q has method token but no spec.token section; create it with mbot tokens add", tokenName)
	}
	if err := checkKeys(section, "spec.token", []string{"secret_hash", "expires"}); err != nil {
		return nil, err
	}
	var s tokenSection
	if err := section.Decode(&s); err != nil {
		return nil, err
	}
	line := func(field string) int { return fieldLine(section, field) }
	digest, ok := strings.CutPrefix(s.SecretHash, TokenHashPrefix)
	if raw, err := hex.DecodeString(digest); !ok || err != nil || len(raw) != sha256.Size {
		return nil, fmt.Errorf("line %d: spec.token.secret_hash must be %s followed by 64 hex digits (the SHA-256 of the secret); "+
			"mbot tokens add writes it, never put the secret itself here", line("secret_hash"), TokenHashPrefix)
	}
	expires, err := time.Parse(time.RFC3339, s.Expires)
	if err != nil {
		return nil, fmt.Errorf("line %d: spec.token.expires must be an RFC 3339 time such as 2025-06-02T11:30:00Z (%q)", line("expires"), s.Expires)
	}
	// The join path admits only what an allow rule matches; a token admits
	// exactly its own name.
	rules, err := policy.ParseAllowRules(&yaml.Node{Kind: yaml.SequenceNode, Line: section.Line, Content: []*yaml.Node{{
		Kind: yaml.MappingNode, Line: section.Line, Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "join_token"},
			{Kind: yaml.ScalarNode, Value: tokenName, Line: section.Line},
		},
	}}}, []string{"join_token"})
	if err != nil {
		return nil, err
	}
	return &tokenVerifier{name: tokenName, hash: strings.ToLower(s.SecretHash), expires: expires, rules: rules, env: env}, nil
}

type tokenVerifier struct {
	name    string
	hash    string // sha256:<hex>
	expires time.Time
	rules   []policy.AllowRule
	env     *Env
}

func (v *tokenVerifier) Rules() []policy.AllowRule { return v.rules }

// Verify compares the secret's hash in constant time, then the expiry. The
// proof ID is the join token itself, so the join path accepts it once.
func (v *tokenVerifier) Verify(_ context.Context, secret string) (*Admission, error) {
	if subtle.ConstantTimeCompare([]byte(HashTokenSecret(secret)), []byte(v.hash)) != 1 {
		return nil, identity.Errorf(identity.CodeProofInvalid,
			"the secret does not match join token %q; check MBOT_JOIN_SECRET, or have an admin run mbot tokens add, which prints a new one", v.name)
	}
	now := v.env.now()
	if !now.Before(v.expires) {
		return nil, identity.Errorf(identity.CodeProofExpired,
			"join token %q expired at %s (%s ago); have an admin run mbot tokens add for a new one",
			v.name, v.expires.UTC().Format(time.RFC3339), now.Sub(v.expires).Round(time.Second))
	}
	sum := sha256.Sum256([]byte("token\x00" + v.name + "\x00" + v.hash))
	return &Admission{
		Claims:      policy.Claims{"join_token": {v.name}},
		ProofID:     hex.EncodeToString(sum[:]),
		UsableUntil: v.expires,
	}, nil
}

// fieldLine is the line of field in a join token's method section, or the
// section's own when the field is absent: where a message points.
func fieldLine(section *yaml.Node, field string) int {
	if n := resources.Lookup(section, field); n != nil {
		return n.Line
	}
	return section.Line
}
