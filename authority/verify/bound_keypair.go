package verify

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"
)

// BoundKeypairMethod is the join method of runners that hold a private key
// bound to their join token and sign an authority challenge with it.
const BoundKeypairMethod = "bound_keypair"

// ChallengeTTL is how long a bound_keypair challenge may be answered.
const ChallengeTTL = 60 * time.Second

// maxSequence bounds a join sequence, far above any runner's number of
// joins and within what every store engine keeps in a signed integer.
const maxSequence = 1 << 52

// KeypairStore keeps the challenges and the join sequence of bound_keypair
// join tokens (authority/store/keypairs.go).
type KeypairStore interface {
	UseKeypairChallenge(ctx context.Context, joinToken, requester, nonce string, expires time.Time) error
	KeypairBinding(ctx context.Context, joinToken string) (*store.KeypairBinding, error)
	AdvanceKeypair(ctx context.Context, j store.KeypairJoin) error
}

// JoinContext is what a verifier that binds its proof to the request sees
// of the join besides the proof.
type JoinContext struct {
	// OutputKeys is identity.OutputKeysDigest of the request's outputs,
	// which the proof signs.
	OutputKeys string
	// Retry fingerprints the whole request (every output with its type,
	// keys and fields, the TTL) when a retry of it may be answered again:
	// only when every output carries a key the runner keeps, so that an
	// answer lost in transit is worth nothing to anyone else. Empty
	// otherwise: a JWT-SVID or another keyless output is a bearer
	// credential, and presenting the previous sequence for it is a copy.
	Retry string
	// Remote is the caller's address, for the join sequence's records.
	Remote string
}

// RequestVerifier is a Verifier whose proof signs the join request itself
// (bound_keypair): the join path calls VerifyJoin instead of Verify.
type RequestVerifier interface {
	VerifyJoin(ctx context.Context, proof string, jc JoinContext) (*Admission, error)
}

// Challenger hands out challenges for a join token's proofs.
type Challenger interface {
	Challenge(ctx context.Context) (*identity.ChallengeResponse, error)
}

// boundKeypairSection is spec.bound_keypair: the public key the join token
// is bound to, or the hash and expiry of a registration secret whose first
// use binds the runner's key.
type boundKeypairSection struct {
	PublicKey              string `yaml:"public_key"`
	RegistrationSecretHash string `yaml:"registration_secret_hash"`
	RegistrationExpires    string `yaml:"registration_expires"`
}

type boundKeypairMethod struct{}

func init() { register(boundKeypairMethod{}) }

func (boundKeypairMethod) Name() string { return BoundKeypairMethod }

func (boundKeypairMethod) Compile(tokenName string, section *yaml.Node, env *Env) (Verifier, error) {
	if section == nil {
		return nil, fmt.Errorf("join token %q has method bound_keypair but no spec.bound_keypair section; "+
			"set public_key, or create the join token with mbot tokens add --method bound_keypair", tokenName)
	}
	if err := checkKeys(section, "spec.bound_keypair", []string{"public_key", "registration_secret_hash", "registration_expires"}); err != nil {
		return nil, err
	}
	var s boundKeypairSection
	if err := section.Decode(&s); err != nil {
		return nil, err
	}
	line := func(field string) int { return fieldLine(section, field) }
	v := &boundKeypairVerifier{name: tokenName, env: env}
	switch {
	case s.PublicKey != "" && s.RegistrationSecretHash != "":
		return nil, fmt.Errorf("line %d: spec.bound_keypair sets both public_key and registration_secret_hash; bind a key or a registration secret, not both", section.Line)
	case s.PublicKey != "":
		key, err := ParseKeypairPublicKey(s.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("line %d: spec.bound_keypair.public_key: %w", line("public_key"), err)
		}
		v.publicKey = authorizedKey(key)
		v.binding = "key:" + ssh.FingerprintSHA256(key)
	case s.RegistrationSecretHash != "":
		digest, ok := strings.CutPrefix(s.RegistrationSecretHash, TokenHashPrefix)
		if raw, err := hex.DecodeString(digest); !ok || err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("line %d: spec.bound_keypair.registration_secret_hash must be %s followed by 64 hex digits; "+
				"mbot tokens add --method bound_keypair writes it, never put the secret itself here", line("registration_secret_hash"), TokenHashPrefix)
		}
		expires, err := time.Parse(time.RFC3339, s.RegistrationExpires)
		if err != nil {
			return nil, fmt.Errorf("line %d: spec.bound_keypair.registration_expires must be an RFC 3339 time such as 2025-06-02T11:30:00Z (%q)",
				line("registration_expires"), s.RegistrationExpires)
		}
		v.secretHash = strings.ToLower(s.RegistrationSecretHash)
		v.registrationExpires = expires
		v.binding = "secret:" + v.secretHash
	default:
		return nil, fmt.Errorf("line %d: spec.bound_keypair needs public_key (the runner's OpenSSH or PEM public key) or registration_secret_hash "+
			"(mbot tokens add --method bound_keypair prints a registration secret)", section.Line)
	}
	if s.RegistrationExpires != "" && s.RegistrationSecretHash == "" {
		return nil, fmt.Errorf("line %d: spec.bound_keypair.registration_expires goes with registration_secret_hash", line("registration_expires"))
	}
	// As for token joins, the join token admits exactly its own name.
	rules, err := policy.ParseAllowRules(&yaml.Node{Kind: yaml.SequenceNode, Line: section.Line, Content: []*yaml.Node{{
		Kind: yaml.MappingNode, Line: section.Line, Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "join_token"},
			{Kind: yaml.ScalarNode, Value: tokenName, Line: section.Line},
		},
	}}}, []string{"join_token"})
	if err != nil {
		return nil, err
	}
	v.rules = rules
	return v, nil
}

// ParseKeypairPublicKey reads a runner's public key: an authorized_keys
// line (ssh-keygen's .pub) or a PEM PUBLIC KEY (PKIX), Ed25519 or ECDSA.
func ParseKeypairPublicKey(text string) (ssh.PublicKey, error) {
	text = strings.TrimSpace(text)
	var key ssh.PublicKey
	if block, _ := pem.Decode([]byte(text)); block != nil {
		if block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("a PEM %s block is not a public key; give the PUBLIC KEY block or the .pub line of ssh-keygen", identity.Quote(block.Type))
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("the PEM public key does not parse: %s", identity.Quote(identity.Truncate(err.Error(), 200)))
		}
		if key, err = ssh.NewPublicKey(pub); err != nil {
			return nil, fmt.Errorf("the PEM public key: %w", err)
		}
	} else {
		var err error
		if key, _, _, _, err = ssh.ParseAuthorizedKey([]byte(text)); err != nil {
			return nil, errors.New("not an OpenSSH public key (ssh-ed25519 AAAA...) nor a PEM PUBLIC KEY block")
		}
	}
	ck, ok := key.(ssh.CryptoPublicKey)
	if !ok {
		return nil, fmt.Errorf("key type %s is not accepted; use an Ed25519 key or an ECDSA key on P-256, P-384 or P-521", key.Type())
	}
	switch k := ck.CryptoPublicKey().(type) {
	case ed25519.PublicKey:
	case *ecdsa.PublicKey:
		if err := identity.CheckPublicKey(k); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("key type %s is not accepted; use an Ed25519 key or an ECDSA key on P-256, P-384 or P-521", key.Type())
	}
	return key, nil
}

// authorizedKey is key's one-line authorized_keys form, without a comment.
func authorizedKey(key ssh.PublicKey) string {
	return string(bytes.TrimSpace(ssh.MarshalAuthorizedKey(key)))
}

type boundKeypairVerifier struct {
	name string
	// binding names the admin's binding (the key's fingerprint or the
	// secret's hash): the store's sequence starts over when it changes.
	binding string
	// publicKey (authorized_keys form) or secretHash is set.
	publicKey           string
	secretHash          string
	registrationExpires time.Time
	rules               []policy.AllowRule
	env                 *Env
}

func (v *boundKeypairVerifier) Rules() []policy.AllowRule { return v.rules }

// Verify is never called by the join path, which calls VerifyJoin: a
// keypair proof signs the request it comes in.
func (v *boundKeypairVerifier) Verify(context.Context, string) (*Admission, error) {
	return nil, identity.Errorf(identity.CodeBadRequest, "a bound_keypair proof is checked with the join request it signs")
}

func (v *boundKeypairVerifier) store() (KeypairStore, error) {
	if v.env.Keypairs == nil {
		return nil, errors.New("this authority keeps no bound_keypair state (verify.Env.Keypairs is unset)")
	}
	return v.env.Keypairs, nil
}

// Challenge hands out a fresh single-use nonce for this join token. It
// stores nothing: the nonce carries its expiry and a MAC under the key all
// replicas share (Env.ChallengeKey), so that anyone may ask for any
// number without using up the runner's; the join that answers it records
// it once its signature verified (VerifyJoin).
func (v *boundKeypairVerifier) Challenge(ctx context.Context) (*identity.ChallengeResponse, error) {
	key, err := v.challengeKey()
	if err != nil {
		return nil, err
	}
	expires := v.env.now().Add(ChallengeTTL).UTC()
	msg := make([]byte, challengeHead)
	binary.BigEndian.PutUint64(msg, uint64(expires.UnixNano()))
	if _, err := rand.Read(msg[8:]); err != nil {
		return nil, err
	}
	nonce := append(msg, v.challengeMAC(key, msg)...)
	return &identity.ChallengeResponse{Nonce: hex.EncodeToString(nonce), Expires: expires}, nil
}

// A challenge nonce is hex of: its expiry (Unix nanoseconds, 8 bytes), 16
// random bytes, and HMAC-SHA256 over the join token's name, its binding
// (the bound key's fingerprint or the registration secret's hash) and
// those 24 bytes: a challenge of one join token, or of the same token
// before an admin bound another key, answers no other.
const (
	challengeHead = 8 + 16
	challengeLen  = challengeHead + sha256.Size
)

func (v *boundKeypairVerifier) challengeMAC(key, head []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("mbot bound_keypair challenge v1\x00" + v.name + "\x00" + v.binding + "\x00"))
	m.Write(head)
	return m.Sum(nil)
}

func (v *boundKeypairVerifier) challengeKey() ([]byte, error) {
	if len(v.env.ChallengeKey) == 0 {
		return nil, errors.New("this authority has no challenge key (verify.Env.ChallengeKey is unset)")
	}
	return v.env.ChallengeKey, nil
}

// openChallenge checks that nonce is a challenge this authority (any
// replica) issued for this join token, and returns its expiry.
func (v *boundKeypairVerifier) openChallenge(nonce string) (time.Time, error) {
	key, err := v.challengeKey()
	if err != nil {
		return time.Time{}, err
	}
	raw, err := hex.DecodeString(nonce)
	if err != nil || len(raw) != challengeLen || !hmac.Equal(raw[challengeHead:], v.challengeMAC(key, raw[:challengeHead])) {
		return time.Time{}, identity.Errorf(identity.CodeProofInvalid, "join token %q: this authority issued no such challenge for it; ask %s for one with this join token", v.name, identity.PathJoinChallenge)
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(raw))), nil
}

// VerifyJoin checks, in order: the challenge (issued for this join token,
// unexpired, answered once), the key (the bound one, or the first one with
// the registration secret), the signature over the challenge, the request
// and the sequence, a rotation's signature by the new key, and the
// sequence against the store's (an older one locks the join token).
func (v *boundKeypairVerifier) VerifyJoin(ctx context.Context, proof string, jc JoinContext) (*Admission, error) {
	st, err := v.store()
	if err != nil {
		return nil, err
	}
	var p identity.KeypairProof
	dec := json.NewDecoder(strings.NewReader(proof))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil || p.Nonce == "" || p.PublicKey == "" || p.Signature == "" {
		return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q: the proof is not a bound_keypair proof (nonce, sequence, public_key, signature); join with mbot issue --join-method bound_keypair", v.name)
	}
	if p.Sequence > maxSequence {
		return nil, identity.Errorf(identity.CodeBadRequest, "join token %q: sequence %d is beyond any join sequence; restore the .state file beside the key, or have an admin bind the key again", v.name, p.Sequence)
	}
	now := v.env.now()
	challengeExpires, err := v.openChallenge(p.Nonce)
	if err != nil {
		return nil, err
	}
	if !now.Before(challengeExpires) {
		return nil, identity.Errorf(identity.CodeProofExpired, "join token %q: the challenge expired (it may be answered for %s); ask for a new one and answer it at once", v.name, ChallengeTTL)
	}

	cur, err := st.KeypairBinding(ctx, v.name)
	if err != nil {
		return nil, fmt.Errorf("reading the join sequence: %w", err)
	}
	if cur != nil && cur.Binding != v.binding {
		cur = nil // the admin bound another key or secret since: start over
	}
	if cur != nil && cur.Lock != nil {
		return nil, LockedJoinTokenError(v.name, cur.Lock)
	}
	claims := policy.Claims{"join_token": {v.name}}
	var expected string
	switch {
	case cur != nil:
		expected = cur.PublicKey
	case v.publicKey != "":
		expected = v.publicKey
	default:
		// Registration: the secret admits the key the runner presents.
		if p.RegistrationSecret == "" {
			return nil, identity.Errorf(identity.CodeProofInvalid, "join token %q binds the first key registered with its registration secret, and none was presented; "+
				"set MBOT_REGISTRATION_SECRET to the secret mbot tokens add printed", v.name)
		}
		if subtle.ConstantTimeCompare([]byte(HashTokenSecret(p.RegistrationSecret)), []byte(v.secretHash)) != 1 {
			return nil, identity.Errorf(identity.CodeProofInvalid, "the registration secret does not match join token %q; check MBOT_REGISTRATION_SECRET, "+
				"or have an admin run mbot tokens add --method bound_keypair --rotate for a new one", v.name)
		}
		if !now.Before(v.registrationExpires) {
			return nil, identity.Errorf(identity.CodeProofExpired, "the registration secret of join token %q expired at %s; have an admin run mbot tokens add --method bound_keypair --rotate for a new one",
				v.name, v.registrationExpires.UTC().Format(time.RFC3339))
		}
		key, err := ParseKeypairPublicKey(p.PublicKey)
		if err != nil {
			return nil, identity.Errorf(identity.CodeUnsupportedKey, "join token %q: the key to register: %v", v.name, err)
		}
		expected = authorizedKey(key)
		claims["registered"] = []string{"true"}
	}
	signer, err := ParseKeypairPublicKey(p.PublicKey)
	if err != nil || authorizedKey(signer) != expected {
		return nil, identity.Errorf(identity.CodeKeypairMismatch, "join token %q is bound to key %s, but the join was signed by another key (%s); "+
			"use the private key the token is bound to (--keypair-path), or have an admin bind this one (mbot tokens add --method bound_keypair --rotate --public-key FILE)",
			v.name, fingerprintOf(expected), fingerprintOf(p.PublicKey))
	}
	signed := identity.KeypairSigned(v.name, v.env.Audience, &p, jc.OutputKeys)
	if err := verifySSHSignature(signer, signed, p.Signature); err != nil {
		return nil, identity.Errorf(identity.CodeKeypairMismatch, "join token %q: the signature by key %s does not verify over this challenge and request (%v); "+
			"sign with the private key of that public key, as mbot issue --join-method bound_keypair does", v.name, ssh.FingerprintSHA256(signer), err)
	}
	// Recorded only now that the key signed it: a stranger's answers
	// use up nothing.
	switch err := st.UseKeypairChallenge(ctx, v.name, jc.Remote, p.Nonce, challengeExpires); {
	case errors.Is(err, store.ErrChallengeUsed):
		return nil, identity.Errorf(identity.CodeProofReplayed, "join token %q: this challenge was already answered; each is answered once, so ask for a new one (mbot issue does)", v.name)
	case err != nil:
		return nil, fmt.Errorf("using a challenge: %w", err)
	}
	claims["public_key"] = []string{ssh.FingerprintSHA256(signer)}
	claims["sequence"] = []string{strconv.FormatUint(p.Sequence, 10)}
	next := expected
	if p.NewPublicKey != "" {
		newKey, err := ParseKeypairPublicKey(p.NewPublicKey)
		if err != nil {
			return nil, identity.Errorf(identity.CodeUnsupportedKey, "join token %q: the rotated key: %v", v.name, err)
		}
		if authorizedKey(newKey) == expected {
			return nil, identity.Errorf(identity.CodeBadRequest, "join token %q: the rotation names the key it is bound to already; generate a new key to rotate to", v.name)
		}
		if err := verifySSHSignature(newKey, signed, p.NewSignature); err != nil {
			return nil, identity.Errorf(identity.CodeKeypairMismatch, "join token %q: the rotation to key %s is not signed by that key (%v); a rotation is signed by both the old and the new key",
				v.name, ssh.FingerprintSHA256(newKey), err)
		}
		next = authorizedKey(newKey)
		claims["rotated_to"] = []string{ssh.FingerprintSHA256(newKey)}
	}

	j := store.KeypairJoin{JoinToken: v.name, Binding: v.binding, Presented: p.Sequence, PublicKey: expected, NewPublicKey: next,
		Keys: jc.Retry, Remote: jc.Remote}
	advance := func(ctx context.Context) error { return v.advance(ctx, st, j) }
	if cur != nil && p.Sequence < cur.Sequence && (p.Sequence+1 != cur.Sequence || jc.Retry == "" || jc.Retry != cur.LastKeys) {
		// An older sequence, signed by the key, that is not exactly the
		// last join again with keys only its runner holds: a copy. Lock
		// the token now, before anything is signed.
		if err := advance(ctx); err != nil {
			return nil, err
		}
		advance = nil
	}
	sum := sha256.Sum256([]byte("bound_keypair\x00" + v.name + "\x00" + p.Nonce))
	return &Admission{
		Claims:      claims,
		ProofID:     hex.EncodeToString(sum[:]),
		UsableUntil: now.Add(ChallengeTTL + Leeway),
		Advance:     advance,
	}, nil
}

// UnverifiedClaims are the key and sequence a refused proof presented,
// for the audit record: who tried, not who it proves.
func (v *boundKeypairVerifier) UnverifiedClaims(proof string) policy.Claims {
	var p identity.KeypairProof
	if json.Unmarshal([]byte(proof), &p) != nil || p.PublicKey == "" {
		return nil
	}
	c := policy.Claims{"join_token": {v.name}, "public_key": {fingerprintOf(p.PublicKey)}, "sequence": {strconv.FormatUint(p.Sequence, 10)}}
	if p.NewPublicKey != "" {
		c["rotated_to"] = []string{fingerprintOf(p.NewPublicKey)}
	}
	return c
}

// advance moves the join sequence on for an admitted join, or refuses it.
func (v *boundKeypairVerifier) advance(ctx context.Context, st KeypairStore, j store.KeypairJoin) error {
	err := st.AdvanceKeypair(ctx, j)
	var mismatch *store.KeypairMismatch
	switch {
	case err == nil:
		return nil
	case errors.As(err, &mismatch):
		return LockedJoinTokenError(v.name, mismatch.Lock)
	}
	return fmt.Errorf("advancing the join sequence: %w", err)
}

// LockedJoinTokenError is the refusal of a join with a locked join token.
func LockedJoinTokenError(name string, l *store.KeypairLock) error {
	return identity.Errorf(identity.CodeJoinTokenLocked, "join token %q is locked since %s: %s. Every join with it is refused until an admin "+
		"binds a new key (mbot tokens add --name %s --method bound_keypair --rotate [--public-key FILE]), which also ends the copy's use of the old key, "+
		"or, after removing the stray copy, lifts the lock with mbot unlock --join-token %s",
		name, l.Time.Format(time.RFC3339), l.Reason, name, name)
}

// verifySSHSignature checks sig, base64 of an SSH wire signature, by key over data.
func verifySSHSignature(key ssh.PublicKey, data []byte, sig string) error {
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return errors.New("the signature is not base64")
	}
	var s ssh.Signature
	if err := ssh.Unmarshal(raw, &s); err != nil {
		return errors.New("the signature is not an SSH signature")
	}
	if len(s.Rest) > 0 {
		return errors.New("the signature carries trailing data")
	}
	if err := key.Verify(data, &s); err != nil {
		return errors.New("the signature does not verify")
	}
	return nil
}

// fingerprintOf is the SHA256 fingerprint of an authorized_keys line, for
// messages: never the key itself.
func fingerprintOf(authorized string) string {
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(authorized))
	if err != nil {
		return "(not a public key)"
	}
	return ssh.FingerprintSHA256(key)
}
