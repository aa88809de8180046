package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"golang.org/x/crypto/ssh"
)

// Keys are the fresh private keys of one output: Ed25519 for SSH, ECDSA
// P-256 for TLS. They never leave the machine that made them.
type Keys struct {
	SSH ed25519.PrivateKey
	TLS *ecdsa.PrivateKey
}

// NewKeys generates a new key pair for each protocol.
func NewKeys() (*Keys, error) {
	_, sshKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating SSH key: %w", err)
	}
	tlsKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating TLS key: %w", err)
	}
	return &Keys{SSH: sshKey, TLS: tlsKey}, nil
}

// SSHPublicKey returns the SSH public key in authorized_keys format.
func (k *Keys) SSHPublicKey() string {
	pub, err := ssh.NewPublicKey(k.SSH.Public())
	if err != nil {
		panic(err) // an ed25519 key always converts
	}
	return string(ssh.MarshalAuthorizedKey(pub))
}

// TLSPublicKeyPEM returns the TLS public key as a PEM PKIX block.
func (k *Keys) TLSPublicKeyPEM() string {
	der, err := x509.MarshalPKIXPublicKey(k.TLS.Public())
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// SSHPrivateKeyPEM returns the SSH private key in OpenSSH format.
func (k *Keys) SSHPrivateKeyPEM(comment string) ([]byte, error) {
	block, err := ssh.MarshalPrivateKey(k.SSH, comment)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(block), nil
}

// TLSPrivateKeyPEM returns the TLS private key as a PKCS#8 PEM block.
func (k *Keys) TLSPrivateKeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.TLS)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseTLSPublicKey reads a PEM PKIX public key as sent in an OutputRequest.
func ParseTLSPublicKey(pemText string) (any, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("tls_public_key is not a PEM PUBLIC KEY block")
	}
	return x509.ParsePKIXPublicKey(block.Bytes)
}

// MinRSABits is the smallest RSA modulus the authority certifies.
const MinRSABits = 2048

// CheckPublicKey applies the authority's key policy, the same for SSH and
// TLS keys: Ed25519, ECDSA on P-256, P-384 or P-521, or RSA of at least
// MinRSABits. P-521 is kept because OpenSSH has long offered it and it is
// no weaker than the others; everything else (short RSA, P-224, DSA,
// X25519, which cannot sign) is refused with a sentence saying what to use.
func CheckPublicKey(key any) error {
	const use = "use an Ed25519 key, an ECDSA key on P-256 or P-384, or RSA of at least 2048 bits"
	switch k := key.(type) {
	case ed25519.PublicKey:
		return nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("ECDSA keys on curve %s are not accepted; %s", k.Curve.Params().Name, use)
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return fmt.Errorf("RSA keys must have at least %d bits, this one has %d; %s", MinRSABits, bits, use)
		}
		return nil
	}
	return fmt.Errorf("%s keys are not accepted; %s", keyTypeName(key), use)
}

// keyTypeName names a key type the way people know it, for messages.
func keyTypeName(key any) string {
	name := fmt.Sprintf("%T", key)
	switch name {
	case "*dsa.PublicKey":
		return "DSA"
	case "*ecdh.PublicKey":
		return "X25519/ECDH"
	}
	return name
}
