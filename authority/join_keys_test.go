package authority_test

import (
	"crypto"
	"crypto/dsa"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// tlsPEM encodes a public key as the PEM PKIX block an OutputRequest carries.
func tlsPEM(t *testing.T, pub any) string {
	t.Helper()
	var der []byte
	if k, ok := pub.(*dsa.PublicKey); ok {
		der = dsaPKIX(t, k) // crypto/x509 parses DSA keys but will not marshal them
	} else {
		var err error
		if der, err = x509.MarshalPKIXPublicKey(pub); err != nil {
			t.Fatal(err)
		}
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// dsaPKIX is the SubjectPublicKeyInfo of a DSA key (RFC 3279, 2.3.2).
func dsaPKIX(t *testing.T, k *dsa.PublicKey) []byte {
	t.Helper()
	params, err := asn1.Marshal(struct{ P, Q, G *big.Int }{k.P, k.Q, k.G})
	if err != nil {
		t.Fatal(err)
	}
	y, err := asn1.Marshal(k.Y)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		Algorithm struct {
			OID    asn1.ObjectIdentifier
			Params asn1.RawValue
		}
		Key asn1.BitString
	}{
		Algorithm: struct {
			OID    asn1.ObjectIdentifier
			Params asn1.RawValue
		}{asn1.ObjectIdentifier{1, 2, 840, 10040, 4, 1}, asn1.RawValue{FullBytes: params}},
		Key: asn1.BitString{Bytes: y, BitLength: 8 * len(y)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func sshLine(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(ssh.MarshalAuthorizedKey(k))
}

// TestJoinKeyPolicy: TLS keys follow the SSH key policy; a refused key is a
// 400 unsupported_key before the proof is consumed, so the same proof then
// joins with a good key.
func TestJoinKeyPolicy(t *testing.T) {
	a, ci := openAuthority(t)
	gen := func(k any, err error) any {
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	rsa1024 := gen(rsa.GenerateKey(rand.Reader, 1024)).(*rsa.PrivateKey)
	rsa2048 := gen(rsa.GenerateKey(rand.Reader, 2048)).(*rsa.PrivateKey)
	p224 := gen(ecdsa.GenerateKey(elliptic.P224(), rand.Reader)).(*ecdsa.PrivateKey)
	p384 := gen(ecdsa.GenerateKey(elliptic.P384(), rand.Reader)).(*ecdsa.PrivateKey)
	p521 := gen(ecdsa.GenerateKey(elliptic.P521(), rand.Reader)).(*ecdsa.PrivateKey)
	x25519 := gen(ecdh.X25519().GenerateKey(rand.Reader)).(*ecdh.PrivateKey)
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var dsaKey dsa.PrivateKey
	if err := dsa.GenerateParameters(&dsaKey.Parameters, rand.Reader, dsa.L1024N160); err != nil {
		t.Fatal(err)
	}
	if err := dsa.GenerateKey(&dsaKey, rand.Reader); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name    string
		tls     any    // TLS public key, or nil for the output's own
		ssh     any    // SSH public key, or nil for the output's own
		wantMsg string // empty: admitted
	}{
		{name: "TLS RSA-1024", tls: &rsa1024.PublicKey, wantMsg: "tls_public_key: RSA keys must have at least 2048 bits, this one has 1024"},
		{name: "TLS P-224", tls: &p224.PublicKey, wantMsg: "tls_public_key: ECDSA keys on curve P-224 are not accepted"},
		{name: "TLS DSA", tls: &dsaKey.PublicKey, wantMsg: "tls_public_key: DSA keys are not accepted"},
		{name: "TLS X25519", tls: x25519.PublicKey(), wantMsg: "tls_public_key: X25519/ECDH keys are not accepted"},
		{name: "SSH RSA-1024", ssh: &rsa1024.PublicKey, wantMsg: "ssh_public_key: RSA keys must have at least 2048 bits"},
		{name: "SSH DSA", ssh: &dsaKey.PublicKey, wantMsg: "ssh_public_key: key type ssh-dss is not accepted"},
		{name: "TLS RSA-2048", tls: &rsa2048.PublicKey},
		{name: "TLS P-384", tls: &p384.PublicKey},
		{name: "TLS P-521", tls: &p521.PublicKey},
		{name: "TLS Ed25519", tls: edPub},
		{name: "SSH RSA-2048 and P-521", ssh: &rsa2048.PublicKey, tls: &p521.PublicKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			proof := githubToken(t, ci, nil)
			out := newOutput(t, "identity")
			if tc.tls != nil {
				out.req.TLSPublicKey = tlsPEM(t, tc.tls)
			}
			if tc.ssh != nil {
				out.req.SSHPublicKey = sshLine(t, tc.ssh)
			}
			resp, err := a.Join(t.Context(), joinRequest("github-deploy", "github", proof, time.Hour, out), "test")
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if len(resp.Outputs) != 1 || resp.Outputs[0].TLSCertificate == "" {
					t.Fatalf("no certificate in %+v", resp)
				}
				return
			}
			var ie *identity.Error
			if !errors.As(err, &ie) || ie.Code != identity.CodeUnsupportedKey || ie.Code.HTTPStatus() != 400 {
				t.Fatalf("err = %v, want a 400 %s", err, identity.CodeUnsupportedKey)
			}
			if resp != nil {
				t.Error("a refused join returned a response")
			}
			if !strings.Contains(ie.Message, tc.wantMsg) || !strings.Contains(ie.Message, "Ed25519") {
				t.Errorf("message %q does not say %q and what to use", ie.Message, tc.wantMsg)
			}
			if ev := lastAudit(t, a); ev.Allowed || ev.Code != string(identity.CodeUnsupportedKey) || len(ev.Serials) != 0 {
				t.Errorf("audit record allowed=%t code=%q serials=%v; want the refusal", ev.Allowed, ev.Code, ev.Serials)
			}
			// The proof was not consumed: it joins with good keys.
			if _, err := a.Join(t.Context(), joinRequest("github-deploy", "github", proof, time.Hour, newOutput(t, "identity")), "test"); err != nil {
				t.Fatalf("the proof of a refused key does not join with a good key: %v", err)
			}
		})
	}
}
