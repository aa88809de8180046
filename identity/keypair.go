package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"
)

// ChallengeRequest asks for a challenge to sign for a bound_keypair join.
type ChallengeRequest struct {
	JoinToken string `json:"join_token"`
}

// ChallengeResponse is a single-use nonce bound to the join token, to be
// signed and sent back in a join before Expires.
type ChallengeResponse struct {
	Nonce   string    `json:"nonce"`
	Expires time.Time `json:"expires"`
}

// KeypairProof is the proof of a bound_keypair join, sent as JSON in
// JoinRequest.Proof. Signature is made with the private key of PublicKey
// over KeypairSigned; a rotation also carries NewPublicKey and
// NewSignature, the same bytes signed by the new key. Keys are in
// authorized_keys form, signatures base64 of the SSH wire signature.
type KeypairProof struct {
	Nonce        string `json:"nonce"`
	Sequence     uint64 `json:"sequence"`
	PublicKey    string `json:"public_key"`
	Signature    string `json:"signature"`
	NewPublicKey string `json:"new_public_key,omitempty"`
	NewSignature string `json:"new_signature,omitempty"`
	// RegistrationSecret binds PublicKey as the token's first key.
	RegistrationSecret string `json:"registration_secret,omitempty"`
}

// KeypairSigned is what a bound_keypair join signs: the challenge, the
// join token and the authority's audience it was issued for, the sequence,
// the keys involved, and the output keys the certificates will be for, so
// that a signature cannot be replayed for another request.
func KeypairSigned(joinToken, audience string, p *KeypairProof, outputKeys string) []byte {
	fields := []string{"mbot bound_keypair v1", joinToken, audience, p.Nonce, strconv.FormatUint(p.Sequence, 10),
		p.PublicKey, p.NewPublicKey, outputKeys}
	var b []byte
	for _, f := range fields {
		// Length-prefixed, so that no two field lists sign the same bytes.
		b = fmt.Appendf(b, "%d:%s\n", len(f), f)
	}
	return b
}

// OutputKeysDigest fingerprints the public keys a join or renewal asks
// certificates for.
func OutputKeysDigest(outputs []OutputRequest) string {
	h := sha256.New()
	for _, o := range outputs {
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00", o.Name, o.SSHPublicKey, o.TLSPublicKey)
	}
	return hex.EncodeToString(h.Sum(nil))
}
