package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

func sprintf(f string, a ...any) string { return fmt.Sprintf(f, a...) }
func contains(s, sub string) bool       { return strings.Contains(s, sub) }

// testRoot is a root cluster's TLS CA that issues bot certificates.
type testRoot struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestRoot(t *testing.T, cluster string) *testRoot {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cluster + " TLS CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testRoot{cert: cert, key: key, pool: pool}
}

// botCert issues a bot identity of cluster, as the authority's SignTLSClient does.
func (r *testRoot) botCert(t *testing.T, cluster, bot string, roles []string, notAfter time.Time) (string, crypto.Signer) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter,
		Subject:  pkix.Name{CommonName: bot, Organization: []string{cluster}, OrganizationalUnit: roles},
		URIs:     []*url.URL{{Scheme: "spiffe", Host: cluster, Path: "/bot/" + bot}},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.cert, key.Public(), r.key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), key
}

func TestVerify(t *testing.T) {
	root := newTestRoot(t, "acme")
	other := newTestRoot(t, "acme") // same name, another CA: a forger's
	now := time.Now()
	chain, key := root.botCert(t, "acme", "deployer", []string{"deploy", "ci-build"}, now.Add(time.Hour))
	opts := VerifyOptions{Roots: root.pool, RootCluster: "acme", LeafCluster: "leaf-eu", Now: now}
	payload := func(cluster string, at time.Time) *identity.ExchangePayload {
		return &identity.ExchangePayload{Cluster: cluster, Time: at, Outputs: []identity.OutputRequest{{Name: "eu"}}}
	}
	sign := func(p *identity.ExchangePayload, chain string, key crypto.Signer) *identity.ExchangeRequest {
		req, err := identity.NewExchange(p, chain, key)
		if err != nil {
			t.Fatal(err)
		}
		return req
	}

	t.Run("good", func(t *testing.T) {
		ex, p, err := Verify(sign(payload("leaf-eu", now), chain, key), opts)
		if err != nil {
			t.Fatal(err)
		}
		if ex.Bot != "deployer" || ex.RootCluster != "acme" || strings.Join(ex.Roles, ",") != "deploy,ci-build" || p.Outputs[0].Name != "eu" {
			t.Errorf("Verify = %+v, %+v", ex, p)
		}
	})

	otherChain, otherKey := other.botCert(t, "acme", "deployer", []string{"deploy"}, now.Add(time.Hour))
	_, strangerKey := root.botCert(t, "acme", "deployer", nil, now.Add(time.Hour))
	expiredChain, expiredKey := root.botCert(t, "acme", "deployer", []string{"deploy"}, now.Add(-time.Second))
	otherClusterChain, otherClusterKey := root.botCert(t, "other", "deployer", []string{"deploy"}, now.Add(time.Hour))
	tampered := sign(payload("leaf-eu", now), chain, key)
	tampered.Payload = []byte(strings.Replace(string(tampered.Payload), `"eu"`, `"ev"`, 1))

	for _, tt := range []struct {
		name string
		req  *identity.ExchangeRequest
		code identity.ErrorCode
		hint string
	}{
		{"forged-chain", sign(payload("leaf-eu", now), otherChain, otherKey), identity.CodeExchangeInvalid, "not issued by the TLS CA of root cluster acme"},
		{"signed-by-another-key", sign(payload("leaf-eu", now), chain, strangerKey), identity.CodeExchangeInvalid, "signature does not verify"},
		{"tampered-payload", tampered, identity.CodeExchangeInvalid, "signature does not verify"},
		{"root-identity-expired", sign(payload("leaf-eu", now), expiredChain, expiredKey), identity.CodeRootIdentityExpired, "join the root again"},
		{"wrong-cluster", sign(payload("leaf-us", now), chain, key), identity.CodeExchangeInvalid, "for cluster \"leaf-us\", but this is cluster leaf-eu"},
		{"another-root's-bot", sign(payload("leaf-eu", now), otherClusterChain, otherClusterKey), identity.CodeExchangeInvalid, "not a bot identity of root cluster acme"},
		{"too-old", sign(payload("leaf-eu", now.Add(-10*time.Minute)), chain, key), identity.CodeExchangeExpired, "check the clocks"},
		{"from-the-future", sign(payload("leaf-eu", now.Add(10*time.Minute)), chain, key), identity.CodeExchangeExpired, "check the clocks"},
		{"no-chain", &identity.ExchangeRequest{Payload: []byte("{}")}, identity.CodeExchangeInvalid, "tls.crt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Verify(tt.req, opts)
			var refusal *identity.Error
			if !errorsAs(err, &refusal) || refusal.Code != tt.code || !strings.Contains(refusal.Message, tt.hint) {
				t.Fatalf("Verify: %v, want %s saying %q", err, tt.code, tt.hint)
			}
		})
	}

	t.Run("replay-id", func(t *testing.T) {
		// One signed payload has one proof ID, whoever relays it; another payload another.
		a := sign(payload("leaf-eu", now), chain, key)
		b := *a
		b.Chain = a.Chain + "\n"
		if ProofID(a) != ProofID(&b) || ProofID(a) == ProofID(sign(payload("leaf-eu", now), chain, key)) {
			t.Error("ProofID does not identify the signed payload")
		}
	})
}

func errorsAs(err error, target **identity.Error) bool { return errors.As(err, target) }
