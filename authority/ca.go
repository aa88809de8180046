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
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"golang.org/x/crypto/ssh"
)

// Names of the CAs in the store. Each serves one purpose: a certificate
// signed by one is never accepted where another's is expected.
const (
	caSSHUser = "ssh-user"
	caSSHHost = "ssh-host"
	// caTLS signs the authority's servers, identity outputs' tls.crt (CN =
	// bot) and admin identities.
	caTLS = "tls"
	// caDatabaseClient signs database outputs' client certificates (CN =
	// database user): the CA a database server trusts.
	caDatabaseClient = "database-client"
	// caDatabaseServer signs database servers' certificates (mbot sign
	// --format postgres|mysql): the CA database outputs check servers by.
	caDatabaseServer = "database-server"
	// caKubernetesClient signs kubernetes outputs' client certificates: the
	// API server's --client-ca-file.
	caKubernetesClient = "kubernetes-client"
	// caSPIFFE signs application outputs' X.509-SVIDs.
	caSPIFFE = "spiffe"
	// caJWT is the ES256 key that signs workload-identity-jwt outputs' JWT-SVIDs.
	caJWT = "jwt"
)

// X509CA is one X.509 certificate authority.
type X509CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// CertPEM is the CA certificate as handed out.
	CertPEM []byte
}

// x509CAs are the X.509 CAs the authority creates on first start: one line
// per CA. The extended key usages of a CA certificate bound those of what
// it signs (Go, OpenSSL and the Kubernetes API server check it), and its
// name constraints bound the names.
var x509CAs = []struct {
	name, title string
	ekus        []x509.ExtKeyUsage
	// permittedURIs, when set, confines URI SANs to the cluster's domain.
	permittedURIs bool
	field         func(*CAs) **X509CA
}{
	{caTLS, "TLS", nil, false, func(c *CAs) **X509CA { return &c.TLS }},
	{caDatabaseClient, "database client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false, func(c *CAs) **X509CA { return &c.DatabaseClient }},
	{caDatabaseServer, "database server", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, false, func(c *CAs) **X509CA { return &c.DatabaseServer }},
	{caKubernetesClient, "Kubernetes client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false, func(c *CAs) **X509CA { return &c.KubernetesClient }},
	{caSPIFFE, "SPIFFE", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, true, func(c *CAs) **X509CA { return &c.SPIFFE }},
}

// CAs are the authority's certificate authorities, one per purpose.
type CAs struct {
	SSHUser ssh.Signer
	SSHHost ssh.Signer
	// TLS, and its parts below as the authority's code has long used them.
	TLS     *X509CA
	TLSCert *x509.Certificate
	TLSKey  crypto.Signer
	// TLSCertPEM is the TLS CA certificate as handed to clients (ca.crt).
	TLSCertPEM []byte

	DatabaseClient   *X509CA
	DatabaseServer   *X509CA
	KubernetesClient *X509CA
	SPIFFE           *X509CA
	// JWT signs JWT-SVIDs (ES256); JWTKeyID is its kid, the RFC 7638
	// thumbprint of its public key.
	JWT      *ecdsa.PrivateKey
	JWTKeyID string

	// clusterName is the SPIFFE trust domain of the bundle (SPIFFEBundle).
	clusterName string
}

// LoadCAs reads the CAs from the store, creating any that is missing. The
// store resolves concurrent first starts: whichever CA is stored first wins.
func LoadCAs(ctx context.Context, st store.Store, clusterName string) (*CAs, error) {
	cas := CAs{clusterName: clusterName}
	var err error
	if cas.SSHUser, err = loadSSHCA(ctx, st, caSSHUser); err != nil {
		return nil, err
	}
	if cas.SSHHost, err = loadSSHCA(ctx, st, caSSHHost); err != nil {
		return nil, err
	}
	for _, c := range x509CAs {
		ca, err := loadX509CA(ctx, st, c.name, func() ([]byte, error) {
			return newX509CA(clusterName, c.title, c.ekus, c.permittedURIs)
		})
		if err != nil {
			return nil, err
		}
		*c.field(&cas) = ca
	}
	cas.TLSCert, cas.TLSKey, cas.TLSCertPEM = cas.TLS.Cert, cas.TLS.Key, cas.TLS.CertPEM
	if err := cas.loadJWT(ctx, st); err != nil {
		return nil, err
	}
	return &cas, nil
}

func loadSSHCA(ctx context.Context, st store.Store, name string) (ssh.Signer, error) {
	key, err := loadKey(ctx, st, name, func() (crypto.Signer, error) {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		return key, err
	})
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromSigner(key)
}

func (c *CAs) loadJWT(ctx context.Context, st store.Store) error {
	key, err := loadKey(ctx, st, caJWT, func() (crypto.Signer, error) {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	})
	if err != nil {
		return err
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return fmt.Errorf("loading the %s key: it is a %T, not an ECDSA P-256 key", caJWT, key)
	}
	c.JWT, c.JWTKeyID = ec, JWKThumbprint(&ec.PublicKey)
	return nil
}

// loadKey reads a CA that is a bare private key, creating it when missing.
func loadKey(ctx context.Context, st store.Store, name string, generate func() (crypto.Signer, error)) (crypto.Signer, error) {
	material, err := st.CA(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		key, gerr := generate()
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
	return key, nil
}

// loadX509CA reads an X.509 CA (certificate and key PEM), creating it when missing.
func loadX509CA(ctx context.Context, st store.Store, name string, create func() ([]byte, error)) (*X509CA, error) {
	material, err := st.CA(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		var created []byte
		if created, err = create(); err == nil {
			material, err = st.CreateCA(ctx, name, created)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("loading the %s CA: %w", name, err)
	}
	ca := &X509CA{}
	for rest := material; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			if ca.Cert, err = x509.ParseCertificate(block.Bytes); err != nil {
				return nil, fmt.Errorf("loading the %s CA: %w", name, err)
			}
			ca.CertPEM = pem.EncodeToMemory(block)
		case "PRIVATE KEY":
			if ca.Key, err = parsePrivateKey(pem.EncodeToMemory(block)); err != nil {
				return nil, fmt.Errorf("loading the %s CA: %w", name, err)
			}
		}
	}
	if ca.Cert == nil || ca.Key == nil {
		return nil, fmt.Errorf("loading the %s CA: the stored material lacks the certificate or the key", name)
	}
	return ca, nil
}

func newX509CA(clusterName, title string, ekus []x509.ExtKeyUsage, permittedURIs bool) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: clusterName + " mbot " + title + " CA", Organization: []string{clusterName}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           ekus,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if permittedURIs {
		tmpl.PermittedURIDomains = []string{clusterName}
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

// JWK is the public half of the JWT signing key as a JSON Web Key.
func (c *CAs) JWK() map[string]string {
	x, y := ecPoint(&c.JWT.PublicKey)
	return map[string]string{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": c.JWTKeyID, "x": x, "y": y}
}

// ecPoint is a P-256 public key's coordinates, base64url.
func ecPoint(k *ecdsa.PublicKey) (x, y string) {
	pub, err := k.ECDH()
	if err != nil {
		panic(err) // a P-256 key loaded by loadJWT always converts
	}
	b := pub.Bytes() // 0x04 || X || Y
	return b64(b[1:33]), b64(b[33:65])
}

// JWKThumbprint is the RFC 7638 thumbprint of a P-256 public key, base64url.
func JWKThumbprint(k *ecdsa.PublicKey) string {
	// RFC 7638: the required members in lexicographic order, no whitespace.
	x, y := ecPoint(k)
	canon := fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}`, x, y)
	sum := sha256.Sum256([]byte(canon))
	return b64(sum[:])
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

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
