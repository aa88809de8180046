package joiners_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// tokenEndpoint simulates the Actions runner's ID token endpoint: it checks
// what GitHub checks (bearer token, api-version) and answers like GitHub.
type tokenEndpoint struct {
	srv      *httptest.Server
	requests atomic.Int32
	// audience is the last audience asked for.
	audience atomic.Value
}

func startTokenEndpoint(t *testing.T, requestToken string) *tokenEndpoint {
	t.Helper()
	e := &tokenEndpoint{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.requests.Add(1)
		if r.Method != http.MethodGet || r.URL.Path != "/idtoken" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+requestToken {
			http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
			return
		}
		q := r.URL.Query()
		if q.Get("api-version") != "2.0" {
			http.Error(w, `{"message":"api-version missing"}`, http.StatusBadRequest)
			return
		}
		if len(q["audience"]) != 1 {
			http.Error(w, `{"message":"audience must be given once"}`, http.StatusBadRequest)
			return
		}
		e.audience.Store(q.Get("audience"))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"count": 1, "value": "jwt-for-" + q.Get("audience")})
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func TestGitHubProof(t *testing.T) {
	e := startTokenEndpoint(t, "request-token")
	env := merge(githubEnv, map[string]string{
		"ACTIONS_ID_TOKEN_REQUEST_URL":   e.srv.URL + "/idtoken?api-version=2.0",
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-token",
	})
	got, err := proof(t, "github", env, "acme")
	if err != nil {
		t.Fatalf("Proof: %v", err)
	}
	if got != "jwt-for-acme" {
		t.Errorf("Proof = %q, want the endpoint's value jwt-for-acme", got)
	}
	if aud, _ := e.audience.Load().(string); aud != "acme" {
		t.Errorf("endpoint was asked for audience %q, want acme", aud)
	}
}

func TestGitHubProofAudienceWithSpecialCharacters(t *testing.T) {
	e := startTokenEndpoint(t, "request-token")
	env := merge(githubEnv, map[string]string{
		"ACTIONS_ID_TOKEN_REQUEST_URL":   e.srv.URL + "/idtoken?api-version=2.0",
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-token",
	})
	const aud = "https://auth.acme.internal:8443/?a=b&c"
	if _, err := proof(t, "github", env, aud); err != nil {
		t.Fatalf("Proof: %v", err)
	}
	if got, _ := e.audience.Load().(string); got != aud {
		t.Errorf("endpoint was asked for audience %q, want %q (the audience must be query-escaped)", got, aud)
	}
}

func TestGitHubProofRefused(t *testing.T) {
	e := startTokenEndpoint(t, "request-token")
	tests := []struct {
		name     string
		url      string
		token    string
		want     []string
		requests int32
	}{
		{"no request URL", "", "request-token",
			[]string{"ACTIONS_ID_TOKEN_REQUEST_URL", "permissions: id-token: write"}, 0},
		{"no request token", e.srv.URL + "/idtoken?api-version=2.0", "",
			[]string{"ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN", "permissions: id-token: write"}, 0},
		{"wrong request token", e.srv.URL + "/idtoken?api-version=2.0", "stale-token",
			[]string{"401 Unauthorized", "Bad credentials"}, 1},
		{"endpoint not found", e.srv.URL + "/elsewhere?api-version=2.0", "request-token",
			[]string{"404 Not Found"}, 1},
		{"request URL not a URL", "http://[::1", "request-token",
			[]string{"ACTIONS_ID_TOKEN_REQUEST_URL is not a URL"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.requests.Load()
			env := merge(githubEnv, map[string]string{
				"ACTIONS_ID_TOKEN_REQUEST_URL":   tc.url,
				"ACTIONS_ID_TOKEN_REQUEST_TOKEN": tc.token,
			})
			got, err := proof(t, "github", env, "acme")
			if err == nil {
				t.Fatalf("Proof = %q, want an error", got)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if n := e.requests.Load() - before; n != tc.requests {
				t.Errorf("endpoint got %d requests, want %d", n, tc.requests)
			}
		})
	}
}

func TestGitHubProofWithoutValue(t *testing.T) {
	for name, body := range map[string]string{
		"empty value": `{"count":1,"value":""}`,
		"no value":    `{"count":0}`,
		"not JSON":    `<html>maintenance</html>`,
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte(body))
			}))
			defer srv.Close()
			env := merge(githubEnv, map[string]string{"ACTIONS_ID_TOKEN_REQUEST_URL": srv.URL + "/idtoken?api-version=2.0"})
			got, err := proof(t, "github", env, "acme")
			if err == nil {
				t.Fatalf("Proof = %q, want an error", got)
			}
			if !strings.Contains(err.Error(), "without a token value") {
				t.Errorf("error %q does not say the answer had no token", err)
			}
		})
	}
}

// Outside GitHub Actions the workflow hint would mislead: the error says what
// is missing and that this is not a GitHub Actions job.
func TestGitHubProofOutsideGitHub(t *testing.T) {
	_, err := proof(t, "github", map[string]string{"CI": "true", "GITLAB_CI": "true"}, "acme")
	if err == nil {
		t.Fatal("Proof outside GitHub Actions succeeded")
	}
	for _, want := range []string{"ACTIONS_ID_TOKEN_REQUEST_URL", "not a GitHub Actions job", "--join-method token"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "id-token: write") {
		t.Errorf("error %q gives the workflow hint outside GitHub Actions", err)
	}
}
