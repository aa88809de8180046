package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// minKeyRefresh is how often at most an issuer's JWKS is fetched again
// because a token did not verify against the cached keys. go-oidc's
// RemoteKeySet refetches on every such token, which would let anyone with
// forged tokens make the authority hammer the issuer.
const minKeyRefresh = 10 * time.Second

// jwksCache verifies JWS signatures against an issuer's published keys,
// fetched on first use and again when a key rotates.
type jwksCache struct {
	url    string
	client *http.Client

	mu      sync.Mutex // held while fetching, so concurrent misses fetch once
	keys    []jose.JSONWebKey
	fetched time.Time // last fetch attempt, successful or not
	lastErr error     // the error of that attempt
}

func newJWKSCache(url string, client *http.Client) *jwksCache {
	return &jwksCache{url: url, client: client}
}

// VerifySignature implements oidc.KeySet. The algorithm has already been
// checked against the allowed list by go-oidc.
func (c *jwksCache) VerifySignature(ctx context.Context, token string) ([]byte, error) {
	jws, err := jose.ParseSigned(token, jwsAlgs)
	if err != nil {
		return nil, fmt.Errorf("malformed JWS: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("a token must carry exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	c.mu.Lock()
	keys := c.keys
	c.mu.Unlock()
	if payload, ok := verifyWith(jws, keys, kid); ok {
		return payload, nil
	}
	keys, err = c.refresh(ctx)
	if err != nil {
		return nil, err
	}
	if payload, ok := verifyWith(jws, keys, kid); ok {
		return payload, nil
	}
	if kid != "" && !hasKid(keys, kid) {
		return nil, fmt.Errorf("the signing key %q is not among the issuer's published keys", kid)
	}
	return nil, errors.New("the signature does not verify")
}

// refresh fetches the key set unless it was fetched within minKeyRefresh.
func (c *jwksCache) refresh(ctx context.Context) ([]jose.JSONWebKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.fetched.IsZero() && time.Since(c.fetched) < minKeyRefresh {
		return c.keys, c.lastErr
	}
	keys, err := c.fetch(ctx)
	c.fetched, c.lastErr = time.Now(), err
	if err != nil {
		return c.keys, err // keep the keys we had: the issuer may be down briefly
	}
	c.keys = keys
	return keys, nil
}

func (c *jwksCache) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching keys: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("fetching keys: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching keys: %s answered %s", c.url, resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("fetching keys: %s is not a JWKS: %w", c.url, err)
	}
	return set.Keys, nil
}

func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid string) ([]byte, bool) {
	for i := range keys {
		if kid != "" && keys[i].KeyID != kid {
			continue
		}
		if payload, err := jws.Verify(&keys[i]); err == nil {
			return payload, true
		}
	}
	return nil, false
}

func hasKid(keys []jose.JSONWebKey, kid string) bool {
	for _, k := range keys {
		if k.KeyID == kid {
			return true
		}
	}
	return false
}

// jwsAlgs are the algorithms go-jose may parse; go-oidc has already refused
// any outside asymmetricAlgs before the key set is asked.
var jwsAlgs = func() []jose.SignatureAlgorithm {
	out := make([]jose.SignatureAlgorithm, len(asymmetricAlgs))
	for i, a := range asymmetricAlgs {
		out[i] = jose.SignatureAlgorithm(a)
	}
	return out
}()
