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
// because a token did not verify against the cached keys (a new kid after a
// rotation). go-oidc's RemoteKeySet refetches on every such token, which
// would let anyone with forged tokens make the authority hammer the issuer.
const minKeyRefresh = 10 * time.Second

// maxKeyAge is how long fetched keys are trusted without asking the issuer
// again: a key the issuer withdrew stops verifying within this time.
const maxKeyAge = time.Hour

// maxStaleKeys is how long keys are still used past maxKeyAge while the
// issuer cannot be reached, so that a short outage of the issuer does not
// stop every join; after it, the keys are dropped.
const maxStaleKeys = 24 * time.Hour

// maxDocument bounds a discovery document or JWKS read from an issuer.
const maxDocument = 1 << 20

// jwksCache verifies JWS signatures against an issuer's published keys,
// fetched on first use, again when a token names a key it does not know
// (at most once per minKeyRefresh) and when they are older than maxKeyAge.
type jwksCache struct {
	url    string
	client *http.Client
	// observe, if set, is told of each fetch (Env.Observe).
	observe func(call string, start time.Time, err error)

	fetching sync.Mutex // held while fetching, so concurrent misses fetch once

	mu      sync.Mutex // guards the fields below; never held while fetching
	keys    []jose.JSONWebKey
	okAt    time.Time // last successful fetch
	fetched time.Time // last fetch attempt, successful or not
	lastErr error     // the error of that attempt
}

func newJWKSCache(url string, client *http.Client) *jwksCache {
	return &jwksCache{url: url, client: client}
}

// keysUnavailable carries, through go-oidc (which flattens the key set's
// errors to text), why the keys could not be fetched, so that the caller
// can answer issuer_unavailable rather than proof_invalid.
type keysUnavailable struct{ err error }

type keysUnavailableKey struct{}

// withKeysUnavailable returns a context in which VerifySignature reports a
// failed fetch into the returned slot.
func withKeysUnavailable(ctx context.Context) (context.Context, *keysUnavailable) {
	slot := &keysUnavailable{}
	return context.WithValue(ctx, keysUnavailableKey{}, slot), slot
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
	keys, fresh := c.keys, time.Since(c.okAt) < maxKeyAge
	c.mu.Unlock()
	if fresh {
		if payload, ok := verifyWith(jws, keys, kid); ok {
			return payload, nil
		}
	}
	keys, err = c.refresh(ctx)
	if err != nil {
		if slot, ok := ctx.Value(keysUnavailableKey{}).(*keysUnavailable); ok {
			slot.err = err
		}
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
// It returns the keys to verify with, or an error when there are none: the
// fetch failed and the keys from before are older than maxStaleKeys.
func (c *jwksCache) refresh(ctx context.Context) ([]jose.JSONWebKey, error) {
	c.fetching.Lock()
	defer c.fetching.Unlock()
	c.mu.Lock()
	recent := !c.fetched.IsZero() && time.Since(c.fetched) < minKeyRefresh
	c.mu.Unlock()
	if !recent {
		// Detached from the caller: the result serves every join, and one
		// caller hanging up must not be cached as the issuer failing.
		keys, err := c.fetch(context.WithoutCancel(ctx))
		c.mu.Lock()
		c.fetched, c.lastErr = time.Now(), err
		if err == nil {
			c.keys, c.okAt = keys, c.fetched
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr != nil && (c.okAt.IsZero() || time.Since(c.okAt) > maxStaleKeys) {
		c.keys = nil
		return nil, c.lastErr
	}
	// Keys of a failed refresh are kept (the issuer may be down briefly).
	return c.keys, nil
}

func (c *jwksCache) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	start := time.Now()
	body, err := getDocument(ctx, c.client, c.url, 5*time.Second)
	if c.observe != nil {
		c.observe(CallJWKS, start, err)
	}
	if err != nil {
		return nil, fmt.Errorf("fetching keys: %w", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("fetching keys: %s is not a JWKS: %w", c.url, err)
	}
	return set.Keys, nil
}

// getDocument GETs url with a timeout and reads at most maxDocument bytes
// of its body: an issuer's answer is untrusted until verified.
func getDocument(ctx context.Context, client *http.Client, url string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// A redirect must not lead where an issuer URL may not point.
	c := *client
	c.CheckRedirect = func(next *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("more than 5 redirects")
		}
		return checkRemoteURL(next.URL.String())
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxDocument {
		return nil, fmt.Errorf("%s answered with more than %d bytes", url, maxDocument)
	}
	return body, nil
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
