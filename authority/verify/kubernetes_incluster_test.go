package verify_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

// reviewStatus is the status a TokenReview stand-in answers for a token.
type reviewStatus struct {
	Authenticated bool                `json:"authenticated"`
	User          map[string]any      `json:"user,omitempty"`
	Audiences     []string            `json:"audiences,omitempty"`
	Error         string              `json:"error,omitempty"`
	extra         map[string][]string // merged into User
}

// tokenReviewServer is a loopback TLS stand-in for the API server's
// TokenReview endpoint. It admits only the authority's bearer token and
// the authority's audience, and answers each known token as told.
type tokenReviewServer struct {
	t   *testing.T
	srv *httptest.Server
	// caFile is the server's certificate, as the pod's ca.crt.
	caFile string
	// tokenFile holds the authority's own token; bearer is what the server accepts.
	tokenFile string

	mu       sync.Mutex
	bearer   string
	answers  map[string]reviewStatus
	requests int
	status   int // when set, answered instead of a review
}

func startTokenReviewServer(t *testing.T) *tokenReviewServer {
	t.Helper()
	s := &tokenReviewServer{t: t, bearer: "authority-token-1", answers: map[string]reviewStatus{}}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the wrong-CA case fails handshakes
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	dir := t.TempDir()
	s.caFile = filepath.Join(dir, "ca.crt")
	writeTestFile(t, s.caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})))
	s.tokenFile = filepath.Join(dir, "token")
	writeTestFile(t, s.tokenFile, s.bearer+"\n")
	return s
}

func writeTestFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rotate makes the server accept only a new authority token, written to the token file.
func (s *tokenReviewServer) rotate(bearer string) {
	s.mu.Lock()
	s.bearer = bearer
	s.mu.Unlock()
	writeTestFile(s.t, s.tokenFile, bearer)
}

func (s *tokenReviewServer) answer(token string, st reviewStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers[token] = st
}

func (s *tokenReviewServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
		s.t.Errorf("request %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+s.bearer {
		http.Error(w, `{"kind":"Status","reason":"Unauthorized"}`, http.StatusUnauthorized)
		return
	}
	if s.status != 0 {
		http.Error(w, `{"kind":"Status"}`, s.status)
		return
	}
	var req struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Spec       struct {
			Token     string   `json:"token"`
			Audiences []string `json:"audiences"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		s.t.Errorf("request body: %v", err)
	}
	if req.APIVersion != "authentication.k8s.io/v1" || req.Kind != "TokenReview" {
		s.t.Errorf("request is %s %s, not an authentication.k8s.io/v1 TokenReview", req.APIVersion, req.Kind)
	}
	if !reflect.DeepEqual(req.Spec.Audiences, []string{"acme"}) {
		s.t.Errorf("review for audiences %v, want the authority's [acme]", req.Spec.Audiences)
	}
	st, ok := s.answers[req.Spec.Token]
	if !ok {
		st = reviewStatus{Error: "invalid bearer token"}
	}
	if st.extra != nil {
		st.User["extra"] = st.extra
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
		"spec": req.Spec, "status": st,
	})
}

// section is spec.kubernetes trusting the stand-in.
func (s *tokenReviewServer) section(allow string) string {
	return "type: in_cluster\napi_server: " + s.srv.URL + "\nca_file: " + s.caFile + "\ntoken_file: " + s.tokenFile + "\nallow:\n" + allow
}

// podReview is what the API server answers for a projected token of pod
// mbot-job-7x2kq, service account ci:deployer, for audiences.
func podReview(audiences ...string) reviewStatus {
	return reviewStatus{
		Authenticated: true,
		Audiences:     audiences,
		User: map[string]any{
			"username": "system:serviceaccount:ci:deployer",
			"uid":      "a087d5a0-e1dd-43ec-93ac-f13d89cd13af",
			"groups":   []string{"system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"},
		},
		extra: map[string][]string{
			"authentication.kubernetes.io/pod-name":  {"mbot-job-7x2kq"},
			"authentication.kubernetes.io/pod-uid":   {"778a530c-b3f4-47c0-9cd5-ab018fb64f33"},
			"authentication.kubernetes.io/node-name": {"ci-pool-7f9c4d6b5-x2kq8"},
		},
	}
}

func TestKubernetesInCluster(t *testing.T) {
	iss := startIssuer(t, jose.RS256)
	api := startTokenReviewServer(t)
	v := mustCompile(t, "kubernetes", api.section("  - service_account: ci:deployer\n"), newEnv(nil))
	token := func(edit func(c map[string]any)) string {
		c := tokenClaims(t, "kubernetes", verify.KubernetesDefaultIssuer, "acme")
		if edit != nil {
			edit(c)
		}
		return iss.Sign(t, c)
	}

	t.Run("admitted", func(t *testing.T) {
		tok := token(nil)
		api.answer(tok, podReview("acme"))
		adm, err := v.Verify(t.Context(), tok)
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		want := policy.Claims{
			"sub":             {"system:serviceaccount:ci:deployer"},
			"service_account": {"ci:deployer"},
			"namespace":       {"ci"},
			"pod_name":        {"mbot-job-7x2kq"},
			"pod_uid":         {"778a530c-b3f4-47c0-9cd5-ab018fb64f33"},
			"node_name":       {"ci-pool-7f9c4d6b5-x2kq8"},
		}
		if !reflect.DeepEqual(adm.Claims, want) {
			t.Errorf("claims %v, want %v", adm.Claims, want)
		}
		if want := now.Add(5*time.Minute + verify.Leeway); !adm.UsableUntil.Equal(want) {
			t.Errorf("usable until %s, want exp and the leeway, %s", adm.UsableUntil, want)
		}
		again, err := v.Verify(t.Context(), tok)
		if err != nil {
			t.Fatalf("refused the second time: %v", err)
		}
		if adm.ProofID == "" || again.ProofID != adm.ProofID {
			t.Errorf("proof ids %q and %q, want the same for the same token", adm.ProofID, again.ProofID)
		}
		if other := token(nil); other != tok {
			api.answer(other, podReview("acme"))
			if adm2, err := v.Verify(t.Context(), other); err != nil || adm2.ProofID == adm.ProofID {
				t.Errorf("another token: proof id %v (err %v), want one of its own", adm2, err)
			}
		}
	})

	t.Run("same proof id as static_jwks", func(t *testing.T) {
		// A token without jti (before Kubernetes 1.29) is keyed on its claims.
		tok := token(func(c map[string]any) { delete(c, "jti") })
		api.answer(tok, podReview("acme"))
		offline := mustCompile(t, "kubernetes", "type: static_jwks\nstatic_jwks: '"+iss.JWKS()+"'\nallow:\n  - service_account: ci:deployer\n", newEnv(nil))
		a, err := v.Verify(t.Context(), tok)
		if err != nil {
			t.Fatal(err)
		}
		b, err := offline.Verify(t.Context(), tok)
		if err != nil {
			t.Fatal(err)
		}
		if a.ProofID != b.ProofID {
			t.Errorf("in_cluster proof id %s, static_jwks %s: one token could join twice", a.ProofID, b.ProofID)
		}
	})

	for _, tc := range []struct {
		name      string
		edit      func(c map[string]any)
		review    func(st *reviewStatus)
		known     bool // the stand-in has no answer: unauthenticated
		wantCode  identity.ErrorCode
		wantInMsg []string
	}{
		{
			name: "not authenticated",
			review: func(st *reviewStatus) {
				*st = reviewStatus{Error: "[invalid bearer token, service account token has been invalidated]"}
			},
			wantCode:  identity.CodeProofInvalid,
			wantInMsg: []string{"did not authenticate", "service account token has been invalidated"},
		},
		{
			name:      "unknown to the cluster",
			known:     true,
			wantCode:  identity.CodeProofInvalid,
			wantInMsg: []string{"invalid bearer token"},
		},
		{
			name:      "authenticated for another audience",
			review:    func(st *reviewStatus) { st.Audiences = []string{"https://kubernetes.default.svc.cluster.local"} },
			wantCode:  identity.CodeWrongAudience,
			wantInMsg: []string{`expects audience "acme"`, "https://kubernetes.default.svc.cluster.local"},
		},
		{
			name:      "no audiences in the answer",
			review:    func(st *reviewStatus) { st.Audiences = nil },
			wantCode:  identity.CodeWrongAudience,
			wantInMsg: []string{`expects audience "acme"`},
		},
		{
			name:      "not a service account",
			review:    func(st *reviewStatus) { st.User["username"] = "system:node:ci-pool-7f9c4d6b5-x2kq8" },
			wantCode:  identity.CodeProofInvalid,
			wantInMsg: []string{`"system:node:ci-pool-7f9c4d6b5-x2kq8" is not a service account`},
		},
		{
			name:      "not bound to a pod",
			review:    func(st *reviewStatus) { delete(st.extra, "authentication.kubernetes.io/pod-name") },
			wantCode:  identity.CodeProofInvalid,
			wantInMsg: []string{"not bound to a pod", "projected service account token"},
		},
		{
			name:      "subject is not the authenticated user",
			review:    func(st *reviewStatus) { st.User["username"] = "system:serviceaccount:kube-system:deployer" },
			wantCode:  identity.CodeProofInvalid,
			wantInMsg: []string{"is not the user"},
		},
		{
			name:      "lives a year",
			edit:      lifetime(365 * 24 * time.Hour),
			wantCode:  identity.CodeProofInvalid,
			wantInMsg: []string{"8760h0m0s", "expirationSeconds"},
		},
		{
			name:      "no exp",
			edit:      func(c map[string]any) { delete(c, "exp") },
			wantCode:  identity.CodeProofInvalid,
			wantInMsg: []string{"no exp claim"},
		},
		{
			name: "expired by the authority's clock",
			edit: func(c map[string]any) {
				c["iat"], c["exp"] = now.Add(-time.Hour).Unix(), now.Add(-50*time.Minute).Unix()
			},
			wantCode:  identity.CodeProofExpired,
			wantInMsg: []string{"expired"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := token(tc.edit)
			if !tc.known {
				st := podReview("acme")
				if tc.review != nil {
					tc.review(&st)
				}
				api.answer(tok, st)
			}
			_, err := v.Verify(t.Context(), tok)
			wantRefusal(t, err, tc.wantCode, tc.wantInMsg...)
		})
	}

	t.Run("not a JWT", func(t *testing.T) {
		api.mu.Lock()
		before := api.requests
		api.mu.Unlock()
		_, err := v.Verify(t.Context(), "not-a-token")
		wantRefusal(t, err, identity.CodeProofInvalid, "not a Kubernetes service account token")
		api.mu.Lock()
		defer api.mu.Unlock()
		if api.requests != before {
			t.Error("a proof that is not a JWT was sent to the API server")
		}
	})
}

// TestKubernetesInClusterAPIServer covers the authority's side of the
// review: its rotating token, the cluster CA, and an unreachable server.
func TestKubernetesInClusterAPIServer(t *testing.T) {
	iss := startIssuer(t, jose.RS256)
	api := startTokenReviewServer(t)
	allow := "  - service_account: ci:deployer\n"
	tok := iss.Sign(t, tokenClaims(t, "kubernetes", verify.KubernetesDefaultIssuer, "acme"))
	api.answer(tok, podReview("acme"))

	t.Run("the authority's token is read on every review", func(t *testing.T) {
		v := mustCompile(t, "kubernetes", api.section(allow), newEnv(nil))
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatalf("refused: %v", err)
		}
		api.rotate("authority-token-2")
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatalf("refused after the authority's token rotated: %v", err)
		}
	})
	t.Run("the authority's token is refused", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "token")
		writeTestFile(t, other, "stale")
		v := mustCompile(t, "kubernetes", strings.Replace(api.section(allow), api.tokenFile, other, 1), newEnv(nil))
		_, err := v.Verify(t.Context(), tok)
		wantRefusal(t, err, identity.CodeIssuerUnavailable, "does not accept the authority's own token")
	})
	t.Run("no token file", func(t *testing.T) {
		v := mustCompile(t, "kubernetes", strings.Replace(api.section(allow), api.tokenFile, "/nonexistent/token", 1), newEnv(nil))
		_, err := v.Verify(t.Context(), tok)
		wantRefusal(t, err, identity.CodeIssuerUnavailable, "/nonexistent/token", "token_file")
	})
	t.Run("not allowed to create tokenreviews", func(t *testing.T) {
		v := mustCompile(t, "kubernetes", api.section(allow), newEnv(nil))
		api.mu.Lock()
		api.status = http.StatusForbidden
		api.mu.Unlock()
		defer func() { api.mu.Lock(); api.status = 0; api.mu.Unlock() }()
		_, err := v.Verify(t.Context(), tok)
		wantRefusal(t, err, identity.CodeIssuerUnavailable, "system:auth-delegator")
	})
	t.Run("another CA", func(t *testing.T) {
		// httptest's servers share one certificate: make another CA.
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "another cluster"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		ca := filepath.Join(t.TempDir(), "ca.crt")
		writeTestFile(t, ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
		v := mustCompile(t, "kubernetes", strings.Replace(api.section(allow), api.caFile, ca, 1), newEnv(nil))
		_, err = v.Verify(t.Context(), tok)
		wantRefusal(t, err, identity.CodeIssuerUnavailable, "certificate")
	})
	t.Run("unreachable", func(t *testing.T) {
		down := startTokenReviewServer(t)
		section := down.section(allow)
		down.srv.Close()
		v := mustCompile(t, "kubernetes", section, newEnv(nil))
		_, err := v.Verify(t.Context(), tok)
		wantRefusal(t, err, identity.CodeIssuerUnavailable, down.srv.URL)
	})
	t.Run("defaults from the pod's environment", func(t *testing.T) {
		u, err := url.Parse(api.srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("KUBERNETES_SERVICE_HOST", host)
		t.Setenv("KUBERNETES_SERVICE_PORT", port)
		section := "type: in_cluster\nca_file: " + api.caFile + "\ntoken_file: " + api.tokenFile + "\nallow:\n" + allow
		v := mustCompile(t, "kubernetes", section, newEnv(nil))
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatalf("refused: %v", err)
		}
	})
}

func TestKubernetesInClusterCompile(t *testing.T) {
	rule := "allow:\n  - service_account: ci:deployer\n"
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for _, tc := range []compileCase{
		{"api_server", "type: in_cluster\napi_server: https://k8s.acme.internal:6443\n" + rule, ""},
		{"all the files", "type: in_cluster\napi_server: https://10.0.0.1\nca_file: /etc/mbot/ca.crt\ntoken_file: /etc/mbot/token\n" + rule, ""},
		{"outside a pod without api_server", "type: in_cluster\n" + rule, "line 8: spec.kubernetes: type in_cluster needs the authority to run in the cluster"},
		{"plain http", "type: in_cluster\napi_server: http://10.0.0.1\n" + rule, `api_server "http://10.0.0.1" is not an https://host[:port] URL`},
		{"a path", "type: in_cluster\napi_server: https://10.0.0.1/apis\n" + rule, "is not an https://host[:port] URL"},
		{"with issuer", "type: in_cluster\napi_server: https://10.0.0.1\nissuer: https://kubernetes.default.svc\n" + rule, "line 10: spec.kubernetes.issuer: type in_cluster asks the authority's own API server"},
		{"with static_jwks", "type: in_cluster\napi_server: https://10.0.0.1\nstatic_jwks: '{}'\n" + rule, "remove static_jwks"},
		{"api_server with static_jwks", "type: static_jwks\nstatic_jwks: '{}'\napi_server: https://10.0.0.1\n" + rule, "line 10: spec.kubernetes.api_server goes with type: in_cluster only"},
		{"token_file without a type", "token_file: /etc/mbot/token\n" + rule, "spec.kubernetes.token_file goes with type: in_cluster only"},
		{"unknown field", "type: in_cluster\napi_server: https://10.0.0.1\naudience: acme\n" + rule, "spec.kubernetes.audience is not a known field"},
		{"no rules", "type: in_cluster\napi_server: https://10.0.0.1\n", "a join token needs at least one allow rule (fields: service_account)"},
		{"namespace is not a rule field", "type: in_cluster\napi_server: https://10.0.0.1\nallow:\n  - namespace: ci\n",
			`unknown field "namespace"; fields for this method are: service_account`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := compile(t, "kubernetes", tc.section, newEnv(nil))
			checkCompiled(t, v, err, tc.want)
		})
	}
}
