package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

func TestParseSPIFFEOutputs(t *testing.T) {
	cfg, err := ParseConfig("mbot.yaml", []byte(`outputs:
  - type: application
    destination: ./svid
    spiffe_id: /ci/payments/app
    dns_sans: [api.svc.acme.internal]
  - type: workload-identity-jwt
    destination: ./jwt
    spiffe_id: spiffe://acme/ci/payments/deploy
    audiences: [sts.amazonaws.com, "https://vault.acme.internal"]
  - type: application
    destination: ./svid2
`))
	if err != nil {
		t.Fatal(err)
	}
	app, jwtOut := cfg.Outputs[0], cfg.Outputs[1]
	if app.Type != OutputTypeApplication || app.SPIFFEID != "/ci/payments/app" || strings.Join(app.DNSSANs, ",") != "api.svc.acme.internal" || app.Name != "svid" {
		t.Errorf("application output %+v", app)
	}
	if jwtOut.Type != OutputTypeJWT || jwtOut.SPIFFEID != "spiffe://acme/ci/payments/deploy" || len(jwtOut.Audiences) != 2 {
		t.Errorf("jwt output %+v", jwtOut)
	}
	wantConfigRefusals(t, []struct{ name, yaml, want string }{
		{"no audiences", "outputs:\n  - type: workload-identity-jwt\n    destination: ./jwt\n", "mbot.yaml:2: outputs[0].audiences: is required"},
		{"audience with a space", "outputs:\n  - type: workload-identity-jwt\n    destination: ./jwt\n    audiences: ['a b']\n", "mbot.yaml:4: outputs[0].audiences: audience \"a b\" is not an audience"},
		{"audience twice", "outputs:\n  - type: workload-identity-jwt\n    destination: ./jwt\n    audiences: [a, a]\n", "outputs[0].audiences: lists \"a\" twice"},
		{"bad spiffe path", "outputs:\n  - type: application\n    destination: ./s\n    spiffe_id: /ci/../x\n", "mbot.yaml:4: outputs[0].spiffe_id: spiffe_id \"/ci/../x\" is not a SPIFFE ID path"},
		{"not a spiffe id", "outputs:\n  - type: application\n    destination: ./s\n    spiffe_id: https://acme/x\n", "outputs[0].spiffe_id: \"https://acme/x\" is neither a path"},
		{"wildcard dns san", "outputs:\n  - type: application\n    destination: ./s\n    dns_sans: ['*.acme.internal']\n", "outputs[0].dns_sans: \"*.acme.internal\" is a wildcard"},
		{"dns san not a name", "outputs:\n  - type: application\n    destination: ./s\n    dns_sans: ['a;b']\n", "outputs[0].dns_sans: dns_sans entry \"a;b\" is not a DNS name"},
		{"spiffe_id on a database", "outputs:\n  - type: database\n    destination: ./db\n    database: pg\n    username: ci\n    spiffe_id: /x\n",
			"mbot.yaml:6: outputs[0].spiffe_id: belongs to outputs of type application, not database"},
		{"audiences on an application", "outputs:\n  - type: application\n    destination: ./s\n    audiences: [x]\n",
			"outputs[0].audiences: belongs to outputs of type workload-identity-jwt, not application"},
		{"dns_sans on a jwt", "outputs:\n  - type: workload-identity-jwt\n    destination: ./j\n    audiences: [x]\n    dns_sans: [a.b]\n",
			"outputs[0].dns_sans: belongs to outputs of type application, not workload-identity-jwt"},
	})
}

// TestSPIFFEOutputKeys: an application output gets a TLS key only, a JWT
// output no key at all; each request carries its own type's fields.
func TestSPIFFEOutputKeys(t *testing.T) {
	outs := []Output{
		{Type: OutputTypeApplication, Name: "svid", ApplicationOutput: ApplicationOutput{SPIFFEID: "/ci/a", DNSSANs: []string{"a.b"}}},
		{Type: OutputTypeJWT, Name: "jwt", ApplicationOutput: ApplicationOutput{SPIFFEID: "/ci/j"}, JWTOutput: JWTOutput{Audiences: []string{"sts.amazonaws.com"}}},
	}
	keys, reqs, err := newOutputKeys(outs)
	if err != nil {
		t.Fatal(err)
	}
	if keys[0].SSH != nil || keys[0].TLS == nil || reqs[0].SSHPublicKey != "" || reqs[0].TLSPublicKey == "" || reqs[0].Type != "application" ||
		reqs[0].Application.SPIFFEID != "/ci/a" || reqs[0].Application.DNSSANs[0] != "a.b" || reqs[0].JWT != nil {
		t.Errorf("application output: keys %+v request %+v", keys[0], reqs[0])
	}
	if keys[1].SSH != nil || keys[1].TLS != nil || reqs[1].SSHPublicKey != "" || reqs[1].TLSPublicKey != "" || reqs[1].Type != "workload-identity-jwt" ||
		reqs[1].JWT.SPIFFEID != "/ci/j" || reqs[1].JWT.Audiences[0] != "sts.amazonaws.com" || reqs[1].Application != nil {
		t.Errorf("jwt output: keys %+v request %+v", keys[1], reqs[1])
	}
}

// testSVID signs an X.509-SVID for id on key with a fresh CA.
func testSVID(t *testing.T, key *ecdsa.PrivateKey, id string, dns []string) (caPEM, certPEM string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "spiffe ca"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	u, _ := url.Parse(id)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), URIs: []*url.URL{u}, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestRenderApplication(t *testing.T) {
	keys, err := newKeys(applicationOutput{})
	if err != nil {
		t.Fatal(err)
	}
	resp := &identity.JoinResponse{ClusterName: "acme", Bot: "deployer"}
	render := func(certID, grantID string, dns []string, edit func(g *identity.OutputResponse)) (map[string]identity.File, error) {
		caPEM, certPEM := testSVID(t, keys.TLS, certID, dns)
		g := &identity.OutputResponse{Name: "svid", Type: "application", Roles: []string{"svid"}, TLSCertificate: certPEM, TLSSerial: "AB",
			NotAfter: time.Now().Add(time.Hour), Application: &identity.ApplicationGrant{SPIFFEID: grantID, DNSSANs: dns, Bundle: caPEM}}
		if edit != nil {
			edit(g)
		}
		files, err := applicationOutput{}.render("/ci/svid", keys, resp, g)
		byName := map[string]identity.File{}
		for _, f := range files {
			byName[f.Name] = f
		}
		return byName, err
	}
	files, err := render("spiffe://acme/ci/app", "spiffe://acme/ci/app", []string{"api.acme.internal"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]uint32{"svid.pem": 0o644, "svid_key.pem": 0o600, "svid_bundle.pem": 0o644, "application.json": 0o600} {
		if f, ok := files[name]; !ok || uint32(f.Mode) != mode {
			t.Errorf("%s: written %t, mode %o, want %o", name, ok, f.Mode, mode)
		}
	}
	if !strings.HasPrefix(string(files["svid_key.pem"].Data), "-----BEGIN PRIVATE KEY-----") {
		t.Error("svid_key.pem is not PKCS#8")
	}
	var sum ApplicationSummary
	if err := json.Unmarshal(files["application.json"].Data, &sum); err != nil || sum.SPIFFEID != "spiffe://acme/ci/app" || sum.Files["bundle"] != "svid_bundle.pem" {
		t.Errorf("application.json %+v, %v", sum, err)
	}

	for _, tc := range []struct {
		name            string
		certID, grantID string
		dns             []string
		edit            func(g *identity.OutputResponse)
		want            string
	}{
		{"svid for another id", "spiffe://acme/ci/other", "spiffe://acme/ci/app", nil, nil, "not the SPIFFE ID"},
		{"svid of another trust domain", "spiffe://evil/ci/app", "spiffe://evil/ci/app", nil, nil, "not the SPIFFE ID"},
		{"bundle of another CA", "spiffe://acme/ci/app", "spiffe://acme/ci/app", nil, func(g *identity.OutputResponse) {
			g.Application.Bundle, _ = testSVID(t, keys.TLS, "spiffe://acme/x", nil)
		}, "does not verify"},
		{"dns names differ", "spiffe://acme/ci/app", "spiffe://acme/ci/app", []string{"a.acme"}, func(g *identity.OutputResponse) { g.Application.DNSSANs = []string{"b.acme"} }, "other DNS names"},
		{"no grant", "spiffe://acme/ci/app", "spiffe://acme/ci/app", nil, func(g *identity.OutputResponse) { g.Application = nil }, "no application grant"},
		{"bundle not PEM", "spiffe://acme/ci/app", "spiffe://acme/ci/app", nil, func(g *identity.OutputResponse) { g.Application.Bundle = "x\ny" }, "SPIFFE bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files, err := render(tc.certID, tc.grantID, tc.dns, tc.edit)
			if err == nil || !strings.Contains(err.Error(), tc.want) || len(files) != 0 {
				t.Errorf("rendered %d files, err = %v, want %q", len(files), err, tc.want)
			}
		})
	}
}
