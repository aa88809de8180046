package authority_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/authoritytest"
	"github.com/mbot-dev/mbot/internal/simci"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// spiffeYAML: bot deployer (trait team=payments) gets SPIFFE IDs under
// /ci/payments/, its own /bot/deployer, DNS SANs under *.svc.acme.internal
// and two JWT audiences from role svid; role svc-admin (not the bot's)
// grants /svc/* and vault.
const spiffeYAML = `kind: role
version: v1
metadata: {name: svid}
spec:
  spiffe_ids: ["/ci/{{internal.team}}/*", /bot/deployer]
  dns_sans: ["*.svc.acme.internal", api.acme.internal]
  jwt_audiences: [sts.amazonaws.com, "https://vault.acme.internal"]
---
kind: role
version: v1
metadata: {name: ssh}
spec:
  logins: [deploy]
---
kind: role
version: v1
metadata: {name: svc-admin}
spec:
  spiffe_ids: ["/svc/*", "/admin/*", "/bot/*"]
  jwt_audiences: [vault]
---
kind: bot
version: v1
metadata: {name: deployer}
spec:
  roles: [svid, ssh]
  traits: {team: [payments]}
---
kind: bot
version: v1
metadata: {name: server}
spec:
  roles: [svc-admin]
---
kind: join_token
version: v1
metadata: {name: github-deploy}
spec:
  bot: deployer
  method: github
  github:
    issuer: %[1]s
    allow:
      - repository: acme/app
---
kind: join_token
version: v1
metadata: {name: github-server}
spec:
  bot: server
  method: github
  github:
    issuer: %[1]s
    allow:
      - repository: acme/app
`

func openSPIFFEAuthority(t *testing.T) (*authority.Authority, *simci.Issuer) {
	t.Helper()
	return openAuthorityFrom(t, spiffeYAML)
}

func applicationOutput(t *testing.T, name, spiffeID string, dnsSANs []string, roles ...string) output {
	t.Helper()
	return tlsOutput(t, identity.OutputRequest{Name: name, Type: identity.OutputApplication, Roles: roles,
		Application: &identity.ApplicationRequest{SPIFFEID: spiffeID, DNSSANs: dnsSANs}})
}

// x509SVID parses an application output's answer as go-spiffe does: it
// checks the X.509-SVID rules (one SPIFFE ID URI SAN, a leaf, digitalSignature).
func x509SVID(t *testing.T, o output, got identity.OutputResponse) *x509svid.SVID {
	t.Helper()
	keyPEM, err := o.keys.TLSPrivateKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	svid, err := x509svid.Parse([]byte(got.TLSCertificate), keyPEM)
	if err != nil {
		t.Fatalf("go-spiffe refuses the X.509-SVID: %v", err)
	}
	return svid
}

// TestApplicationOutput: an application output gets an X.509-SVID for the
// SPIFFE ID asked (a path, a whole ID or the bot's default) that go-spiffe
// accepts and verifies against the spiffe CA only, with the DNS SANs asked.
func TestApplicationOutput(t *testing.T) {
	a, ci := openSPIFFEAuthority(t)
	cas := a.CAs()
	for _, tc := range []struct {
		name, asked, want string
		sans              []string
	}{
		{"default", "", "spiffe://acme/bot/deployer", nil},
		{"path under a trait's pattern", "/ci/payments/app", "spiffe://acme/ci/payments/app", []string{"web.svc.acme.internal", "api.acme.internal"}},
		{"whole id", "spiffe://acme/ci/payments/deep/er", "spiffe://acme/ci/payments/deep/er", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := applicationOutput(t, "app", tc.asked, tc.sans)
			resp, err := a.Join(t.Context(), joinRequest("github-deploy", "github", githubToken(t, ci, nil), 2*time.Hour, o), "test")
			if err != nil {
				t.Fatal(err)
			}
			got := resp.Outputs[0]
			svid := x509SVID(t, o, got)
			if svid.ID.String() != tc.want || got.Application.SPIFFEID != tc.want {
				t.Errorf("SPIFFE ID %s (answer %s), want %s", svid.ID, got.Application.SPIFFEID, tc.want)
			}
			leaf := svid.Certificates[0]
			if strings.Join(leaf.DNSNames, ",") != strings.Join(tc.sans, ",") || len(leaf.URIs) != 1 || leaf.IsCA {
				t.Errorf("leaf DNS %q URIs %v CA %v", leaf.DNSNames, leaf.URIs, leaf.IsCA)
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("key usage %v, want digitalSignature only", leaf.KeyUsage)
			}
			if d := time.Until(leaf.NotAfter); d > 2*time.Hour || d < 110*time.Minute {
				t.Errorf("SVID valid for %s, want the output's 2h", d)
			}
			if got.Application.Bundle != string(cas.SPIFFE.CertPEM) {
				t.Error("the answer's bundle is not the spiffe CA")
			}
			td := spiffeid.RequireTrustDomainFromString("acme")
			if _, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(td, []*x509.Certificate{cas.SPIFFE.Cert})); err != nil {
				t.Errorf("the SVID does not verify under the spiffe CA: %v", err)
			}
			for name, other := range map[string]*authority.X509CA{"tls": cas.TLS, "database-client": cas.DatabaseClient, "kubernetes-client": cas.KubernetesClient} {
				if _, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(td, []*x509.Certificate{other.Cert})); err == nil {
					t.Errorf("the SVID verifies under the %s CA", name)
				}
			}
			ev := lastAudit(t, a)
			if len(ev.Outputs) != 1 || !strings.HasPrefix(ev.Outputs[0], "app type=application spiffe_id="+tc.want) {
				t.Errorf("audit outputs %q", ev.Outputs)
			}
		})
	}
}

// TestSPIFFERefusals: a SPIFFE ID, DNS SAN or audience the output's roles
// do not grant is refused with role_denied (bad_request for a malformed
// one), naming the field or role that would grant it, and audited.
func TestSPIFFERefusals(t *testing.T) {
	a, ci := openSPIFFEAuthority(t)
	for _, tc := range []struct {
		name string
		out  func(t *testing.T) output
		code identity.ErrorCode
		want []string
	}{
		{"id not granted", func(t *testing.T) output { return applicationOutput(t, "app", "/ci/other/app", nil) },
			identity.CodeRoleDenied, []string{`SPIFFE ID path "/ci/other/app"`, "spiffe_ids", "svid, ssh"}},
		{"id granted by a role the bot lacks", func(t *testing.T) output { return applicationOutput(t, "app", "/svc/api", nil) },
			identity.CodeRoleDenied, []string{"role svc-admin would grant it"}},
		{"pattern needs a segment below", func(t *testing.T) output { return applicationOutput(t, "app", "/ci/payments", nil) },
			identity.CodeRoleDenied, []string{"spiffe_ids"}},
		{"id through a role the output leaves out", func(t *testing.T) output { return applicationOutput(t, "app", "/ci/payments/x", nil, "ssh") },
			identity.CodeRoleDenied, []string{"granted by role svid", "does not use"}},
		{"other trust domain", func(t *testing.T) output { return applicationOutput(t, "app", "spiffe://evil/ci/payments/x", nil) },
			identity.CodeBadRequest, []string{`trust domain "evil"`, "acme only"}},
		{"dotdot path", func(t *testing.T) output { return applicationOutput(t, "app", "/ci/payments/../x", nil) },
			identity.CodeBadRequest, []string{"not a SPIFFE ID path"}},
		{"dns san not granted", func(t *testing.T) output {
			return applicationOutput(t, "app", "", []string{"web.svc.acme.internal", "a.b.svc.acme.internal"})
		}, identity.CodeRoleDenied, []string{`DNS SAN "a.b.svc.acme.internal"`, "dns_sans"}},
		{"wildcard dns san", func(t *testing.T) output { return applicationOutput(t, "app", "", []string{"*.svc.acme.internal"}) },
			identity.CodeBadRequest, []string{"no wildcards"}},
		{"audience not granted", func(t *testing.T) output { return jwtOutput("jwt", "", "sts.amazonaws.com", "https://evil.example") },
			identity.CodeRoleDenied, []string{`JWT audience "https://evil.example"`, "jwt_audiences"}},
		{"audience of a role the bot lacks", func(t *testing.T) output { return jwtOutput("jwt", "", "vault") },
			identity.CodeRoleDenied, []string{"role svc-admin would grant it"}},
		{"audience checked before the subject", func(t *testing.T) output { return jwtOutput("jwt", "/ci/other/x", "vault.acme") },
			identity.CodeRoleDenied, []string{"jwt_audiences"}},
		{"jwt subject not granted, audience granted", func(t *testing.T) output { return jwtOutput("jwt", "/ci/other/x", "sts.amazonaws.com") },
			identity.CodeRoleDenied, []string{`SPIFFE ID path "/ci/other/x"`, "spiffe_ids"}},
		{"no audience", func(t *testing.T) output { return jwtOutput("jwt", "") }, identity.CodeBadRequest, []string{"set audiences:"}},
		{"audience twice", func(t *testing.T) output { return jwtOutput("jwt", "", "sts.amazonaws.com", "sts.amazonaws.com") },
			identity.CodeBadRequest, []string{"twice"}},
		{"jwt with a key", func(t *testing.T) output {
			o := jwtOutput("jwt", "", "sts.amazonaws.com")
			o.req.TLSPublicKey = newOutput(t, "x").req.TLSPublicKey
			return o
		}, identity.CodeBadRequest, []string{"certifies no TLS key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Join(t.Context(), joinRequest("github-deploy", "github", githubToken(t, ci, nil), time.Hour, tc.out(t)), "test")
			var ierr *identity.Error
			if !errors.As(err, &ierr) || ierr.Code != tc.code {
				t.Fatalf("err = %v, want %s", err, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(ierr.Message, w) {
					t.Errorf("message %q does not say %q", ierr.Message, w)
				}
			}
			if tc.code == identity.CodeRoleDenied {
				if ev := lastAudit(t, a); ev.Allowed || ev.Code != string(tc.code) {
					t.Errorf("audit record %+v", ev)
				}
			}
		})
	}
}

// TestJWTOutput: one JWT-SVID per audience, ES256 with the jwt key's kid
// and typ JWT, sub = the SPIFFE ID, aud = that audience alone, iss = the
// issuer, exp within the output's TTL and never above an hour.
// servedSPIFFE serves an authority for spiffeYAML on loopback.
func servedSPIFFE(t *testing.T) (*authoritytest.Env, *http.Client) {
	t.Helper()
	env := authoritytest.Start(t, "acme", spiffeYAML, "")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(env.Authority.CAs().TLSCertPEM)
	return env, &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
}

func envToken(t *testing.T, env *authoritytest.Env) string {
	t.Helper()
	c := simci.GitHubClaims()
	c["aud"] = "acme"
	tok, err := env.Issuer.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestIssuerEndpoints: the authority serves, without authentication, a
// discovery document whose issuer is what JWT-SVIDs carry, the JWKS and
// the SPIFFE bundle (go-spiffe reads it: the spiffe CA and the jwt key).
// TestJWTSVIDWithGoOIDC: a go-oidc verifier configured with nothing but
// the authority's issuer URL (discovery and keys over the authority's TLS)
// accepts a JWT-SVID for its audience and refuses it for another.
// TestX509SVIDMutualTLS: X.509-SVIDs from application outputs carry mutual
// TLS between go-spiffe peers: a server authorizing one SPIFFE ID
// (tlsconfig.AuthorizeID) admits the client holding it and refuses one
// holding another; an identity output's tls.crt is refused too.
func TestX509SVIDMutualTLS(t *testing.T) {
	env, _ := servedSPIFFE(t)
	a := env.Authority
	join := func(token string, outs ...output) *identity.JoinResponse {
		t.Helper()
		resp, err := a.Join(t.Context(), joinRequest(token, "github", envToken(t, env), time.Hour, outs...), "test")
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	serverOut := applicationOutput(t, "api", "/svc/api", nil)
	serverSVID := x509SVID(t, serverOut, join("github-server", serverOut).Outputs[0])
	granted, other, id := applicationOutput(t, "app", "/ci/payments/app", nil), applicationOutput(t, "other", "/ci/payments/other", nil), newOutput(t, "id")
	resp := join("github-deploy", granted, other, id)
	grantedSVID, otherSVID := x509SVID(t, granted, resp.Outputs[0]), x509SVID(t, other, resp.Outputs[1])
	bundle, err := x509bundle.Parse(spiffeid.RequireTrustDomainFromString("acme"), []byte(resp.Outputs[0].Application.Bundle))
	if err != nil {
		t.Fatal(err)
	}

	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(serverSVID, bundle,
		// The bot's own ID too: the identity output's tls.crt carries it, and must still be refused (another CA).
		tlsconfig.AuthorizeOneOf(grantedSVID.ID, spiffeid.RequireFromString("spiffe://acme/bot/deployer"))))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err == nil {
					_, _ = c.Write([]byte("hello " + "\n"))
				}
			}(conn)
		}
	}()
	dial := func(cfg *tls.Config) error {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		defer conn.Close()
		// TLS 1.3: a refused client certificate shows on the first read.
		_, err = io.ReadAll(conn)
		return err
	}
	serverID := spiffeid.RequireFromString("spiffe://acme/svc/api")
	if err := dial(tlsconfig.MTLSClientConfig(grantedSVID, bundle, tlsconfig.AuthorizeID(serverID))); err != nil {
		t.Errorf("the granted SPIFFE ID is refused: %v", err)
	}
	if err := dial(tlsconfig.MTLSClientConfig(otherSVID, bundle, tlsconfig.AuthorizeID(serverID))); err == nil {
		t.Error("another SPIFFE ID is admitted")
	}
	idCert, err := tls.X509KeyPair([]byte(resp.Outputs[2].TLSCertificate), mustPEM(t, id.keys))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(bundle.X509Authorities()[0])
	if err := dial(&tls.Config{Certificates: []tls.Certificate{idCert}, RootCAs: roots, ServerName: "x",
		InsecureSkipVerify: true}); err == nil { // the client side is not under test here
		t.Error("an identity output's tls.crt (spiffe://acme/bot/deployer, tls CA) is admitted")
	}
	// The server refuses a client that authorizes any other server ID.
	if err := dial(tlsconfig.MTLSClientConfig(grantedSVID, bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://acme/svc/other")))); err == nil {
		t.Error("the client admits a server it does not authorize")
	}
}

func mustPEM(t *testing.T, k *identity.Keys) []byte {
	t.Helper()
	b, err := k.TLSPrivateKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIssuerURLSet: with issuer_url set, JWT-SVIDs carry it as iss, the
// discovery document names it, and the serving certificate covers its host.
// TestSVIDIsNoAuthorityIdentity: an X.509-SVID for the SPIFFE ID of an
// admin or of a bot (a role may grant /admin/* or /bot/*) is refused by the
// authority's admin API and renewals: those trust the tls CA only.
func TestSVIDIsNoAuthorityIdentity(t *testing.T) {
	env, _ := servedSPIFFE(t)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(env.Authority.CAs().TLSCertPEM)
	for _, tc := range []struct{ id, method, path string }{
		{"/admin/alice", "GET", authority.PathAdminResources},
		{"/bot/deployer", "POST", identity.PathRenew},
	} {
		o := applicationOutput(t, "svid", tc.id, nil)
		resp, err := env.Authority.Join(t.Context(), joinRequest("github-server", "github", envToken(t, env), time.Hour, o), "test")
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Outputs[0].Application.SPIFFEID; got != "spiffe://acme"+tc.id {
			t.Fatalf("SVID for %s", got)
		}
		cert, err := tls.X509KeyPair([]byte(resp.Outputs[0].TLSCertificate), mustPEM(t, o.keys))
		if err != nil {
			t.Fatal(err)
		}
		// Sent whatever CAs the server names (Go's client would otherwise
		// send nothing): the server must refuse it in the handshake.
		sendSVID := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, GetClientCertificate: sendSVID}}}
		req, _ := http.NewRequestWithContext(t.Context(), tc.method, env.URL+tc.path, strings.NewReader("{}"))
		if r, err := client.Do(req); err == nil {
			body, _ := io.ReadAll(r.Body)
			r.Body.Close()
			t.Errorf("%s %s with an SVID for %s: %d %s", tc.method, tc.path, tc.id, r.StatusCode, body)
		}
	}
}
