package identity_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

func TestNewKeys(t *testing.T) {
	keys, err := identity.NewKeys()
	if err != nil {
		t.Fatalf("NewKeys: %v", err)
	}

	pub, comment, _, rest, err := ssh.ParseAuthorizedKey([]byte(keys.SSHPublicKey()))
	if err != nil {
		t.Fatalf("SSHPublicKey does not parse as authorized_keys: %v", err)
	}
	if pub.Type() != ssh.KeyAlgoED25519 || comment != "" || len(rest) != 0 {
		t.Errorf("SSHPublicKey: type %s, comment %q, %d bytes after; want one ed25519 key", pub.Type(), comment, len(rest))
	}
	cryptoPub, ok := pub.(ssh.CryptoPublicKey)
	if !ok || !cryptoPub.CryptoPublicKey().(ed25519.PublicKey).Equal(keys.SSH.Public()) {
		t.Errorf("SSHPublicKey is not the public half of Keys.SSH")
	}

	tlsPub, err := identity.ParseTLSPublicKey(keys.TLSPublicKeyPEM())
	if err != nil {
		t.Fatalf("TLSPublicKeyPEM does not parse: %v", err)
	}
	ec, ok := tlsPub.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("TLS public key is a %T, want *ecdsa.PublicKey", tlsPub)
	}
	if ec.Curve != elliptic.P256() || !ec.Equal(keys.TLS.Public()) {
		t.Errorf("TLS public key is on %s or not the public half of Keys.TLS", ec.Curve.Params().Name)
	}

	sshPEM, err := keys.SSHPrivateKeyPEM("deployer")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ssh.ParseRawPrivateKey(sshPEM)
	if err != nil {
		t.Fatalf("SSHPrivateKeyPEM does not parse: %v", err)
	}
	if priv, ok := raw.(*ed25519.PrivateKey); !ok || !priv.Equal(keys.SSH) {
		t.Errorf("SSHPrivateKeyPEM holds a %T, want Keys.SSH", raw)
	}
	if block, _ := pem.Decode(sshPEM); block == nil || block.Type != "OPENSSH PRIVATE KEY" {
		t.Errorf("SSHPrivateKeyPEM is not in OpenSSH format")
	}

	tlsPEM, err := keys.TLSPrivateKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	block, rest2 := pem.Decode(tlsPEM)
	if block == nil || block.Type != "PRIVATE KEY" || len(rest2) != 0 {
		t.Fatalf("TLSPrivateKeyPEM is not one PEM PRIVATE KEY block: %q", tlsPEM)
	}
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("TLSPrivateKeyPEM is not PKCS#8: %v", err)
	}
	if ecPriv, ok := priv.(*ecdsa.PrivateKey); !ok || !ecPriv.Equal(keys.TLS) {
		t.Errorf("TLSPrivateKeyPEM holds a %T, want Keys.TLS", priv)
	}
}

func TestNewKeysAreFresh(t *testing.T) {
	a, err := identity.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	b, err := identity.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	if a.SSHPublicKey() == b.SSHPublicKey() || a.TLSPublicKeyPEM() == b.TLSPublicKeyPEM() {
		t.Error("two calls of NewKeys returned the same key")
	}
}

func TestParseTLSPublicKeyRefuses(t *testing.T) {
	keys, err := identity.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	privPEM, _ := keys.TLSPrivateKeyPEM()
	for name, text := range map[string]string{
		"empty":       "",
		"not PEM":     "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
		"private key": string(privPEM),
		"SSH key":     keys.SSHPublicKey(),
	} {
		if _, err := identity.ParseTLSPublicKey(text); err == nil {
			t.Errorf("ParseTLSPublicKey accepted %s", name)
		}
	}
}
