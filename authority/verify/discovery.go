package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/sync/singleflight"
)

// discoveryRetry is how long a failed discovery is remembered: joins for an
// issuer that is down fail at once instead of each waiting for it, and the
// issuer is asked at most once per discoveryRetry.
const discoveryRetry = 15 * time.Second

// discoveryTimeout bounds one discovery request.
const discoveryTimeout = 10 * time.Second

// issuers discovers OIDC issuers and caches the outcome, good or bad.
type issuers struct {
	mu       sync.Mutex
	found    map[string]*remoteIssuer    // by issuer URL
	failures map[string]discoveryFailure // by issuer URL
	// inflight collapses concurrent discoveries of one issuer into one
	// request; as issuers come from the join tokens, this also bounds the
	// discoveries in flight by the number of issuers configured.
	inflight singleflight.Group
}

// remoteIssuer is a discovered issuer with its cached keys.
type remoteIssuer struct {
	verifier *oidc.IDTokenVerifier
	keys     *jwksCache
}

type discoveryFailure struct {
	at  time.Time
	err error
}

// remoteVerifier discovers issuer once and reuses its verifier (and key
// cache) for every join token that trusts it. A failed discovery is
// retried after discoveryRetry, not on every join.
func (e *Env) remoteVerifier(ctx context.Context, issuer string) (*oidc.IDTokenVerifier, error) {
	d := &e.issuers
	d.mu.Lock()
	r, ok := d.found[issuer]
	f, failed := d.failures[issuer]
	d.mu.Unlock()
	if ok {
		return r.verifier, nil
	}
	if failed {
		if ago := time.Since(f.at); ago < discoveryRetry {
			return nil, fmt.Errorf("%w; asked %s ago, asking again in %s", f.err, ago.Round(time.Second), (discoveryRetry - ago).Round(time.Second))
		}
	}
	ch := d.inflight.DoChan(issuer, func() (any, error) {
		r, err := e.discover(issuer)
		d.mu.Lock()
		defer d.mu.Unlock()
		if err != nil {
			if d.failures == nil {
				d.failures = map[string]discoveryFailure{}
			}
			d.failures[issuer] = discoveryFailure{at: time.Now(), err: err}
			return nil, err
		}
		if d.found == nil {
			d.found = map[string]*remoteIssuer{}
		}
		delete(d.failures, issuer)
		d.found[issuer] = r
		return r, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*remoteIssuer).verifier, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// discover reads issuer's discovery document for its keys' URL. It runs
// detached from any one join, as its outcome serves them all.
func (e *Env) discover(issuer string) (*remoteIssuer, error) {
	client := e.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	where := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	start := time.Now()
	body, err := getDocument(context.Background(), client, where, discoveryTimeout)
	e.observe(CallOIDCDiscovery, start, err)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURL string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("discovery: %s is not a discovery document: %v", where, err)
	}
	// As OpenID Connect Discovery 1.0 section 4.3 requires: a document
	// that names another issuer could hand out that issuer's trust.
	if doc.Issuer != issuer {
		return nil, fmt.Errorf("discovery: %s names issuer %q, not %q", where, doc.Issuer, issuer)
	}
	if doc.JWKSURL == "" {
		return nil, fmt.Errorf("discovery: the discovery document of %s has no jwks_uri", issuer)
	}
	if err := checkRemoteURL(doc.JWKSURL); err != nil {
		return nil, fmt.Errorf("discovery: jwks_uri %v", err)
	}
	keys := newJWKSCache(doc.JWKSURL, client)
	keys.observe = e.observe
	return &remoteIssuer{verifier: oidc.NewVerifier(issuer, keys, verifierConfig()), keys: keys}, nil
}
