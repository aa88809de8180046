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
	// CertPEM is what servers and clients are to trust, as handed out: the
	// CA certificate and, while the CA is rotated, the other one (rotation.go).
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
	// TLSCertPEM is the TLS CA certificate as handed to clients (ca.crt):
	// both CAs while the TLS CA is rotated.
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
	kek         *KEK
	// sets holds each CA by name with, while it is rotated, its successor;
	// the fields above are the ones that sign in the rotation's phase.
	sets      map[string]*caSet
	rotations map[string]store.CARotation
	// servingTLS signs the authority's own serving certificate: the TLS CA
	// clients pinned, until a rotation's update_servers phase.
	servingTLS *X509CA
}

// assign sets the signing fields from the sets, by rotation phase.
func (c *CAs) assign() error {
	var err error
	if c.SSHUser, err = ssh.NewSignerFromSigner(c.sets[caSSHUser].signing().key); err != nil {
		return fmt.Errorf("loading the %s CA: %w", caSSHUser, err)
	}
	if c.SSHHost, err = ssh.NewSignerFromSigner(c.sets[caSSHHost].signing().key); err != nil {
		return fmt.Errorf("loading the %s CA: %w", caSSHHost, err)
	}
	for _, x := range x509CAs {
		set := c.sets[x.name]
		ca := set.signing().x509CA()
		ca.CertPEM = set.trustedPEM()
		*x.field(c) = ca
	}
	c.TLSCert, c.TLSKey, c.TLSCertPEM = c.TLS.Cert, c.TLS.Key, c.TLS.CertPEM
	c.servingTLS = c.sets[caTLS].serving().x509CA()
	c.JWT = c.sets[caJWT].signing().key.(*ecdsa.PrivateKey) // checked by parseCA
	c.JWTKeyID = JWKThumbprint(&c.JWT.PublicKey)
	return nil
}

// LoadCAs reads the CAs from the store, creating any that is missing. The
// store resolves concurrent first starts: whichever CA is stored first wins.
// kek, if set, opens the CA keys and seals those created; nil means keys
// are stored in the clear, and a store holding sealed ones is refused.
func LoadCAs(ctx context.Context, st store.Store, clusterName string, kek *KEK) (*CAs, error) {
	rotations, err := st.CARotations(ctx)
	if err != nil {
		return nil, err
	}
	cas := CAs{clusterName: clusterName, kek: kek, rotations: map[string]store.CARotation{}, sets: map[string]*caSet{}}
	for _, r := range rotations {
		cas.rotations[r.CA] = r
	}
	for _, def := range caDefs {
		set, err := loadCASet(ctx, st, def, clusterName, kek, cas.rotations[def.name])
		if err != nil {
			return nil, err
		}
		cas.sets[def.name] = set
	}
	if err := cas.assign(); err != nil {
		return nil, err
	}
	return &cas, nil
}

// caDef is one of the authority's CAs: how to make a new one.
type caDef struct {
	name string
	// x509 is set for X.509 CAs; the others are bare keys (SSH CAs, JWT).
	x509     *x509CADef
	generate func() (crypto.Signer, error)
	// signsServers is set for CAs that sign only servers' certificates:
	// during a rotation, they switch to the new CA at update_servers.
	signsServers bool
}

type x509CADef struct {
	title string
	ekus  []x509.ExtKeyUsage
	// permittedURIs, when set, confines URI SANs to the cluster's domain.
	permittedURIs bool
}

// caDefs are every CA the authority creates on first start, one per purpose.
var caDefs = func() []caDef {
	ed := func() (crypto.Signer, error) { _, key, err := ed25519.GenerateKey(rand.Reader); return key, err }
	defs := []caDef{{name: caSSHUser, generate: ed}, {name: caSSHHost, generate: ed, signsServers: true}}
	for _, c := range x509CAs {
		defs = append(defs, caDef{name: c.name, x509: &x509CADef{c.title, c.ekus, c.permittedURIs}, signsServers: c.name == caDatabaseServer})
	}
	return append(defs, caDef{name: caJWT, generate: func() (crypto.Signer, error) {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}})
}()

func caDefByName(name string) (caDef, bool) {
	for _, d := range caDefs {
		if d.name == name {
			return d, true
		}
	}
	return caDef{}, false
}

// newCAMaterial makes a new CA of def, as stored (sealed when kek is set).
func newCAMaterial(def caDef, clusterName string, kek *KEK) ([]byte, error) {
	m := &caMaterial{}
	if def.x509 != nil {
		certPEM, key, err := newX509CA(clusterName, def.x509.title, def.x509.ekus, def.x509.permittedURIs)
		if err != nil {
			return nil, err
		}
		m.certPEM, m.key = certPEM, key
	} else {
		key, err := def.generate()
		if err != nil {
			return nil, err
		}
		m.key = key
	}
	der, err := x509.MarshalPKCS8PrivateKey(m.key)
	if err != nil {
		return nil, err
	}
	m.der = der
	return m.encode(def.name, kek), nil
}

// loadCASet reads a CA (creating it when missing) and, while it is being
// rotated, the CA that replaces it.
func loadCASet(ctx context.Context, st store.Store, def caDef, clusterName string, kek *KEK, rot store.CARotation) (*caSet, error) {
	material, err := st.CA(ctx, def.name)
	if errors.Is(err, store.ErrNotFound) {
		var created []byte
		if created, err = newCAMaterial(def, clusterName, kek); err == nil {
			material, err = st.CreateCA(ctx, def.name, created)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("loading the %s CA: %w", def.name, err)
	}
	set := &caSet{def: def, rotation: rot}
	if set.current, err = parseCA(def, material, kek); err != nil {
		return nil, err
	}
	if rot.CA == "" {
		return set, nil
	}
	if material, err = st.CA(ctx, store.NextCAName(def.name)); err != nil {
		return nil, fmt.Errorf("loading the %s CA that rotation phase %s brings in: %w", def.name, rot.Phase, err)
	}
	if set.next, err = parseCA(def, material, kek); err != nil {
		return nil, err
	}
	return set, nil
}

// parseCA reads one stored CA of def, checking that an X.509 CA has its certificate.
func parseCA(def caDef, material []byte, kek *KEK) (*caMaterial, error) {
	m, err := parseCAMaterial(def.name, material, kek, false)
	if err != nil {
		return nil, fmt.Errorf("loading the %s CA: %w", def.name, err)
	}
	if def.x509 != nil && m.cert == nil {
		return nil, fmt.Errorf("loading the %s CA: the stored material lacks the certificate", def.name)
	}
	switch {
	case def.name == caJWT:
		if ec, ok := m.key.(*ecdsa.PrivateKey); !ok || ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("loading the %s key: it is a %T, not an ECDSA P-256 key", caJWT, m.key)
		}
	case def.x509 == nil:
		if _, err := ssh.NewPublicKey(m.key.Public()); err != nil {
			return nil, fmt.Errorf("loading the %s CA: %w", def.name, err)
		}
	}
	return m, nil
}

// newX509CA makes a self-signed CA certificate and its key.
func newX509CA(clusterName, title string, ekus []x509.ExtKeyUsage, permittedURIs bool) ([]byte, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
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
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key, nil
}

// JWK is the public half of the JWT signing key as a JSON Web Key.
func (c *CAs) JWK() map[string]string { return jwk(&c.JWT.PublicKey) }

// JWKs are the JWT keys relying parties are to trust: the signing one and,
// while it is rotated, the other.
func (c *CAs) JWKs() []map[string]string {
	var out []map[string]string
	for _, m := range c.sets[caJWT].trusted() {
		out = append(out, jwk(&m.key.(*ecdsa.PrivateKey).PublicKey))
	}
	return out
}

func jwk(k *ecdsa.PublicKey) map[string]string {
	x, y := ecPoint(k)
	return map[string]string{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": JWKThumbprint(k), "x": x, "y": y}
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

// Pin is the CA pin clients pass as --ca-pin: sha256 of the
// SubjectPublicKeyInfo of the TLS CA that signs the authority's serving
// certificate (the new CA only from a rotation's update_servers phase).
func (c *CAs) Pin() string { return CAPin(c.servingTLS.Cert) }

// TLSRoots are the TLS CA certificates that client certificates are
// checked by: both while the TLS CA is rotated.
func (c *CAs) TLSRoots() []*x509.Certificate {
	var out []*x509.Certificate
	for _, m := range c.sets[caTLS].trusted() {
		out = append(out, m.cert)
	}
	return out
}

// SSHUserCAKeys are the authorized_keys lines of the SSH user CA that sshd
// is to trust (TrustedUserCAKeys): both while it is rotated.
func (c *CAs) SSHUserCAKeys() string { return c.sets[caSSHUser].trustedSSH() }

// SSHHostCAKeys are the authorized_keys lines of the SSH host CA that
// clients are to trust (known_hosts): both while it is rotated.
func (c *CAs) SSHHostCAKeys() string { return c.sets[caSSHHost].trustedSSH() }

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
