package identity

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
)

// PathRenew is where a daemon that joined with a single-use secret (token
// method) renews its certificates with its current identity, over mTLS,
// instead of a new secret.
const PathRenew = "/v1/renew"

// RenewRequest asks for new certificates on new keys, like a join without
// a proof: the client certificate presented on the connection is the proof.
type RenewRequest struct {
	TTLSeconds int64           `json:"ttl_seconds,omitempty"`
	Outputs    []OutputRequest `json:"outputs"`
}

// OIDLineage identifies the X.509 extension that places a bot certificate
// in its renewal chain. It is on an unregistered private arc (1.3.9999,
// where Teleport keeps its own extensions too) and never critical, so other
// TLS stacks ignore it.
var OIDLineage = asn1.ObjectIdentifier{1, 3, 9999, 1107, 1}

// Lineage says which token join a certificate descends from and how many
// renewals lie between them, as Teleport's generation counter does: the
// authority accepts a renewal only from the current generation, so a copy
// of an identity that was renewed since gives itself away.
type Lineage struct {
	JoinToken string
	// Chain is random per token join, so that a join token removed and
	// created again under the same name starts an unrelated chain.
	Chain string
	// Generation is 1 for the join's own certificates and grows by one per renewal.
	Generation uint64
}

type lineageASN1 struct {
	JoinToken  string `asn1:"utf8"`
	Chain      string `asn1:"utf8"`
	Generation int64
}

// Extension encodes l for a certificate template's ExtraExtensions.
func (l Lineage) Extension() (pkix.Extension, error) {
	der, err := asn1.Marshal(lineageASN1{JoinToken: l.JoinToken, Chain: l.Chain, Generation: int64(l.Generation)})
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: OIDLineage, Value: der}, nil
}

// ErrNoLineage is returned for a certificate without the lineage
// extension: one from a join that renews by joining again.
var ErrNoLineage = errors.New("the certificate carries no renewal lineage")

// LineageOf reads the lineage extension of cert.
func LineageOf(cert *x509.Certificate) (Lineage, error) {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(OIDLineage) {
			continue
		}
		var v lineageASN1
		rest, err := asn1.Unmarshal(ext.Value, &v)
		if err != nil || len(rest) > 0 || v.Generation < 1 || v.JoinToken == "" || v.Chain == "" {
			return Lineage{}, fmt.Errorf("the certificate's renewal lineage extension is malformed")
		}
		return Lineage{JoinToken: v.JoinToken, Chain: v.Chain, Generation: uint64(v.Generation)}, nil
	}
	return Lineage{}, ErrNoLineage
}
