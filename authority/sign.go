package authority

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"golang.org/x/crypto/ssh"
)

// clockSkew backdates certificates so that a server whose clock is a little
// behind still accepts them.
const clockSkew = time.Minute

// SSHCertRequest describes one SSH certificate.
type SSHCertRequest struct {
	Key        ssh.PublicKey
	KeyID      string
	Principals []string
	NotAfter   time.Time
	Serial     uint64
	// Extensions are a user certificate's permit-* permissions; OpenSSH
	// allows a session only what its certificate lists.
	Extensions map[string]string
}

// SignSSHUser certifies a user key for the given logins.
func (c *CAs) SignSSHUser(r SSHCertRequest) (*ssh.Certificate, error) {
	return signSSH(c.SSHUser, ssh.UserCert, r, r.Extensions)
}

// SignSSHHost certifies a host key for the given host names.
func (c *CAs) SignSSHHost(r SSHCertRequest) (*ssh.Certificate, error) {
	return signSSH(c.SSHHost, ssh.HostCert, r, nil)
}

func signSSH(ca ssh.Signer, certType uint32, r SSHCertRequest, ext map[string]string) (*ssh.Certificate, error) {
	cert := &ssh.Certificate{
		Key:             r.Key,
		Serial:          r.Serial,
		CertType:        certType,
		KeyId:           r.KeyID,
		ValidPrincipals: r.Principals,
		ValidAfter:      uint64(time.Now().Add(-clockSkew).Unix()),
		ValidBefore:     uint64(r.NotAfter.Unix()),
		Permissions:     ssh.Permissions{Extensions: ext},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return nil, fmt.Errorf("signing SSH certificate: %w", err)
	}
	return cert, nil
}

// RandomSSHSerial returns a random non-zero SSH certificate serial.
func RandomSSHSerial() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return binary.BigEndian.Uint64(b[:])&(1<<63-1) | 1
}

// TLSClientRequest describes a bot's X.509 client certificate.
type TLSClientRequest struct {
	PublicKey any
	// Name is the CN, Organization the O, SPIFFEID the one URI SAN.
	Name         string
	Organization string
	SPIFFEID     *url.URL
	Roles        []string
	NotAfter     time.Time
	// Extensions are added as they are (the renewal lineage of token joins).
	Extensions []pkix.Extension
}

// SignTLSClient issues an mTLS client certificate: CN = the bot's name,
// O = its cluster, URI SAN its SPIFFE ID (spiffe://<cluster>/bot/<bot>),
// roles in OU.
func (c *CAs) SignTLSClient(r TLSClientRequest) (*SignedCert, error) {
	return c.signTLS(&x509.Certificate{
		Subject:         pkix.Name{CommonName: r.Name, Organization: []string{r.Organization}, OrganizationalUnit: r.Roles},
		URIs:            []*url.URL{r.SPIFFEID},
		NotAfter:        r.NotAfter,
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ExtraExtensions: r.Extensions,
	}, r.PublicKey)
}

// SignTLSServer issues a server certificate for DNS names and IP addresses.
func (c *CAs) SignTLSServer(pub any, names []string, notAfter time.Time) (*SignedCert, error) {
	tmpl := &x509.Certificate{
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if len(names) > 0 {
		tmpl.Subject = pkix.Name{CommonName: names[0]}
	}
	// A server's certificate comes from the CA that signs the authority's
	// own: during a TLS CA rotation, clients trust the new CA for servers
	// only from update_servers on.
	return c.servingTLS.Sign(tmpl, pub)
}

// SignedCert is a certificate just signed: its DER and the values chosen for
// it, so that callers need not parse back what they built.
type SignedCert struct {
	DER       []byte
	Serial    *big.Int
	NotBefore time.Time
	NotAfter  time.Time
}

// PEM encodes the certificate.
func (s *SignedCert) PEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.DER}))
}

func (c *CAs) signTLS(tmpl *x509.Certificate, pub any) (*SignedCert, error) {
	return c.TLS.Sign(tmpl, pub)
}

// Sign issues tmpl for pub: a fresh serial, backdated by clockSkew, and
// never valid after the CA itself.
func (ca *X509CA) Sign(tmpl *x509.Certificate, pub any) (*SignedCert, error) {
	tmpl.SerialNumber = randomSerial()
	tmpl.NotBefore = time.Now().Add(-clockSkew)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	return &SignedCert{DER: der, Serial: tmpl.SerialNumber, NotBefore: tmpl.NotBefore, NotAfter: tmpl.NotAfter}, nil
}

// serialString formats a serial the way openssl prints it.
func serialString(n *big.Int) string { return fmt.Sprintf("%X", n) }

func pkixName(cn, cluster string) pkix.Name {
	return pkix.Name{CommonName: cn, Organization: []string{cluster}}
}
