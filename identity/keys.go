package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
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
