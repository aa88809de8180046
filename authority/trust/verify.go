package trust

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// maxChain bounds the certificates of an exchange's chain.
const maxChain = 4

// Exchanger is who an exchange comes from, as its verified root
// certificate says.
type Exchanger struct {
	// RootCluster is the cluster_name of the root that issued the certificate.
	RootCluster string
	Bot         string
	// Roles are the root roles on the certificate.
	Roles    []string
	NotAfter time.Time
	Serial   string
	// Instance is the root's bot instance (renewal chain) the certificate
	// belongs to, for a token join that renews; "" otherwise.
	Instance string
	// Claims are the identifying claims of the root's join the
	// certificate carries (provenance extensions), by audit name.
	Claims map[string]string
}

// ProofID identifies the exchange for replay refusal: one signed payload
// is accepted once.
func ProofID(req *identity.ExchangeRequest) string {
	sum := sha256.Sum256(req.Payload)
	return "exchange:" + hex.EncodeToString(sum[:])
}

// Presented reads the chain's first certificate without verifying it: it
// says which root the request claims to come from (to pick the trusted
// cluster whose CA verifies it) and who, for the audit record of a refusal.
func Presented(req *identity.ExchangeRequest) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	rest := []byte(req.Chain)
	for len(chain) <= maxChain {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, identity.Errorf(identity.CodeExchangeInvalid, "the exchange's chain does not parse (%s); send the tls.crt of the root identity as it was written",
				identity.Quote(identity.Truncate(err.Error(), 120)))
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 || len(chain) > maxChain {
		return nil, identity.Errorf(identity.CodeExchangeInvalid, "the exchange carries %d certificates; send the tls.crt of the root identity (1 to %d PEM certificates)", len(chain), maxChain)
	}
	return chain, nil
}

// ClaimedRoot is the cluster a bot certificate names in its SPIFFE ID
// (spiffe://<cluster>/bot/<bot>), and the bot.
func ClaimedRoot(cert *x509.Certificate) (cluster, bot string) {
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			if b, ok := strings.CutPrefix(u.Path, "/bot/"); ok && b != "" {
				return u.Host, b
			}
		}
	}
	return "", ""
}

// VerifyOptions are what an exchange is verified against.
type VerifyOptions struct {
	// Roots are the root's TLS CA certificates.
	Roots       *x509.CertPool
	RootCluster string
	// LeafCluster is this authority's cluster_name.
	LeafCluster string
	Now         time.Time
}

// Verify checks an exchange: the chain up to the root's TLS CA, a bot
// certificate of that root, current; the signature over the payload by
// its key; the payload for this leaf and made within ExchangeWindow.
func Verify(req *identity.ExchangeRequest, o VerifyOptions) (*Exchanger, *identity.ExchangePayload, error) {
	chain, err := Presented(req)
	if err != nil {
		return nil, nil, err
	}
	cert := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	// Expiry is checked apart, to say so.
	if _, err := cert.Verify(x509.VerifyOptions{Roots: o.Roots, Intermediates: inter, CurrentTime: cert.NotBefore.Add(time.Second),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, nil, identity.Errorf(identity.CodeExchangeInvalid, "certificate %s is not issued by the TLS CA of root cluster %s (%s); present the tls.crt of an identity issued by that root",
			identity.Quote(identity.Truncate(cert.Subject.CommonName, 64)), o.RootCluster, identity.Quote(identity.Truncate(err.Error(), 160)))
	}
	cluster, bot := ClaimedRoot(cert)
	if cluster != o.RootCluster || identity.CheckName("bot", bot) != nil {
		return nil, nil, identity.Errorf(identity.CodeExchangeInvalid, "certificate %s is not a bot identity of root cluster %s; exchange the tls.crt of the bot's identity output",
			identity.Quote(identity.Truncate(cert.Subject.CommonName, 64)), o.RootCluster)
	}
	switch {
	case o.Now.After(cert.NotAfter):
		return nil, nil, identity.Errorf(identity.CodeRootIdentityExpired, "the root identity of bot %q expired at %s; join the root again (mbot issue), then exchange",
			bot, cert.NotAfter.UTC().Format(time.RFC3339))
	case o.Now.Before(cert.NotBefore):
		return nil, nil, identity.Errorf(identity.CodeExchangeInvalid, "the root identity of bot %q is not valid before %s; check the clocks of the root and leaf authorities",
			bot, cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if err := identity.CheckExchangeSignature(cert, req.Payload, req.Signature); err != nil {
		return nil, nil, identity.Errorf(identity.CodeExchangeInvalid, "the exchange's signature does not verify with the key of bot %q's root certificate; sign the payload with the tls.key of the same identity as tls.crt",
			bot)
	}
	var p identity.ExchangePayload
	if err := json.Unmarshal(req.Payload, &p); err != nil {
		return nil, nil, identity.Errorf(identity.CodeBadRequest, "the exchange's payload is not an exchange payload: %s", identity.Quote(identity.Truncate(err.Error(), 160)))
	}
	if p.Cluster != o.LeafCluster {
		return nil, nil, identity.Errorf(identity.CodeExchangeInvalid, "this exchange is for cluster %s, but this is cluster %s; send it to the leaf it names (check cluster: of the output and leaf_clusters in mbot.yaml)",
			identity.Quote(identity.Truncate(p.Cluster, 64)), o.LeafCluster)
	}
	if d := o.Now.Sub(p.Time); d > identity.ExchangeWindow || d < -identity.ExchangeWindow {
		return nil, nil, identity.Errorf(identity.CodeExchangeExpired, "the exchange was made at %s, more than %s from this leaf's clock (%s); make a new one and check the clocks",
			p.Time.UTC().Format(time.RFC3339), identity.ExchangeWindow, o.Now.UTC().Format(time.RFC3339))
	}
	if len(p.Nonce) < 16 || len(p.Nonce) > 128 {
		return nil, nil, identity.Errorf(identity.CodeBadRequest, "the exchange's nonce must be 16 to 128 characters")
	}
	var instance string
	if lineage, err := identity.LineageOf(cert); err == nil {
		instance = lineage.Chain
	}
	return &Exchanger{RootCluster: cluster, Bot: bot, Roles: cert.Subject.OrganizationalUnit, NotAfter: cert.NotAfter,
		Serial: fmt.Sprintf("%X", cert.SerialNumber), Instance: instance}, &p, nil
}
