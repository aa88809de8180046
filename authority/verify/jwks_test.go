package verify

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// jwksServer publishes a key set that a test can rotate, and counts fetches.
type jwksServer struct {
	srv     *httptest.Server
	fetches atomic.Int32
	status  atomic.Int32 // 0 means 200
	mu      sync.Mutex
	keys    []jose.JSONWebKey
}

func startJWKS(t *testing.T, keys ...jose.JSONWebKey) *jwksServer {
	t.Helper()
	s := &jwksServer{keys: keys}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/jwks" {
			http.NotFound(w, r)
			return
		}
		s.fetches.Add(1)
		if code := int(s.status.Load()); code != 0 {
			http.Error(w, "unavailable", code)
			return
		}
		s.mu.Lock()
		set := jose.JSONWebKeySet{Keys: s.keys}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *jwksServer) publish(keys ...jose.JSONWebKey) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

func (s *jwksServer) cache() *jwksCache {
	return newJWKSCache(s.srv.URL+"/.well-known/jwks", s.srv.Client())
}

// signingKey is an issuer's private key and its published public half.
type signingKey struct {
	alg    jose.SignatureAlgorithm
	kid    string
	signer crypto.Signer
}

func newSigningKey(t *testing.T, alg jose.SignatureAlgorithm, kid string) *signingKey {
	t.Helper()
	var signer crypto.Signer
	var err error
	switch alg {
	case jose.ES256:
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.EdDSA:
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("no key for %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &signingKey{alg: alg, kid: kid, signer: signer}
}

func (k *signingKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.signer.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// sign makes a compact JWS over payload; kid is put in the header as given,
// so a test can forge a token that names a key it does not hold.
func (k *signingKey) sign(t *testing.T, kid, payload string) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.signer}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// expireFetch makes the cache's last fetch older than minKeyRefresh, as if
// that much time had passed.
func expireFetch(c *jwksCache) {
	c.mu.Lock()
	c.fetched = time.Now().Add(-minKeyRefresh - time.Second)
	c.mu.Unlock()
}

func TestJWKSCacheFetchesOnce(t *testing.T) {
	for _, alg := range []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA} {
		t.Run(string(alg), func(t *testing.T) {
			key := newSigningKey(t, alg, "key-1")
			srv := startJWKS(t, key.public())
			c := srv.cache()
			ctx := context.Background()
			for i := range 5 {
				payload := fmt.Sprintf(`{"sub":"job-%d"}`, i)
				got, err := c.VerifySignature(ctx, key.sign(t, key.kid, payload))
				if err != nil {
					t.Fatalf("token %d: %v", i, err)
				}
				if string(got) != payload {
					t.Errorf("token %d: payload %q, want %q", i, got, payload)
				}
			}
			if n := srv.fetches.Load(); n != 1 {
				t.Errorf("5 valid tokens fetched the JWKS %d times, want 1", n)
			}
		})
	}
}

func TestJWKSCacheTokenWithoutKid(t *testing.T) {
	other := newSigningKey(t, jose.ES256, "other")
	key := newSigningKey(t, jose.ES256, "key-1")
	srv := startJWKS(t, other.public(), key.public())
	c := srv.cache()
	if _, err := c.VerifySignature(context.Background(), key.sign(t, "", `{"sub":"x"}`)); err != nil {
		t.Errorf("a token without kid must verify against any published key: %v", err)
	}
}

func TestJWKSCacheConcurrentFirstUse(t *testing.T) {
	key := newSigningKey(t, jose.ES256, "key-1")
	srv := startJWKS(t, key.public())
	c := srv.cache()
	const n = 50
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = key.sign(t, key.kid, fmt.Sprintf(`{"sub":"job-%d"}`, i))
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = c.VerifySignature(context.Background(), tokens[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("token %d: %v", i, err)
		}
	}
	if got := srv.fetches.Load(); got != 1 {
		t.Errorf("%d concurrent first verifications fetched the JWKS %d times, want 1", n, got)
	}
}

// TestJWKSCacheBoundsRefetch presents many tokens that no published key
// verifies: they may cost the issuer at most one fetch per minKeyRefresh.
func TestJWKSCacheBoundsRefetch(t *testing.T) {
	key := newSigningKey(t, jose.ES256, "key-1")
	attacker := newSigningKey(t, jose.ES256, "key-1")
	tests := []struct {
		name string
		// token is the i-th bad token.
		token func(i int) string
		want  string
	}{
		{"unknown kid", func(i int) string { return attacker.sign(t, fmt.Sprintf("unknown-%d", i%3), `{"sub":"x"}`) },
			`the signing key "unknown-`},
		{"forged with a published kid", func(int) string { return attacker.sign(t, "key-1", `{"sub":"x"}`) },
			"the signature does not verify"},
		{"forged without kid", func(int) string { return attacker.sign(t, "", `{"sub":"x"}`) },
			"the signature does not verify"},
	}
	const bad = 50
	for _, tc := range tests {
		for _, warm := range []bool{false, true} {
			name := tc.name + " on a cold cache"
			if warm {
				name = tc.name + " after a valid token"
			}
			t.Run(name, func(t *testing.T) {
				srv := startJWKS(t, key.public())
				c := srv.cache()
				ctx := context.Background()
				if warm {
					if _, err := c.VerifySignature(ctx, key.sign(t, key.kid, `{"sub":"ok"}`)); err != nil {
						t.Fatal(err)
					}
					expireFetch(c) // so that the bad tokens may cause one refetch
				}
				before := srv.fetches.Load()
				errs := make([]error, bad)
				var wg sync.WaitGroup
				for i := range bad {
					tok := tc.token(i)
					wg.Go(func() { _, errs[i] = c.VerifySignature(ctx, tok) })
				}
				wg.Wait()
				for i, err := range errs {
					if err == nil {
						t.Fatalf("bad token %d verified", i)
					}
					if !strings.Contains(err.Error(), tc.want) {
						t.Errorf("bad token %d: error %q does not contain %q", i, err, tc.want)
					}
				}
				if n := srv.fetches.Load() - before; n != 1 {
					t.Errorf("%d bad tokens caused %d fetches, want 1", bad, n)
				}
				// The valid key still works, from the cache.
				if _, err := c.VerifySignature(ctx, key.sign(t, key.kid, `{"sub":"ok"}`)); err != nil {
					t.Errorf("a valid token after the bad ones: %v", err)
				}
				if n := srv.fetches.Load(); n > 2 {
					t.Errorf("the JWKS was fetched %d times in all, want at most 2", n)
				}
			})
		}
	}
}

func TestJWKSCacheUnknownKidNamed(t *testing.T) {
	key := newSigningKey(t, jose.ES256, "key-1")
	srv := startJWKS(t, key.public())
	c := srv.cache()
	_, err := c.VerifySignature(context.Background(), key.sign(t, "key-2026-01", `{"sub":"x"}`))
	if err == nil || !strings.Contains(err.Error(), `"key-2026-01"`) || !strings.Contains(err.Error(), "not among the issuer's published keys") {
		t.Errorf("error %v does not name the unknown kid", err)
	}
}

func TestJWKSCacheKeyRotation(t *testing.T) {
	oldKey := newSigningKey(t, jose.ES256, "key-2025")
	newKey := newSigningKey(t, jose.ES256, "key-2026")
	srv := startJWKS(t, oldKey.public())
	c := srv.cache()
	ctx := context.Background()
	if _, err := c.VerifySignature(ctx, oldKey.sign(t, oldKey.kid, `{"sub":"before"}`)); err != nil {
		t.Fatal(err)
	}
	srv.publish(newKey.public())
	rotated := newKey.sign(t, newKey.kid, `{"sub":"after"}`)

	// Within minKeyRefresh of the last fetch, the new key is not looked for.
	_, err := c.VerifySignature(ctx, rotated)
	if err == nil || !strings.Contains(err.Error(), `"key-2026"`) {
		t.Errorf("token of the new key within minKeyRefresh: %v, want an error naming key-2026", err)
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("JWKS fetched %d times within minKeyRefresh, want 1", n)
	}

	expireFetch(c)
	got, err := c.VerifySignature(ctx, rotated)
	if err != nil {
		t.Fatalf("token of the new key after minKeyRefresh: %v", err)
	}
	if string(got) != `{"sub":"after"}` {
		t.Errorf("payload %q", got)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times, want 2 (once more for the rotation)", n)
	}
	// The retired key is no longer trusted.
	if _, err := c.VerifySignature(ctx, oldKey.sign(t, oldKey.kid, `{"sub":"late"}`)); err == nil {
		t.Error("a token of the retired key verified after the rotation")
	}
}

func TestJWKSCacheFetchErrors(t *testing.T) {
	key := newSigningKey(t, jose.ES256, "key-1")
	tok := key.sign(t, key.kid, `{"sub":"x"}`)
	t.Run("issuer down, then back", func(t *testing.T) {
		srv := startJWKS(t, key.public())
		srv.status.Store(http.StatusServiceUnavailable)
		c := srv.cache()
		_, err := c.VerifySignature(context.Background(), tok)
		if err == nil || !strings.Contains(err.Error(), "503 Service Unavailable") {
			t.Fatalf("error %v does not give the issuer's status", err)
		}
		srv.status.Store(0)
		// A failed fetch is not retried within minKeyRefresh either, so
		// forged tokens cannot hammer an issuer that is down.
		for range 20 {
			if _, err := c.VerifySignature(context.Background(), tok); err == nil || !strings.Contains(err.Error(), "503") {
				t.Fatalf("within minKeyRefresh of a failed fetch: err = %v, want the last fetch error", err)
			}
		}
		if n := srv.fetches.Load(); n != 1 {
			t.Errorf("JWKS fetched %d times while the issuer was failing, want 1", n)
		}
		expireFetch(c)
		if _, err := c.VerifySignature(context.Background(), tok); err != nil {
			t.Errorf("after the issuer recovered: %v", err)
		}
	})
	t.Run("not a JWKS", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("<html>login</html>"))
		}))
		defer srv.Close()
		_, err := newJWKSCache(srv.URL, srv.Client()).VerifySignature(context.Background(), tok)
		if err == nil || !strings.Contains(err.Error(), "is not a JWKS") {
			t.Errorf("error %v does not say the answer is not a JWKS", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		_, err := newJWKSCache(url, http.DefaultClient).VerifySignature(context.Background(), tok)
		if err == nil || !strings.Contains(err.Error(), "fetching keys") {
			t.Errorf("error %v does not say fetching keys failed", err)
		}
	})
}

func TestJWKSCacheRefusesMalformed(t *testing.T) {
	key := newSigningKey(t, jose.ES256, "key-1")
	srv := startJWKS(t, key.public())
	c := srv.cache()
	hmacSigner, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hmacJWS, _ := hmacSigner.Sign([]byte(`{"sub":"x"}`))
	hmacTok, _ := hmacJWS.CompactSerialize()
	for name, tok := range map[string]string{
		"not a JWS": "not.a.token",
		"empty":     "",
		"HS256 JWS": hmacTok,
		"two dots":  "..",
		"truncated": key.sign(t, key.kid, `{"sub":"x"}`)[:40],
	} {
		if _, err := c.VerifySignature(context.Background(), tok); err == nil {
			t.Errorf("%s verified", name)
		}
	}
	if n := srv.fetches.Load(); n != 0 {
		t.Errorf("malformed tokens fetched the JWKS %d times, want 0", n)
	}
}
