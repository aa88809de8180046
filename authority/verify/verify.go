// Package verify is the authority's half of each join method: it checks a
// proof (signature, issuer, audience, lifetime) and turns it into the
// identifying claims that a join token's allow rules are matched against.
// Each platform is one file; the OIDC-based ones share oidc.go.
package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mbot-dev/mbot/authority/policy"
	"gopkg.in/yaml.v3"
)

// Leeway is the clock skew tolerated on exp, nbf and iat.
const Leeway = time.Minute

// Admission is what a verified proof establishes.
type Admission struct {
	Claims policy.Claims
	// ProofID identifies the proof for replay refusal.
	ProofID string
	// UsableUntil is when the proof stops being acceptable, leeway included;
	// its replay record must be kept until then.
	UsableUntil time.Time
	// Advance, when set, is called once the join's certificates are
	// signed and before it is recorded: a method whose proofs carry state
	// (bound_keypair's join sequence) commits it there, so that a join
	// refused for another reason leaves the state as it was. An error
	// refuses the join.
	Advance func(ctx context.Context) error
}

// Method is the server half of one join method.
type Method interface {
	Name() string
	// Compile reads the method's section of join token tokenName (nil when
	// absent) and returns the verifier for it. Errors name the line.
	Compile(tokenName string, section *yaml.Node, env *Env) (Verifier, error)
}

// Verifier checks proofs for one join token.
type Verifier interface {
	Verify(ctx context.Context, proof string) (*Admission, error)
	// Rules are the join token's allow rules.
	Rules() []policy.AllowRule
}

// UnverifiedClaimer is a Verifier that can read the claims of a proof it
// refused, for the audit record only (see oidcVerifier.UnverifiedClaims).
type UnverifiedClaimer interface {
	UnverifiedClaims(proof string) policy.Claims
}

// Env is what verification needs from the authority.
type Env struct {
	// Audience is the authority's own audience (default: the cluster name).
	Audience string
	// HTTPClient fetches discovery documents and keys.
	HTTPClient *http.Client
	// Now is the clock; tests move it.
	Now func() time.Time
	// Outbound bounds the calls made to other services to judge a proof
	// (outbound.go); nil means the defaults.
	Outbound *Outbound
	// Keypairs keeps the challenges and join sequences of bound_keypair
	// join tokens; without it, that method refuses every join.
	Keypairs KeypairStore
	// ChallengeKey authenticates bound_keypair challenges (HMAC-SHA256):
	// the same on every replica of the authority, which can then check a
	// challenge another issued without storing it. Without it, that
	// method refuses every challenge.
	ChallengeKey []byte
	// Observe, if set, is told of every call made to another service to
	// judge a proof (CallSTS, CallTokenReview, CallOIDCDiscovery,
	// CallJWKS): how long it took and whether it failed. The authority
	// turns it into metrics.
	Observe func(call string, took time.Duration, err error)

	outboundMu sync.Mutex // guards setting the default Outbound
	issuers    issuers
}

// The outbound calls Observe is told of.
const (
	CallSTS           = "sts"
	CallTokenReview   = "tokenreview"
	CallOIDCDiscovery = "oidc_discovery"
	CallJWKS          = "jwks"
)

// observe tells Observe of a call that started at start.
func (e *Env) observe(call string, start time.Time, err error) {
	if e.Observe != nil {
		e.Observe(call, time.Since(start), err)
	}
}

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// Methods are every join method the authority supports, by name.
var Methods = map[string]Method{}

func register(m Method) { Methods[m.Name()] = m }

// MethodNames lists the supported methods in a stable order.
func MethodNames() []string {
	names := make([]string, 0, len(Methods))
	for n := range Methods {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// checkKeys refuses keys of a mapping that are not in allowed.
func checkKeys(n *yaml.Node, where string, allowed []string) error {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: %s must be a mapping", n.Line, where)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !slices.Contains(allowed, k.Value) {
			return fmt.Errorf("line %d: %s.%s is not a known field; known fields: %s", k.Line, where, k.Value, strings.Join(allowed, ", "))
		}
	}
	return nil
}

// firstSegment pins an owner written as the first sep-ended part after
// prefix: firstSegment("", "/") accepts acme/app and acme/*, not */app.
func firstSegment(prefix, sep string) func(string) bool { return segments(prefix, sep, 1) }

// segments pins an owner written as the first n sep-ended parts after prefix.
func segments(prefix, sep string, n int) func(string) bool {
	return func(p string) bool { return policy.OwnerLiteral(p, prefix, sep, n) }
}

// anyOf pins an owner when any of pins does.
func anyOf(pins ...func(string) bool) func(string) bool {
	return func(p string) bool {
		for _, pin := range pins {
			if pin(p) {
				return true
			}
		}
		return false
	}
}

// checkRemoteURL refuses a URL the authority would fetch (an issuer, its
// keys, an STS endpoint) unless it is https://. Plain http:// is allowed
// only to a loopback address, where simulators run in tests: anywhere else
// whoever is on the path could serve their own keys.
func checkRemoteURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil {
		return fmt.Errorf("%q is not an https:// URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q: plain http is allowed only for a loopback address (127.0.0.0/8, ::1, localhost); use https", s)
	}
	return fmt.Errorf("%q: the scheme must be https", s)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// numberOrText is a claim that one issuer sends as a JSON string and
// another as a number (ids); either way it is kept as its text.
type numberOrText string

func (n *numberOrText) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*n = numberOrText(s)
		return nil
	}
	var num json.Number
	if err := json.Unmarshal(data, &num); err != nil {
		return fmt.Errorf("neither a string nor a number: %s", data)
	}
	*n = numberOrText(integer(num))
	return nil
}
