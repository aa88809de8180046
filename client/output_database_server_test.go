package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
)

// testCA is a self-signed CA that can sign CRLs.
func testCA(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func testCRL(t *testing.T, ca *x509.Certificate, key *ecdsa.PrivateKey, serials ...int64) string {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(s), RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(),
		NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: entries}, ca, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
}

// TestCheckCRLs: a database_server output's CRL is written only if it
// holds a CRL of every CA of the client CA bundle (a server checking CRLs
// refuses every client of a CA without one), each signed by one of them,
// and nothing else; the revoked serials are read for database_server.json.
func TestCheckCRLs(t *testing.T) {
	current, currentKey, currentPEM := testCA(t, "current")
	next, nextKey, nextPEM := testCA(t, "next")
	_, strangerKey, _ := testCA(t, "stranger")
	bundle := currentPEM + nextPEM
	both := testCRL(t, current, currentKey, 0xab, 0x1f) + testCRL(t, next, nextKey, 0xab)
	revoked, err := checkCRLs(both, bundle)
	if err != nil || !slices.Equal(revoked, []string{"AB", "1F"}) {
		t.Errorf("both CAs' CRLs: %v %v, want [AB 1F]", revoked, err)
	}
	for _, tc := range []struct{ name, crl, want string }{
		{"a CA without a CRL", testCRL(t, current, currentKey), `holds no CRL of the database client CA "next"`},
		{"none", "", `holds no CRL of the database client CA "current"`},
		{"signed by another key", testCRL(t, current, currentKey) + testCRL(t, next, strangerKey), "not signed by the database client CA"},
		{"a certificate", both + currentPEM, "holds something other than CRLs"},
		{"trailing text", both + "ssl_crl_file = '/etc/passwd'\n", "is not PEM"},
	} {
		if _, err := checkCRLs(tc.crl, bundle); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
