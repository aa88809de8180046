package authority

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"golang.org/x/crypto/ssh"
)

// Names of the CAs in the store.
const (
	caSSHUser = "ssh-user"
	caSSHHost = "ssh-host"
	caTLS     = "tls"
)

// CAs are the authority's three certificate authorities.
type CAs struct {
	SSHUser ssh.Signer
	SSHHost ssh.Signer
	TLSCert *x509.Certificate
	TLSKey  crypto.Signer
	// TLSCertPEM is the TLS CA certificate as handed to clients (ca.crt).
	TLSCertPEM []byte
}

// LoadCAs reads the CAs from the store, creating any that is missing. The
// store resolves concurrent first starts: whichever CA is stored first wins.
func LoadCAs(ctx context.Context, st *store.Store, clusterName string) (*CAs, error) {
	var cas CAs
	var err error
	if cas.SSHUser, err = loadSSHCA(ctx, st, caSSHUser); err != nil {
		return nil, err
	}
	if cas.SSHHost, err = loadSSHCA(ctx, st, caSSHHost); err != nil {
		return nil, err
	}
	if err := cas.loadTLS(ctx, st, clusterName); err != nil {
		return nil, err
	}
	return &cas, nil
}

func loadSSHCA(ctx context.Context, st *store.Store, name string) (ssh.Signer, error) {
	material, err := st.CA(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		_, key, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, gerr
		}
		der, merr := x509.MarshalPKCS8PrivateKey(key)
		if merr != nil {
			return nil, merr
		}
		material, err = st.CreateCA(ctx, name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	if err != nil {
		return nil, fmt.Errorf("loading the %s CA: %w", name, err)
	}
	key, err := parsePrivateKey(material)
	if err != nil {
		return nil, fmt.Errorf("loading the %s CA: %w", name, err)
	}
	return ssh.NewSignerFromSigner(key)
}

func (c *CAs) loadTLS(ctx context.Context, st *store.Store, clusterName string) error {
	material, err := st.CA(ctx, caTLS)
	if errors.Is(err, store.ErrNotFound) {
		var created []byte
		if created, err = newTLSCA(clusterName); err == nil {
			material, err = st.CreateCA(ctx, caTLS, created)
		}
	}
	if err != nil {
		return fmt.Errorf("loading the TLS CA: %w", err)
	}
	var certPEM []byte
	for rest := material; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			if c.TLSCert, err = x509.ParseCertificate(block.Bytes); err != nil {
				return fmt.Errorf("loading the TLS CA: %w", err)
			}
			certPEM = pem.EncodeToMemory(block)
		case "PRIVATE KEY":
			if c.TLSKey, err = parsePrivateKey(pem.EncodeToMemory(block)); err != nil {
				return fmt.Errorf("loading the TLS CA: %w", err)
			}
		}
	}
	if c.TLSCert == nil || c.TLSKey == nil {
		return errors.New("loading the TLS CA: the stored material lacks the certificate or the key")
	}
	c.TLSCertPEM = certPEM
	return nil
}

func newTLSCA(clusterName string) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: clusterName + " mbot TLS CA", Organization: []string{clusterName}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...), nil
}

func parsePrivateKey(material []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(material)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	return signer, nil
}

// Pin is the CA pin clients pass as --ca-pin: sha256 of the TLS CA's SubjectPublicKeyInfo.
func (c *CAs) Pin() string { return CAPin(c.TLSCert) }

// CAPin computes the pin of a CA certificate.
func CAPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// AuthorizedKey returns a CA's public key as one authorized_keys line.
func AuthorizedKey(s ssh.Signer) string {
	return string(ssh.MarshalAuthorizedKey(s.PublicKey()))
}

// randomSerial returns a positive 128-bit certificate serial number.
func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n.Add(n, big.NewInt(1))
}
