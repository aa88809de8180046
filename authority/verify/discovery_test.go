package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/identity"
	"gopkg.in/yaml.v3"
)

// oidcServer is a loopback OIDC issuer that can rotate its keys, fail,
// answer slowly or with too much, and counts the requests it gets.
type oidcServer struct {
	*jwksServer // the JWKS, its fetch count and status
	URL         string
	discoveries atomic.Int32
	down        atomic.Bool  // discovery answers 503
	delay       atomic.Int64 // discovery waits this long (ns)
	huge        atomic.Bool  // the JWKS is larger than maxDocument
	hugeDoc     atomic.Bool  // the discovery document is larger than maxDocument
	jwksURI     atomic.Value // string; default <URL>/.well-known/jwks
	issuerName  atomic.Value // string; default URL
	redirect    atomic.Value // string; discovery redirects there
}

func startOIDC(t *testing.T, keys ...jose.JSONWebKey) *oidcServer {
	t.Helper()
	s := &oidcServer{jwksServer: &jwksServer{keys: keys}}
	mux := http.NewServeMux()
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	s.URL = s.srv.URL
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		s.discoveries.Add(1)
		time.Sleep(time.Duration(s.delay.Load()))
		if to, ok := s.redirect.Load().(string); ok {
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
		if s.down.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		doc := map[string]any{"issuer": s.URL, "jwks_uri": s.URL + "/.well-known/jwks"}
		if v, ok := s.jwksURI.Load().(string); ok {
			doc["jwks_uri"] = v
		}
		if v, ok := s.issuerName.Load().(string); ok {
			doc["issuer"] = v
		}
		if s.hugeDoc.Load() {
			doc["padding"] = strings.Repeat("x", maxDocument)
		}
		_ = json.NewEncoder(w).Encode(doc)
	})
	mux.HandleFunc("GET /.well-known/jwks", func(w http.ResponseWriter, _ *http.Request) {
		s.fetches.Add(1)
		if code := int(s.status.Load()); code != 0 {
			http.Error(w, "unavailable", code)
			return
		}
		s.mu.Lock()
		set := jose.JSONWebKeySet{Keys: s.keys}
		s.mu.Unlock()
		if s.huge.Load() {
			for range 20000 { // about 2 MB of well-formed keys
				set.Keys = append(set.Keys, set.Keys[0])
			}
		}
		_ = json.NewEncoder(w).Encode(set)
	})
	return s
}

// verifierFor compiles a generic oidc join token trusting s.
func verifierFor(t *testing.T, s *oidcServer) (Verifier, *Env) {
	t.Helper()
	var node yaml.Node
	if err := yaml.Unmarshal([]byte("issuer: "+s.URL+"\nallow:\n  - sub: job\n"), &node); err != nil {
		t.Fatal(err)
	}
	env := &Env{Audience: "acme", HTTPClient: s.srv.Client()}
	v, err := Methods["oidc"].Compile("ci", node.Content[0], env)
	if err != nil {
		t.Fatal(err)
	}
	return v, env
}

func (s *oidcServer) token(t *testing.T, key *signingKey) string {
	t.Helper()
	now := time.Now()
	return key.sign(t, key.kid, fmt.Sprintf(`{"iss":%q,"aud":"acme","sub":"job","iat":%d,"exp":%d,"jti":"%d"}`,
		s.URL, now.Unix(), now.Add(5*time.Minute).Unix(), now.UnixNano()))
}

func wantCode(t *testing.T, err error, code identity.ErrorCode, fragment string) {
	t.Helper()
	var ie *identity.Error
	if !errors.As(err, &ie) || ie.Code != code {
		t.Fatalf("err = %v, want %s", err, code)
	}
	if !strings.Contains(ie.Message, fragment) {
		t.Errorf("message %q does not contain %q", ie.Message, fragment)
	}
}

// ageKeys makes the keys of the issuer's cache as old as age.
func ageKeys(t *testing.T, env *Env, issuer string, age time.Duration) *jwksCache {
	t.Helper()
	env.issuers.mu.Lock()
	r := env.issuers.found[issuer]
	env.issuers.mu.Unlock()
	if r == nil {
		t.Fatal("the issuer was not discovered")
	}
	c := r.keys
	c.mu.Lock()
	c.okAt, c.fetched = time.Now().Add(-age), time.Now().Add(-age)
	c.mu.Unlock()
	return c
}

func TestDiscoveryIssuerDown(t *testing.T) {
	key := newSigningKey(t, jose.ES256, "key-1")
	s := startOIDC(t, key.public())
	s.down.Store(true)
	v, env := verifierFor(t, s)
	const joins = 30
	start := time.Now()
	for i := range joins {
		_, err := v.Verify(t.Context(), s.token(t, key))
		wantCode(t, err, identity.CodeIssuerUnavailable, "503 Service Unavailable")
		if i > 0 && !strings.Contains(err.Error(), "asking again in") {
			t.Errorf("join %d: %v does not say when the issuer is asked again", i, err)
		}
	}
	if n := s.discoveries.Load(); n != 1 {
		t.Errorf("%d joins for an issuer that is down made %d discovery requests, want 1", joins, n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("%d joins took %s; they must fail fast", joins, d)
	}

	// After discoveryRetry, the issuer is asked again, and it is back.
	s.down.Store(false)
	env.issuers.mu.Lock()
	f := env.issuers.failures[s.URL]
	f.at = f.at.Add(-discoveryRetry)
	env.issuers.failures[s.URL] = f
	env.issuers.mu.Unlock()
	if _, err := v.Verify(t.Context(), s.token(t, key)); err != nil {
		t.Fatalf("after the issuer came back: %v", err)
	}
	if n := s.discoveries.Load(); n != 2 {
		t.Errorf("%d discovery requests, want 2", n)
	}
}

func TestDiscoveryConcurrentCollapse(t *testing.T) {
	key := newSigningKey(t, jose.ES256, "key-1")
	s := startOIDC(t, key.public())
	s.delay.Store(int64(300 * time.Millisecond))
	v, _ := verifierFor(t, s)
	const n = 40
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		tok := s.token(t, key)
		wg.Go(func() { _, errs[i] = v.Verify(context.Background(), tok) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("join %d: %v", i, err)
		}
	}
	if got := s.discoveries.Load(); got != 1 {
		t.Errorf("%d concurrent first joins made %d discovery requests, want 1", n, got)
	}
	if got := s.fetches.Load(); got != 1 {
		t.Errorf("%d concurrent first joins fetched the JWKS %d times, want 1", n, got)
	}
}

func TestDiscoveryRefusals(t *testing.T) {
	key := newSigningKey(t, jose.ES256, "key-1")
	tests := []struct {
		name  string
		setup func(s *oidcServer)
		want  string
	}{
		{"oversized JWKS", func(s *oidcServer) { s.huge.Store(true) }, "answered with more than 1048576 bytes"},
		{"oversized discovery document", func(s *oidcServer) { s.hugeDoc.Store(true) }, "answered with more than 1048576 bytes"},
		{"jwks_uri over plain http", func(s *oidcServer) { s.jwksURI.Store("http://keys.example.com/jwks") }, "plain http is allowed only for a loopback address"},
		{"redirect to plain http", func(s *oidcServer) { s.redirect.Store("http://issuer.example.com/.well-known/openid-configuration") },
			"plain http is allowed only for a loopback address"},
		{"document of another issuer", func(s *oidcServer) { s.issuerName.Store("https://evil.example.com") }, `names issuer "https://evil.example.com"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startOIDC(t, key.public())
			tc.setup(s)
			v, _ := verifierFor(t, s)
			_, err := v.Verify(t.Context(), s.token(t, key))
			wantCode(t, err, identity.CodeIssuerUnavailable, tc.want)
		})
	}
}

// TestJWKSRotationThroughIssuer: a key the issuer withdrew stops verifying
// once the keys are older than maxKeyAge, without any other trigger; a new
// kid is fetched at once, at most once per minKeyRefresh.
func TestJWKSRotationThroughIssuer(t *testing.T) {
	oldKey := newSigningKey(t, jose.ES256, "key-2025")
	newKey := newSigningKey(t, jose.ES256, "key-2026")
	s := startOIDC(t, oldKey.public())
	v, env := verifierFor(t, s)
	if _, err := v.Verify(t.Context(), s.token(t, oldKey)); err != nil {
		t.Fatal(err)
	}

	t.Run("withdrawn key refused after the hourly refresh", func(t *testing.T) {
		s.publish(newKey.public())
		// Within maxKeyAge the cached key still verifies, from the cache.
		if _, err := v.Verify(t.Context(), s.token(t, oldKey)); err != nil {
			t.Fatalf("cached key within maxKeyAge: %v", err)
		}
		if n := s.fetches.Load(); n != 1 {
			t.Fatalf("%d JWKS fetches, want 1", n)
		}
		ageKeys(t, env, s.URL, maxKeyAge+time.Minute)
		_, err := v.Verify(t.Context(), s.token(t, oldKey))
		wantCode(t, err, identity.CodeProofInvalid, `"key-2025" is not among the issuer's published keys`)
		if n := s.fetches.Load(); n != 2 {
			t.Errorf("%d JWKS fetches, want 2 (the hourly refresh)", n)
		}
		if _, err := v.Verify(t.Context(), s.token(t, newKey)); err != nil {
			t.Errorf("the new key after the refresh: %v", err)
		}
	})

	t.Run("new kid fetched at once, rate limited", func(t *testing.T) {
		third := newSigningKey(t, jose.ES256, "key-2027")
		s.publish(newKey.public(), third.public())
		ageKeys(t, env, s.URL, minKeyRefresh+time.Second) // fresh keys, last fetch long enough ago
		before := s.fetches.Load()
		if _, err := v.Verify(t.Context(), s.token(t, third)); err != nil {
			t.Fatalf("a new kid: %v", err)
		}
		if n := s.fetches.Load() - before; n != 1 {
			t.Errorf("a new kid caused %d fetches, want 1", n)
		}
		// Tokens naming kids the issuer never published: no more fetches
		// within minKeyRefresh.
		attacker := newSigningKey(t, jose.ES256, "")
		for i := range 50 {
			attacker.kid = fmt.Sprintf("forged-%d", i)
			_, err := v.Verify(t.Context(), s.token(t, attacker))
			wantCode(t, err, identity.CodeProofInvalid, "not among the issuer's published keys")
		}
		if n := s.fetches.Load() - before; n != 1 {
			t.Errorf("50 unknown kids within minKeyRefresh caused %d fetches in all, want 1", n)
		}
	})

	t.Run("issuer down past maxStaleKeys", func(t *testing.T) {
		ageKeys(t, env, s.URL, maxKeyAge+time.Minute)
		s.status.Store(http.StatusBadGateway)
		// Stale keys are still used while the issuer is briefly down...
		if _, err := v.Verify(t.Context(), s.token(t, newKey)); err != nil {
			t.Fatalf("stale keys within maxStaleKeys: %v", err)
		}
		// ...but not forever.
		ageKeys(t, env, s.URL, maxStaleKeys+time.Minute)
		_, err := v.Verify(t.Context(), s.token(t, newKey))
		wantCode(t, err, identity.CodeIssuerUnavailable, "502 Bad Gateway")
	})
}
