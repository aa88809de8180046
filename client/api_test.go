package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
)

// testCA is a TLS CA like the authority's: an ECDSA P-256 key and a
// self-signed CA certificate.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// pin is the CA pin of SPEC §3: sha256 of the DER SubjectPublicKeyInfo.
func (ca *testCA) pin() string {
	sum := sha256.Sum256(ca.cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// leaf is a serving certificate's shape; zero fields take working defaults.
type leaf struct {
	dnsNames []string
	ips      []net.IP
	eku      []x509.ExtKeyUsage
	notAfter time.Time
}

// issue signs a serving certificate and returns the chain [leaf, CA] as a
// server presents it.
func (ca *testCA) issue(t *testing.T, l leaf) tls.Certificate {
	t.Helper()
	if l.eku == nil {
		l.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if l.notAfter.IsZero() {
		l.notAfter = time.Now().Add(time.Hour)
	}
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "mbot authority"},
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     l.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  l.eku,
		DNSNames:     l.dnsNames,
		IPAddresses:  l.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
}

var loopback = leaf{dnsNames: []string{"localhost"}, ips: []net.IP{net.IPv4(127, 0, 0, 1)}}

// startAuthority serves handler over TLS with chain as its certificate.
func startAuthority(t *testing.T, chain tls.Certificate, handler http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{chain}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// pingHandler answers /v1/ping like an authority of cluster acme.
func pingHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+identity.PathPing, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(identity.PingResponse{ClusterName: "acme", Audience: "acme",
			Version: "test", Methods: []string{"github", "gitlab"}})
	})
	return mux
}

func ping(t *testing.T, url, pin string) (*identity.PingResponse, error) {
	t.Helper()
	api, err := client.NewAPI(url, pin)
	if err != nil {
		t.Fatalf("NewAPI: %v", err)
	}
	defer api.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return api.Ping(ctx)
}

func TestNewAPIRefuses(t *testing.T) {
	validPin := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name, url, pin, want string
	}{
		{"plain http", "http://auth.acme.internal:8443", validPin, "must use https://"},
		{"no scheme", "auth.acme.internal:8443", validPin, "is not a URL"},
		{"empty", "", validPin, "is not a URL"},
		{"pin without prefix", "https://auth.acme.internal:8443", strings.Repeat("ab", 32), "mbot authority export --type ca-pin"},
		{"pin with another hash", "https://auth.acme.internal:8443", "sha1:" + strings.Repeat("ab", 20), "mbot authority export --type ca-pin"},
		{"pin too short", "https://auth.acme.internal:8443", "sha256:" + strings.Repeat("ab", 31), "mbot authority export --type ca-pin"},
		{"pin too long", "https://auth.acme.internal:8443", validPin + "ab", "mbot authority export --type ca-pin"},
		{"pin not hex", "https://auth.acme.internal:8443", "sha256:" + strings.Repeat("zz", 32), "mbot authority export --type ca-pin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api, err := client.NewAPI(tc.url, tc.pin)
			if err == nil {
				api.CloseIdleConnections()
				t.Fatalf("NewAPI(%q, %q) succeeded", tc.url, tc.pin)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestPinnedConnection(t *testing.T) {
	ca := newCA(t, "acme TLS CA")
	other := newCA(t, "another CA")
	good := startAuthority(t, ca.issue(t, loopback), pingHandler())
	localhostURL := strings.Replace(good.URL, "127.0.0.1", "localhost", 1)
	// A leaf from another CA, presented with the pinned CA's (public) certificate.
	impostorChain := other.issue(t, loopback)
	impostorChain.Certificate = append(impostorChain.Certificate, ca.cert.Raw)
	impostor := startAuthority(t, impostorChain, pingHandler())
	leafPinned := startAuthority(t, ca.issue(t, loopback), pingHandler())
	leafCert, _ := x509.ParseCertificate(leafPinned.TLS.Certificates[0].Certificate[0])
	leafSum := sha256.Sum256(leafCert.RawSubjectPublicKeyInfo)

	tests := []struct {
		name string
		url  string
		pin  string
		want string // "" means the ping succeeds
	}{
		{"right pin", good.URL, ca.pin(), ""},
		{"right pin by host name", localhostURL, ca.pin(), ""},
		{"right pin in upper case", good.URL, "sha256:" + strings.ToUpper(strings.TrimPrefix(ca.pin(), "sha256:")), ""},
		{"wrong pin", good.URL, other.pin(), "--ca-pin is " + other.pin()[:len("sha256:")+16] + "..."},
		{"pin of the leaf, not a CA", leafPinned.URL, "sha256:" + hex.EncodeToString(leafSum[:]), "it is not the authority pinned"},
		{"leaf of another CA beside the pinned CA", impostor.URL, ca.pin(), "not valid for 127.0.0.1"},
		{"leaf not for the host name", startAuthority(t, ca.issue(t, leaf{dnsNames: []string{"auth.acme.internal"}}), pingHandler()).URL,
			ca.pin(), "not valid for 127.0.0.1"},
		{"leaf expired", startAuthority(t, ca.issue(t, leaf{ips: loopback.ips, notAfter: time.Now().Add(-time.Minute)}), pingHandler()).URL,
			ca.pin(), "not valid for 127.0.0.1"},
		{"leaf for clients only", startAuthority(t, ca.issue(t, leaf{ips: loopback.ips, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}), pingHandler()).URL,
			ca.pin(), "not valid for 127.0.0.1"},
		// Without a pin the system roots apply, which do not hold the test CA.
		{"no pin", good.URL, "", "reached the authority at " + strings.TrimPrefix(good.URL, "https://") + ", but its certificate is signed by a CA this machine does not trust"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ping(t, tc.url, tc.pin)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Ping: %v", err)
				}
				if got.ClusterName != "acme" || got.Audience != "acme" || len(got.Methods) != 2 {
					t.Errorf("Ping = %+v, want cluster acme", got)
				}
				return
			}
			if err == nil {
				t.Fatalf("Ping succeeded (%+v), want an error containing %q", got, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestPinMismatchMessage checks that a server that answers with another CA is
// reported as reached but not the one pinned, with both pins' prefixes, and
// not as unreachable.
func TestPinMismatchMessage(t *testing.T) {
	ca := newCA(t, "acme TLS CA")
	other := newCA(t, "another CA")
	srv := startAuthority(t, ca.issue(t, loopback), pingHandler())
	_, err := ping(t, srv.URL, other.pin())
	if err == nil {
		t.Fatal("Ping with the wrong pin succeeded")
	}
	host := strings.TrimPrefix(srv.URL, "https://")
	for _, want := range []string{
		"reached " + host + ", but it is not the authority pinned",
		"presented CA " + ca.pin()[:len("sha256:")+16] + "...",
		"--ca-pin is " + other.pin()[:len("sha256:")+16] + "...",
		"mbot authority export --type ca-pin",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("error %q says the authority was not reached", err)
	}
}

// TestUnpinnedUnknownCAMessage checks that an authority reached without
// --ca-pin, whose CA the system does not trust, is reported as reached,
// with the flag to pass and the command that prints the pin, and that a
// malformed --authority or --ca-pin is a mistake in the command line.
func TestUnpinnedUnknownCAMessage(t *testing.T) {
	srv := startAuthority(t, newCA(t, "acme TLS CA").issue(t, loopback), pingHandler())
	_, err := ping(t, srv.URL, "")
	if err == nil {
		t.Fatal("Ping without a pin succeeded against a CA in no system store")
	}
	for _, want := range []string{"reached the authority at " + strings.TrimPrefix(srv.URL, "https://"),
		"signed by a CA this machine does not trust", "--ca-pin", "mbot authority export --type ca-pin"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("error %q says the authority was not reached", err)
	}
	for _, tc := range [][2]string{{"auth.acme.internal", ""}, {"https://auth.acme.internal", "sha256:zz"}} {
		if _, err := client.NewAPI(tc[0], tc[1]); !errors.Is(err, client.ErrBadSetting) {
			t.Errorf("NewAPI(%q, %q) = %v, want an error that is ErrBadSetting", tc[0], tc[1], err)
		}
	}
}

func TestAPIErrors(t *testing.T) {
	ca := newCA(t, "acme TLS CA")
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+identity.PathJoin, func(w http.ResponseWriter, r *http.Request) {
		var req identity.JoinRequest
		if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&req) != nil {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(identity.ErrorResponse{Code: identity.CodeBadRequest, Message: "not JSON"})
			return
		}
		if req.JoinToken == "github-deploy" {
			_ = json.NewEncoder(w).Encode(identity.JoinResponse{ClusterName: "acme", Bot: "deployer", JoinToken: req.JoinToken})
			return
		}
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(identity.ErrorResponse{Code: identity.CodeUnknownJoinToken,
			Message: `join token "` + req.JoinToken + `" does not exist`})
	})
	mux.HandleFunc("GET "+identity.PathPing, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "upstream down", http.StatusBadGateway)
	})
	srv := startAuthority(t, ca.issue(t, loopback), mux)
	api, err := client.NewAPI(srv.URL, ca.pin())
	if err != nil {
		t.Fatal(err)
	}
	defer api.CloseIdleConnections()
	ctx := context.Background()

	resp, err := api.Join(ctx, &identity.JoinRequest{JoinToken: "github-deploy", Method: "github", Proof: "jwt"})
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	if resp.Bot != "deployer" || resp.JoinToken != "github-deploy" {
		t.Errorf("Join = %+v, want bot deployer", resp)
	}

	_, err = api.Join(ctx, &identity.JoinRequest{JoinToken: "nope", Method: "github", Proof: "jwt"})
	var refusal *identity.Error
	if !errors.As(err, &refusal) {
		t.Fatalf("Join with an unknown token: %v (%T), want an *identity.Error", err, err)
	}
	if refusal.Code != identity.CodeUnknownJoinToken || refusal.Message != `join token "nope" does not exist` {
		t.Errorf("refusal = %+v, want code %s and the authority's message", refusal, identity.CodeUnknownJoinToken)
	}

	// A hostile authority's message cannot forge lines or send terminal escapes.
	_, err = api.Join(ctx, &identity.JoinRequest{JoinToken: "x\n::set-output name=a::b\x1b[2J", Method: "github", Proof: "jwt"})
	if !errors.As(err, &refusal) {
		t.Fatalf("Join with a hostile token name: %v, want an *identity.Error", err)
	}
	if strings.ContainsAny(refusal.Message, "\n\x1b") || !strings.Contains(refusal.Message, `\n::set-output`) {
		t.Errorf("refusal message %q carries control characters or lost the escaped text", refusal.Message)
	}

	_, err = api.Ping(ctx)
	if err == nil || errors.As(err, &refusal) {
		t.Fatalf("Ping of a non-JSON 502: %v, want a plain error", err)
	}
	for _, want := range []string{"502 Bad Gateway", identity.PathPing, "mbot authority"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// refusingJoins serves an authority whose first refusals joins are
// answered status with code, message and Retry-After retryAfter, and the
// rest admitted as bot deployer; *calls counts the joins it answered.
func refusingJoins(t *testing.T, ca *testCA, refusals int, retryAfter string, status int, code identity.ErrorCode, message string) (api *client.API, calls *int) {
	t.Helper()
	calls = new(int)
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+identity.PathJoin, func(w http.ResponseWriter, r *http.Request) {
		*calls++
		w.Header().Set("Content-Type", "application/json")
		if *calls <= refusals {
			w.Header().Set("Retry-After", retryAfter)
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(identity.ErrorResponse{Code: code, Message: message})
			return
		}
		_ = json.NewEncoder(w).Encode(identity.JoinResponse{ClusterName: "acme", Bot: "deployer"})
	})
	srv := startAuthority(t, ca.issue(t, loopback), mux)
	api, err := client.NewAPI(srv.URL, ca.pin())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(api.CloseIdleConnections)
	return api, calls
}

// TestJoinHonoursRetryAfter answers joins 429 rate_limited with
// Retry-After: Join waits and retries when the wait fits its deadline, and
// otherwise returns the refusal with the authority's message at once.
func TestJoinHonoursRetryAfter(t *testing.T) {
	ca := newCA(t, "acme TLS CA")
	cases := []struct {
		name       string
		retryAfter string
		limited    int // answers 429 before admitting
		timeout    time.Duration
		wantCalls  int
		wantErr    bool
		wantWait   time.Duration
	}{
		{"one second, then admitted", "1", 1, 10 * time.Second, 2, false, time.Second},
		{"limited on every attempt", "1", 100, 10 * time.Second, 3, true, 2 * time.Second},
		{"longer than mbot waits", "120", 1, 10 * time.Second, 1, true, 0},
		{"longer than the deadline leaves", "2", 1, 3 * time.Second, 1, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			api, calls := refusingJoins(t, ca, tc.limited, tc.retryAfter, http.StatusTooManyRequests, identity.CodeRateLimited, "too many refusals from 127.0.0.1")
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			resp, err := api.Join(ctx, &identity.JoinRequest{JoinToken: "github-deploy", Method: "github", Proof: "jwt"})
			took := time.Since(start)
			if *calls != tc.wantCalls {
				t.Errorf("%d requests, want %d", *calls, tc.wantCalls)
			}
			if took < tc.wantWait || took > tc.wantWait+time.Second {
				t.Errorf("took %s, want about %s", took, tc.wantWait)
			}
			if !tc.wantErr {
				if err != nil || resp.Bot != "deployer" {
					t.Fatalf("Join = %+v, %v; want admitted after the wait", resp, err)
				}
				return
			}
			var refusal *identity.Error
			if !errors.As(err, &refusal) || refusal.Code != identity.CodeRateLimited {
				t.Fatalf("err = %v, want rate_limited", err)
			}
			if !strings.Contains(refusal.Message, "too many refusals from 127.0.0.1") || !strings.Contains(refusal.Message, "retry in") ||
				refusal.RetryAfter <= 0 {
				t.Errorf("refusal %+v should carry the authority's message and Retry-After", refusal)
			}
		})
	}
}

// TestJoinRetriesWhileStoreUnavailable answers joins 503 store_unavailable:
// Join keeps retrying, past the three attempts other Retry-After refusals
// get, until the authority's store is back or the deadline is near, and
// then says the store is down.
func TestJoinRetriesWhileStoreUnavailable(t *testing.T) {
	ca := newCA(t, "acme TLS CA")
	cases := []struct {
		name        string
		unavailable int // answers 503 before admitting
		timeout     time.Duration
		wantMin     int // requests at least
		wantErr     bool
	}{
		{"store back after four refusals", 4, 30 * time.Second, 5, false},
		{"store down for the whole timeout", 1000, 6 * time.Second, 2, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			api, calls := refusingJoins(t, ca, tc.unavailable, "1", http.StatusServiceUnavailable, identity.CodeStoreUnavailable, "the authority's store (its database) is unavailable")
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			resp, err := api.Join(ctx, &identity.JoinRequest{JoinToken: "github-deploy", Method: "github", Proof: "jwt"})
			if *calls < tc.wantMin {
				t.Errorf("%d requests, want at least %d", *calls, tc.wantMin)
			}
			if !tc.wantErr {
				if err != nil || resp.Bot != "deployer" {
					t.Fatalf("Join = %+v, %v; want admitted once the store is back", resp, err)
				}
				return
			}
			var refusal *identity.Error
			if !errors.As(err, &refusal) || refusal.Code != identity.CodeStoreUnavailable {
				t.Fatalf("err = %v, want store_unavailable", err)
			}
			if !strings.Contains(refusal.Message, "the authority's store is down") || !strings.Contains(refusal.Message, "--timeout") {
				t.Errorf("message %q should say the authority's store is down and how to wait longer", refusal.Message)
			}
			if ctx.Err() != nil {
				t.Errorf("Join ran past its deadline instead of giving up before it")
			}
		})
	}
}
