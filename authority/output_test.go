package authority_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/identity"
)

// TestOutputRequestShape: an output's type and the keys it carries are
// checked before the proof is looked at; a refusal is bad_request and
// names what to send.
func TestOutputRequestShape(t *testing.T) {
	a, ci := openAuthority(t)
	for _, tc := range []struct {
		name string
		edit func(o *identity.OutputRequest)
		want string
	}{
		{"unknown type", func(o *identity.OutputRequest) { o.Type = "nope\x1b[31m" }, `type "nope\x1b[31m" is not an output type of this authority (`},
		{"identity without a TLS key", func(o *identity.OutputRequest) { o.TLSPublicKey = "" }, "tls_public_key is refused"},
		{"identity without an SSH key", func(o *identity.OutputRequest) { o.SSHPublicKey = "" }, "ssh_public_key is not an authorized_keys line"},
		{"another type's request", func(o *identity.OutputRequest) {
			o.Database = &identity.DatabaseRequest{Database: "pg", Username: "ci"}
		}, "of type identity carries a database request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := newOutput(t, "out")
			tc.edit(&out.req)
			proof := githubToken(t, ci, nil)
			_, err := a.Join(t.Context(), joinRequest("github-deploy", "github", proof, time.Hour, out), "test")
			var ierr *identity.Error
			if !errors.As(err, &ierr) || ierr.Code != identity.CodeBadRequest {
				t.Fatalf("err = %v, want bad_request", err)
			}
			if !strings.Contains(ierr.Message, tc.want) {
				t.Errorf("message %q does not say %q", ierr.Message, tc.want)
			}
			if tc.name == "unknown type" && !strings.Contains(ierr.Message, "identity") {
				t.Errorf("message %q does not name the known types", ierr.Message)
			}
			// The proof was not consumed: the same proof with a good request joins.
			if _, err := a.Join(t.Context(), joinRequest("github-deploy", "github", proof, time.Hour, newOutput(t, "out")), "test"); err != nil {
				t.Errorf("the refused request consumed the proof: %v", err)
			}
		})
	}
}

// TestOutputTypeIdentityExplicit: type "identity" is the same as no type,
// and the audit record lists the output and what it was granted.
func TestOutputTypeIdentityExplicit(t *testing.T) {
	a, ci := openAuthority(t)
	out := newOutput(t, "id")
	out.req.Type = identity.OutputIdentity
	resp, err := a.Join(t.Context(), joinRequest("github-deploy", "github", githubToken(t, ci, nil), time.Hour, out), "test")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Outputs[0].Type != identity.OutputIdentity || resp.Outputs[0].TLSCertificate == "" || resp.Outputs[0].SSHCertificate == "" {
		t.Errorf("output %+v", resp.Outputs[0])
	}
	ev := lastAudit(t, a)
	if len(ev.Outputs) != 1 || !strings.HasPrefix(ev.Outputs[0], "id type=identity logins=ubuntu,ci,deploy,auditor") {
		t.Errorf("audit outputs %q", ev.Outputs)
	}
}

// TestCAPurposes: each CA serves one purpose. A certificate of one never
// verifies under another, and a CA's extended key usages bound what it
// signs: an identity output's tls.crt (CN = bot) is no database client
// certificate, and a database client certificate is no identity.
func TestCAPurposes(t *testing.T) {
	a, ci := openAuthority(t)
	cas := a.CAs()
	resp, err := a.Join(t.Context(), joinRequest("github-deploy", "github", githubToken(t, ci, nil), time.Hour, newOutput(t, "id")), "test")
	if err != nil {
		t.Fatal(err)
	}
	identityCert := parseCertPEM(t, resp.Outputs[0].TLSCertificate)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := cas.DatabaseClient.Sign(&x509.Certificate{Subject: pkix.Name{CommonName: "deployer"}, NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	dbCert, err := x509.ParseCertificate(signed.DER)
	if err != nil {
		t.Fatal(err)
	}

	pools := map[string]*authority.X509CA{
		"tls": cas.TLS, "database-client": cas.DatabaseClient, "database-server": cas.DatabaseServer,
		"kubernetes-client": cas.KubernetesClient, "spiffe": cas.SPIFFE,
	}
	distinct := map[string]bool{}
	for name, ca := range pools {
		if distinct[string(ca.Cert.RawSubjectPublicKeyInfo)] {
			t.Errorf("CA %s shares its key with another", name)
		}
		distinct[string(ca.Cert.RawSubjectPublicKeyInfo)] = true
		if !ca.Cert.IsCA || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("CA %s is not a CA certificate", name)
		}
	}
	for _, tc := range []struct {
		cert    *x509.Certificate
		certFor string
	}{{identityCert, "tls"}, {dbCert, "database-client"}} {
		for name, ca := range pools {
			roots := x509.NewCertPool()
			roots.AddCert(ca.Cert)
			_, err := tc.cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if name == tc.certFor && err != nil {
				t.Errorf("a %s certificate does not verify under its own CA: %v", tc.certFor, err)
			}
			if name != tc.certFor && err == nil {
				t.Errorf("a %s certificate verifies under the %s CA", tc.certFor, name)
			}
		}
	}

	// A client CA does not sign servers: a server certificate under the
	// database-client CA is refused by any verifier that checks EKU nesting.
	srv, err := cas.DatabaseClient.Sign(&x509.Certificate{Subject: pkix.Name{CommonName: "db"}, DNSNames: []string{"db.acme.internal"},
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	srvCert, _ := x509.ParseCertificate(srv.DER)
	roots := x509.NewCertPool()
	roots.AddCert(cas.DatabaseClient.Cert)
	if _, err := srvCert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "db.acme.internal"}); err == nil {
		t.Error("a server certificate signed by the database-client CA verifies as a server")
	}
	// The SPIFFE CA confines SPIFFE IDs to the cluster's trust domain.
	if got := cas.SPIFFE.Cert.PermittedURIDomains; len(got) != 1 || got[0] != "acme" {
		t.Errorf("spiffe CA permitted URI domains %q, want [acme]", got)
	}
}

// TestCAsPersist: the CAs are created once; a second open of the same
// data directory loads the same ones.
func TestCAsPersist(t *testing.T) {
	a, _ := openAuthority(t)
	st := a.Store()
	again, err := authority.LoadCAs(t.Context(), st, "acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	first := a.CAs()
	for name, pair := range map[string][2]*authority.X509CA{
		"database-client": {first.DatabaseClient, again.DatabaseClient}, "database-server": {first.DatabaseServer, again.DatabaseServer},
		"kubernetes-client": {first.KubernetesClient, again.KubernetesClient}, "spiffe": {first.SPIFFE, again.SPIFFE}, "tls": {first.TLS, again.TLS},
	} {
		if !pair[0].Cert.Equal(pair[1].Cert) {
			t.Errorf("CA %s changed between loads", name)
		}
	}
	if first.JWTKeyID != again.JWTKeyID || !first.JWT.Equal(again.JWT) {
		t.Error("JWT key changed between loads")
	}
}

// TestExportPurposeCAs: every export type renders, the PEM ones are the
// CA certificates, and the JWKS is a key set whose kid is the key's RFC
// 7638 thumbprint as go-jose computes it.
func TestExportPurposeCAs(t *testing.T) {
	a, _ := openAuthority(t)
	cas := a.CAs()
	for _, typ := range authority.ExportTypes {
		out, err := cas.Export(typ)
		if err != nil || strings.TrimSpace(out) == "" {
			t.Errorf("export %s: %q, %v", typ, out, err)
		}
	}
	for typ, ca := range map[string]*authority.X509CA{"database-client-ca": cas.DatabaseClient, "database-server-ca": cas.DatabaseServer,
		"kubernetes-client-ca": cas.KubernetesClient, "spiffe-ca": cas.SPIFFE} {
		out, _ := cas.Export(typ)
		if !parseCertPEM(t, out).Equal(ca.Cert) {
			t.Errorf("export %s is not its CA", typ)
		}
	}
	out, err := cas.Export("jwt-jwks")
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(out), &set); err != nil {
		t.Fatalf("jwt-jwks %q: %v", out, err)
	}
	if len(set.Keys) != 1 || set.Keys[0].Algorithm != "ES256" || set.Keys[0].Use != "sig" || !set.Keys[0].IsPublic() {
		t.Fatalf("jwt-jwks %+v", set.Keys)
	}
	thumb, err := set.Keys[0].Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if want := base64.RawURLEncoding.EncodeToString(thumb); set.Keys[0].KeyID != want || cas.JWTKeyID != want {
		t.Errorf("kid %q (CAs %q), want the thumbprint %q", set.Keys[0].KeyID, cas.JWTKeyID, want)
	}
	if pub, ok := set.Keys[0].Key.(*ecdsa.PublicKey); !ok || !pub.Equal(cas.JWT.Public()) {
		t.Error("jwt-jwks is not the JWT signing key")
	}
	if _, err := cas.Export("database-ca"); err == nil || !strings.Contains(err.Error(), "database-client-ca") {
		t.Errorf("unknown export type: %v", err)
	}
}

func parseCertPEM(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		t.Fatalf("no PEM in %q", s)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
