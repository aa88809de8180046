// Package client is mbot's side of the join: it talks to the authority,
// runs the joiner for the job's platform and writes the identity outputs.
package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// API is a connection to an authority.
type API struct {
	base   *url.URL
	client *http.Client
	// unpinned is a client given no --ca-pin, which trusts the system roots.
	unpinned bool
}

// NewAPI returns a client for the authority at authorityURL. With a CA pin
// (sha256:<hex of the TLS CA's SubjectPublicKeyInfo>) the server must present
// a chain to a CA with that key; without one, the system roots are used.
// Several pins, separated by commas, accept a CA of any of them: what
// clients are given while the authority rotates its TLS CA.
func NewAPI(authorityURL, caPin string) (*API, error) {
	u, err := parseAuthorityURL(authorityURL)
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, CurvePreferences: identity.TLSCurves}
	if caPin != "" {
		var pins [][]byte
		for _, p := range strings.Split(caPin, ",") {
			pin, err := parsePin(strings.TrimSpace(p))
			if err != nil {
				return nil, err
			}
			pins = append(pins, pin)
		}
		// The CA is not known before connecting, so Go's default verification
		// (which needs roots up front) is replaced by verifyPinned, which does
		// the same chain and hostname checks against the pinned CA.
		tlsCfg.InsecureSkipVerify = true
		tlsCfg.VerifyConnection = verifyPinned(pins, u.Hostname())
	}
	api := newAPI(u, tlsCfg)
	api.unpinned = caPin == ""
	return api, nil
}

// NewAPIWithIdentity returns a client that trusts roots and presents cert:
// what admin commands use with an admin identity directory.
func NewAPIWithIdentity(authorityURL string, roots *x509.CertPool, cert tls.Certificate) (*API, error) {
	u, err := parseAuthorityURL(authorityURL)
	if err != nil {
		return nil, err
	}
	return newAPI(u, &tls.Config{MinVersion: tls.VersionTLS12, CurvePreferences: identity.TLSCurves,
		RootCAs: roots, Certificates: []tls.Certificate{cert}}), nil
}

func parseAuthorityURL(authorityURL string) (*url.URL, error) {
	u, err := url.Parse(authorityURL)
	if err != nil || u.Host == "" {
		return nil, settingErrorf("--authority %q is not a URL such as https://auth.example.com:8443", authorityURL)
	}
	if u.Scheme != "https" {
		return nil, settingErrorf("--authority %q must use https://", authorityURL)
	}
	return u, nil
}

func newAPI(u *url.URL, tlsCfg *tls.Config) *API {
	transport := &http.Transport{
		TLSClientConfig:     tlsCfg,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 1,
		ForceAttemptHTTP2:   false,
	}
	return &API{base: u, client: &http.Client{Transport: transport, Timeout: 30 * time.Second}}
}

func parsePin(pin string) ([]byte, error) {
	hexPart, ok := strings.CutPrefix(pin, "sha256:")
	sum, err := hex.DecodeString(hexPart)
	if !ok || err != nil || len(sum) != sha256.Size {
		return nil, settingErrorf("--ca-pin %q is not sha256:<64 hex digits>; get it with mbot authority export --type ca-pin", pin)
	}
	return sum, nil
}

// pinMismatchError is a server whose chain holds no CA of the pinned key.
type pinMismatchError struct{ pinned, presented []byte }

// pinPrefix is how much of a pin a message shows: enough to tell two apart.
const pinPrefix = 16

func (e *pinMismatchError) Error() string {
	presented := "no CA certificate"
	if e.presented != nil {
		presented = "CA sha256:" + hex.EncodeToString(e.presented)[:pinPrefix] + "..."
	}
	return fmt.Sprintf("it presented %s, --ca-pin is sha256:%s...; check the pin (mbot authority export --type ca-pin) and that --authority names the right server",
		presented, hex.EncodeToString(e.pinned)[:pinPrefix])
}

// verifyPinned accepts the server if one certificate of its chain is a CA
// whose key matches the pin and the leaf verifies up to it for serverName.
func verifyPinned(pins [][]byte, serverName string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the authority presented no certificate")
		}
		roots := x509.NewCertPool()
		found := false
		var presented []byte // the pin of the server's CA, for the message
		for _, c := range cs.PeerCertificates {
			sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
			if c.IsCA && slices.ContainsFunc(pins, func(pin []byte) bool { return bytes.Equal(sum[:], pin) }) {
				roots.AddCert(c)
				found = true
			}
			if c.IsCA && presented == nil {
				presented = sum[:]
			}
		}
		if !found {
			return &pinMismatchError{pinned: pins[0], presented: presented}
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			DNSName:   serverName,
			Roots:     roots,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("the authority's certificate is not valid for %s: %w; add the name to tls_names in authority.yaml", serverName, err)
		}
		return nil
	}
}

// Ping asks the authority who it is and which audience to request.
func (c *API) Ping(ctx context.Context) (*identity.PingResponse, error) {
	var out identity.PingResponse
	return &out, c.Do(ctx, http.MethodGet, identity.PathPing, nil, &out)
}

// Challenge asks for a challenge to sign for a bound_keypair join with joinToken.
func (c *API) Challenge(ctx context.Context, joinToken string) (*identity.ChallengeResponse, error) {
	var out identity.ChallengeResponse
	return &out, c.Do(ctx, http.MethodPost, identity.PathJoinChallenge, &identity.ChallengeRequest{JoinToken: joinToken}, &out)
}

// A join refused with Retry-After (rate_limited, or issuer_unavailable when
// the authority's calls to the platform are saturated) was not looked at,
// so the same proof may be sent again: Join waits and retries, up to
// maxJoinAttempts times, when the wait is at most maxRetryAfter and leaves
// retryMargin before the context's deadline for the retry itself.
const (
	maxJoinAttempts = 3
	maxRetryAfter   = 10 * time.Second
	retryMargin     = 2 * time.Second
)

// A join refused store_unavailable (the authority's database is down or
// restarting; nothing was recorded) is retried with backoff, from
// Retry-After up to maxStoreRetryStep between attempts, for as long as the
// context's deadline (mbot issue --timeout) allows.
const maxStoreRetryStep = 8 * time.Second

// Join sends one join request, retrying as the authority's Retry-After says.
func (c *API) Join(ctx context.Context, req *identity.JoinRequest) (*identity.JoinResponse, error) {
	start := time.Now()
	var storeBackoff *backoff
	for attempt := 1; ; attempt++ {
		var out identity.JoinResponse
		err := c.Do(ctx, http.MethodPost, identity.PathJoin, req, &out)
		if err == nil {
			return &out, nil
		}
		var refusal *identity.Error
		if !errors.As(err, &refusal) || refusal.RetryAfter <= 0 {
			return nil, err
		}
		wait := refusal.RetryAfter
		deadline, hasDeadline := ctx.Deadline()
		if refusal.Code == identity.CodeStoreUnavailable {
			if storeBackoff == nil {
				storeBackoff = &backoff{first: min(wait, maxStoreRetryStep), limit: maxStoreRetryStep, randN: rand.Int64N}
			}
			wait = max(wait, storeBackoff.next())
			if !hasDeadline || time.Until(deadline) < wait+retryMargin {
				return nil, &identity.Error{Code: refusal.Code, RetryAfter: refusal.RetryAfter,
					Message: fmt.Sprintf("the authority's store is down: %s (mbot tried %d times over %s; raise --timeout to wait longer, or ask the authority's admins to bring its database back)",
						refusal.Message, attempt, time.Since(start).Round(time.Second))}
			}
		} else if attempt >= maxJoinAttempts || wait > maxRetryAfter || hasDeadline && time.Until(deadline) < wait+retryMargin {
			return nil, &identity.Error{Code: refusal.Code, RetryAfter: wait,
				Message: fmt.Sprintf("%s (the authority asks to retry in %s; mbot tried %d times)", refusal.Message, wait, attempt)}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// retryAfter reads a Retry-After header in seconds or as an HTTP date.
func retryAfter(h string) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// CloseIdleConnections releases the connection to the authority.
func (c *API) CloseIdleConnections() { c.client.CloseIdleConnections() }

// Do sends in as JSON to path (which may carry a query) and decodes the
// answer into out (nil to ignore it). A refusal is an *identity.Error.
func (c *API) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	p, query, _ := strings.Cut(path, "?")
	target := c.base.JoinPath(p) // keeps a path prefix of --authority (a reverse proxy)
	target.RawQuery = query
	req, err := http.NewRequestWithContext(ctx, method, target.String(), body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		var mismatch *pinMismatchError
		if errors.As(err, &mismatch) {
			// The server answered: it is not unreachable, it is not the one pinned.
			return fmt.Errorf("reached %s, but it is not the authority pinned: %w", c.base.Host, mismatch)
		}
		var unknownCA x509.UnknownAuthorityError
		if c.unpinned && errors.As(err, &unknownCA) {
			// An authority's TLS CA is its own, in no system store: the usual
			// first mistake, not a network problem.
			return fmt.Errorf("reached the authority at %s, but its certificate is signed by a CA this machine does not trust (%w); "+
				"pass the authority's pin with --ca-pin (MBOT_CA_PIN, or ca_pin: in mbot.yaml), which mbot authority export --type ca-pin prints on the authority host",
				c.base.Host, err)
		}
		return fmt.Errorf("cannot reach the authority at %s: %w", c.base.Host, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("reading the authority's answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e identity.ErrorResponse
		if json.Unmarshal(data, &e) == nil && e.Code != "" {
			// The answer is printed to a terminal and a CI log: a hostile or
			// broken authority must not send escapes or forge lines.
			return &identity.Error{
				Code:       identity.ErrorCode(identity.Printable(identity.Truncate(string(e.Code), 64))),
				Message:    identity.Printable(identity.Truncate(e.Message, 4096)),
				RetryAfter: retryAfter(resp.Header.Get("Retry-After")),
			}
		}
		return fmt.Errorf("the authority answered %s to %s; is %s an mbot authority?", resp.Status, path, c.base.Host)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("the authority's answer to %s is not valid: %w", path, err)
	}
	return nil
}
