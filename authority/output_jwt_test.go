package authority_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/identity"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

func jwtOutput(name, spiffeID string, audiences ...string) output {
	return output{req: identity.OutputRequest{Name: name, Type: identity.OutputJWT, JWT: &identity.JWTRequest{Audiences: audiences, SPIFFEID: spiffeID}}}
}

func TestJWTOutput(t *testing.T) {
	a, ci := openSPIFFEAuthority(t)
	cas := a.CAs()
	for _, tc := range []struct {
		name    string
		ttl     time.Duration
		wantTTL time.Duration
	}{{"ttl 10m", 10 * time.Minute, 10 * time.Minute}, {"ttl 8h capped at 1h", 8 * time.Hour, identity.MaxJWTSVIDTTL}} {
		t.Run(tc.name, func(t *testing.T) {
			o := jwtOutput("jwt", "/ci/payments/deploy", "sts.amazonaws.com", "https://vault.acme.internal")
			resp, err := a.Join(t.Context(), joinRequest("github-deploy", "github", githubToken(t, ci, nil), tc.ttl, o), "test")
			if err != nil {
				t.Fatal(err)
			}
			g := resp.Outputs[0].JWT
			if g == nil || len(g.SVIDs) != 2 || g.SPIFFEID != "spiffe://acme/ci/payments/deploy" || g.Issuer != "https://127.0.0.1:8443" {
				t.Fatalf("grant %+v", g)
			}
			for i, aud := range []string{"sts.amazonaws.com", "https://vault.acme.internal"} {
				s := g.SVIDs[i]
				tok, err := jwt.ParseSigned(s.Token, []jose.SignatureAlgorithm{jose.ES256})
				if err != nil {
					t.Fatal(err)
				}
				h := tok.Headers[0]
				if h.KeyID != cas.JWTKeyID || h.ExtraHeaders["typ"] != "JWT" || h.Algorithm != "ES256" {
					t.Errorf("header %+v", h)
				}
				var c jwt.Claims
				if err := tok.Claims(cas.JWT.Public(), &c); err != nil {
					t.Fatalf("signature: %v", err)
				}
				if s.Audience != aud || len(c.Audience) != 1 || c.Audience[0] != aud || c.Subject != g.SPIFFEID || c.Issuer != g.Issuer || c.ID == "" {
					t.Errorf("claims %+v for audience %s", c, aud)
				}
				if d := c.Expiry.Time().Sub(c.IssuedAt.Time()); d != tc.wantTTL {
					t.Errorf("lifetime %s, want %s", d, tc.wantTTL)
				}
				// go-spiffe reads it as a JWT-SVID for that audience only.
				bundle := spiffebundle.New(spiffeid.RequireTrustDomainFromString("acme"))
				if err := bundle.AddJWTAuthority(cas.JWTKeyID, cas.JWT.Public()); err != nil {
					t.Fatal(err)
				}
				if svid, err := jwtsvid.ParseAndValidate(s.Token, bundle, []string{aud}); err != nil || svid.ID.String() != g.SPIFFEID {
					t.Errorf("go-spiffe: %v, %v", svid, err)
				}
				if _, err := jwtsvid.ParseAndValidate(s.Token, bundle, []string{"other"}); err == nil {
					t.Error("go-spiffe accepts the JWT-SVID for another audience")
				}
			}
			ev := lastAudit(t, a)
			// (The store bounds each entry; this one is cut after the first audience.)
			if len(ev.Outputs) != 1 || !strings.HasPrefix(ev.Outputs[0], "jwt type=workload-identity-jwt spiffe_id=spiffe://acme/ci/payments/deploy audiences=sts.amazonaws.com,") {
				t.Errorf("audit outputs %q", ev.Outputs)
			}
			if data, _ := json.Marshal(ev); strings.Contains(string(data), g.SVIDs[0].Token) {
				t.Error("the audit record holds a token")
			}
		})
	}
}

func TestIssuerURLConfig(t *testing.T) {
	for _, tc := range []struct{ yaml, want, err string }{
		{"issuer_url: https://mbot.acme.com\n", "https://mbot.acme.com", ""},
		{"issuer_url: https://mbot.acme.com:8443/\n", "https://mbot.acme.com:8443", ""},
		{"issuer_url: http://mbot.acme.com\n", "", "must start with https://"},
		{"issuer_url: https://mbot.acme.com/oidc\n", "", "has a path"},
		{"issuer_url: https://mbot.acme.com?x=1\n", "", "no user, query or fragment"},
		{"issuer_url: 'https://a b'\n", "", "issuer_url"},
	} {
		cfg, err := authority.ParseConfig("authority.yaml", []byte("cluster_name: acme\n"+tc.yaml))
		switch {
		case tc.err == "" && (err != nil || cfg.IssuerURL != tc.want):
			t.Errorf("%q: %v, %+v", tc.yaml, err, cfg)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "authority.yaml:2: issuer_url")):
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.err)
		}
	}
}

func TestIssuerEndpoints(t *testing.T) {
	env, client := servedSPIFFE(t)
	cas := env.Authority.CAs()
	get := func(path string) ([]byte, http.Header) {
		t.Helper()
		resp, err := client.Get(env.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Cache-Control"), "public, max-age=") {
			t.Fatalf("GET %s: %d %v %s", path, resp.StatusCode, resp.Header, body)
		}
		return body, resp.Header
	}
	body, _ := get(identity.PathOIDCDiscovery)
	var disc authority.OIDCDiscovery
	if err := json.Unmarshal(body, &disc); err != nil {
		t.Fatal(err)
	}
	if disc.Issuer != env.URL || disc.JWKSURI != env.URL+identity.PathJWKS || strings.Join(disc.IDTokenSigningAlgValuesSupported, ",") != "ES256" ||
		strings.Join(disc.SubjectTypesSupported, ",") != "public" || strings.Join(disc.ResponseTypesSupported, ",") != "id_token" {
		t.Errorf("discovery %+v (authority at %s)", disc, env.URL)
	}
	body, _ = get(identity.PathJWKS)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil || len(set.Keys) != 1 || set.Keys[0].KeyID != cas.JWTKeyID || !set.Keys[0].IsPublic() {
		t.Errorf("jwks %s: %v", body, err)
	}
	body, _ = get(identity.PathSPIFFEBundle)
	bundle, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString("acme"), body)
	if err != nil {
		t.Fatalf("go-spiffe refuses the bundle %s: %v", body, err)
	}
	if x := bundle.X509Authorities(); len(x) != 1 || !x[0].Equal(cas.SPIFFE.Cert) {
		t.Error("the bundle's x509-svid authority is not the spiffe CA")
	}
	if k, ok := bundle.FindJWTAuthority(cas.JWTKeyID); !ok || !cas.JWT.PublicKey.Equal(k) {
		t.Error("the bundle's jwt-svid authority is not the jwt key")
	}
	if strings.Contains(string(body), `"d"`) {
		t.Error("the bundle holds a private key member")
	}
	if out, err := cas.Export("spiffe-bundle"); err != nil || strings.TrimSpace(out) != strings.TrimSpace(string(body)) {
		t.Errorf("mbot authority export --type spiffe-bundle differs from the served bundle: %v\n%s", err, out)
	}
}

func TestJWTSVIDWithGoOIDC(t *testing.T) {
	env, client := servedSPIFFE(t)
	resp, err := env.Authority.Join(t.Context(), joinRequest("github-deploy", "github", envToken(t, env), time.Hour,
		jwtOutput("jwt", "", "sts.amazonaws.com", "https://vault.acme.internal")), "test")
	if err != nil {
		t.Fatal(err)
	}
	g := resp.Outputs[0].JWT
	if g.Issuer != env.URL {
		t.Fatalf("issuer %s, authority at %s", g.Issuer, env.URL)
	}
	ctx := oidc.ClientContext(t.Context(), client)
	provider, err := oidc.NewProvider(ctx, env.URL)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	for _, s := range g.SVIDs {
		idt, err := provider.Verifier(&oidc.Config{ClientID: s.Audience}).Verify(ctx, s.Token)
		if err != nil {
			t.Fatalf("go-oidc refuses the JWT-SVID for %s: %v", s.Audience, err)
		}
		if idt.Subject != "spiffe://acme/bot/deployer" || idt.Issuer != env.URL {
			t.Errorf("subject %s issuer %s", idt.Subject, idt.Issuer)
		}
	}
	if _, err := provider.Verifier(&oidc.Config{ClientID: "sts.amazonaws.com"}).Verify(ctx, g.SVIDs[1].Token); err == nil || !strings.Contains(err.Error(), "audience") {
		t.Errorf("go-oidc accepts the vault JWT-SVID for sts.amazonaws.com: %v", err)
	}
	if _, err := provider.Verifier(&oidc.Config{ClientID: "other"}).Verify(ctx, g.SVIDs[0].Token); err == nil {
		t.Error("go-oidc accepts the JWT-SVID for another audience")
	}
}

func TestIssuerURLSet(t *testing.T) {
	ci, dir := startWithResources(t, spiffeYAML)
	cfg, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"),
		[]byte("cluster_name: acme\ndata_dir: data\nresources: [bots.yaml]\ntls_names: [auth.acme.internal]\nissuer_url: https://mbot.acme.com/\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := authority.Open(t.Context(), cfg, authority.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	resp, err := a.Join(t.Context(), joinRequest("github-deploy", "github", githubToken(t, ci, nil), time.Hour, jwtOutput("jwt", "", "vault.acme")), "test")
	var ierr *identity.Error
	if !errors.As(err, &ierr) || ierr.Code != identity.CodeRoleDenied {
		t.Fatalf("audience not granted: %v", err)
	}
	resp, err = a.Join(t.Context(), joinRequest("github-deploy", "github", githubToken(t, ci, nil), time.Hour, jwtOutput("jwt", "", "sts.amazonaws.com")), "test")
	if err != nil {
		t.Fatal(err)
	}
	if g := resp.Outputs[0].JWT; g.Issuer != "https://mbot.acme.com" {
		t.Errorf("issuer %q, want issuer_url without its slash", g.Issuer)
	}
	tlsCfg, err := a.ServingTLS()
	if err == nil {
		tlsCfg, err = tlsCfg.GetConfigForClient(&tls.ClientHelloInfo{})
	}
	if err != nil {
		t.Fatal(err)
	}
	if names := tlsCfg.Certificates[0].Leaf.DNSNames; !slices.Contains(names, "mbot.acme.com") || !slices.Contains(names, "auth.acme.internal") {
		t.Errorf("serving certificate names %q lack the issuer's host", names)
	}
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest("GET", identity.PathOIDCDiscovery, nil))
	var disc authority.OIDCDiscovery
	if err := json.Unmarshal(rec.Body.Bytes(), &disc); err != nil || disc.Issuer != "https://mbot.acme.com" || disc.JWKSURI != "https://mbot.acme.com/.well-known/jwks.json" {
		t.Errorf("discovery %s: %v", rec.Body, err)
	}
}
