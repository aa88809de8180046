package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"time"
)

// Paths of trusted clusters (SPEC §8).
const (
	// PathClusterCA serves an authority's TLS CA bundle: what a leaf that
	// trusts it checks root identities against.
	PathClusterCA = "/v1/cluster/ca"
	// PathExchange is a leaf's exchange of a root identity for leaf certificates.
	PathExchange = "/v1/exchange"
	// PathTunnel is where a leaf attaches its tunnel to the root.
	PathTunnel = "/v1/clusters/tunnel"
	// PathTunnelLocks is served by the leaf on its tunnel: the root's bot locks.
	PathTunnelLocks = "/v1/tunnel/locks"
)

// PathRelay is the root's relay of an exchange to leaf over its tunnel.
func PathRelay(leaf string) string { return "/v1/clusters/" + url.PathEscape(leaf) + "/exchange" }

// TunnelSPIFFEPath is the path of the one URI SAN of a leaf's tunnel
// certificate, spiffe://<leaf cluster_name>/mbot/cluster-tunnel: the
// identity a root checks a tunnel by. No bot (/bot/<name>, or
// /mbot/cluster/<root>/bot/<name> when exchanged), user (/user/<name>) or
// admin (/admin/<name>) certificate can carry it, since names hold no "/".
const TunnelSPIFFEPath = "/mbot/cluster-tunnel"

// ReservedSPIFFEPrefix starts the SPIFFE ID paths an authority names
// itself (tunnels, exchanged identities): no role grants one to a bot.
const ReservedSPIFFEPrefix = "/mbot/"

// ExchangedSPIFFEPath is the SPIFFE ID path of bot of root cluster root
// on the leaf that exchanged its root identity,
// /mbot/cluster/<root>/bot/<bot>: in the leaf's trust domain, never the
// /bot/<bot> of the leaf's own bot of that name. root and bot are names
// (CheckName), so each is one path segment.
func ExchangedSPIFFEPath(root, bot string) string {
	return ReservedSPIFFEPrefix + "cluster/" + root + "/bot/" + bot
}

// ExchangedSubject is the CN of an exchanged identity's certificate and
// the name its SSH key ID gives, <root>/<bot>: a bot's own name holds no "/".
func ExchangedSubject(root, bot string) string { return root + "/" + bot }

// ExchangedOrganization is the O of an exchanged identity's certificate,
// mbot-root:<root>, where the leaf's own bots have the leaf's cluster name
// (which holds no ":").
func ExchangedOrganization(root string) string { return "mbot-root:" + root }

// TunnelProtocol is the Upgrade token of the tunnel: HTTP/2 with the root
// as the client, the leaf as the server.
const TunnelProtocol = "mbot-tunnel/1"

// ExchangeWindow is how far an exchange's time may be from the leaf's clock.
const ExchangeWindow = 5 * time.Minute

// ClusterCAResponse is an authority's TLS CA bundle.
type ClusterCAResponse struct {
	ClusterName string `json:"cluster_name"`
	// TLSCA is the PEM bundle of every TLS CA certificate whose bot
	// identities the authority issues or still honours.
	TLSCA string `json:"tls_ca"`
	// SSHHostCA is the SSH host CA public keys in authorized_keys format,
	// one a line: what a root checks a leaf's answers relayed down its
	// tunnel by, with TLSCA (a leaf announces them over the pinned tunnel).
	SSHHostCA string `json:"ssh_host_ca,omitempty"`
}

// ExchangeRequest is a root identity's request for leaf certificates. The
// signature is inside the body, over Payload as sent, made with the key of
// the root-issued certificate: the same body is valid sent straight to the
// leaf or relayed unchanged by the root, and whoever relays it cannot
// change what it asks for nor use what it gets (the new keys' private
// halves never leave the client).
type ExchangeRequest struct {
	// Payload is an ExchangePayload as JSON.
	Payload json.RawMessage `json:"payload"`
	// Chain is the root-issued certificate chain (tls.crt), leaf first, as PEM.
	Chain string `json:"chain"`
	// Signature is over Payload with the certificate's key (ECDSA: SHA-256, ASN.1).
	Signature []byte `json:"signature"`
}

// ExchangePayload is what an exchange asks for, bound to one leaf, one
// moment and one nonce.
type ExchangePayload struct {
	// Cluster is the leaf's cluster_name: a request for one leaf is no
	// good at another.
	Cluster    string          `json:"cluster"`
	Time       time.Time       `json:"time"`
	Nonce      string          `json:"nonce"`
	TTLSeconds int64           `json:"ttl_seconds,omitempty"`
	Outputs    []OutputRequest `json:"outputs"`
}

// NewExchange signs p with key, the private key of chainPEM's first certificate.
func NewExchange(p *ExchangePayload, chainPEM string, key crypto.Signer) (*ExchangeRequest, error) {
	if p.Nonce == "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		p.Nonce = hex.EncodeToString(b)
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var sig []byte
	switch key.Public().(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey:
		sum := sha256.Sum256(payload)
		sig, err = key.Sign(rand.Reader, sum[:], crypto.SHA256)
	case ed25519.PublicKey:
		sig, err = key.Sign(rand.Reader, payload, crypto.Hash(0))
	default:
		return nil, fmt.Errorf("a %T key cannot sign an exchange", key.Public())
	}
	if err != nil {
		return nil, fmt.Errorf("signing the exchange: %w", err)
	}
	return &ExchangeRequest{Payload: payload, Chain: chainPEM, Signature: sig}, nil
}

// CheckExchangeSignature checks that sig over payload was made with cert's key.
func CheckExchangeSignature(cert *x509.Certificate, payload, sig []byte) error {
	var algo x509.SignatureAlgorithm
	switch cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		algo = x509.ECDSAWithSHA256
	case *rsa.PublicKey:
		algo = x509.SHA256WithRSA
	case ed25519.PublicKey:
		algo = x509.PureEd25519
	default:
		return fmt.Errorf("the certificate's %T key cannot sign an exchange", cert.PublicKey)
	}
	return cert.CheckSignature(algo, payload, sig)
}

// LockView is the root's bot locks as pushed down a tunnel.
type LockView struct {
	// Locked maps each locked bot of the root to why.
	Locked map[string]string `json:"locked"`
	// Instances maps each locked bot instance (renewal chain) of the root
	// to why: a root identity of that chain is refused as on the root.
	Instances map[string]string `json:"instances,omitempty"`
	// Locks are every lock of the root that an exchange of its identities
	// can meet (bot, bot_instance, cert, claim and role locks), with why
	// and until when; Locked and Instances hold the bot and instance
	// locks again for leaves that read only those.
	Locks []LockEntry `json:"locks,omitempty"`
}

// LockEntry is one lock of a root as pushed to its leaves.
type LockEntry struct {
	Kind     string    `json:"kind"`
	Target   string    `json:"target"`
	Reason   string    `json:"reason"`
	Since    time.Time `json:"locked_since"`
	Expires  time.Time `json:"expires,omitzero"`
	LockedBy string    `json:"locked_by"`
	// Serials are, for a claim or join_token lock, the root's unexpired
	// identity certificates it covers (tls:HEX), which the leaf refuses:
	// a root certificate carries neither its join's claims nor its join
	// token. A leaf from before them ignores the lock.
	Serials []string `json:"serials,omitempty"`
}
