package joiners_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCodefreshProof(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Codefresh takes the request token as the whole header, no Bearer.
		if r.Method != http.MethodGet || r.Header.Get("Authorization") != "cf-request-token" {
			http.Error(w, `{"message":"Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"id_token": "jwt-for-" + r.URL.Query().Get("audience")})
	}))
	t.Cleanup(srv.Close)
	env := map[string]string{"CF_BUILD_ID": "65a1b2c3d4e5f6a7b8c9d0e2", "CF_OIDC_REQUEST_URL": srv.URL + "/token", "CF_OIDC_REQUEST_TOKEN": "cf-request-token"}
	runDetectCases(t, []detectCase{{"Codefresh", env, "codefresh"}, {"Codefresh on AWS", merge(env, awsEnv), "codefresh"}})
	if got, err := proof(t, "codefresh", env, "acme"); err != nil || got != "jwt-for-acme" {
		t.Errorf("Proof = %q, %v; want jwt-for-acme", got, err)
	}
	env["CF_OIDC_REQUEST_TOKEN"] = "Bearer cf-request-token"
	if _, err := proof(t, "codefresh", env, "acme"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a refused request: %v", err)
	}
	delete(env, "CF_OIDC_REQUEST_URL")
	if _, err := proof(t, "codefresh", env, "acme"); err == nil || !strings.Contains(err.Error(), "CF_OIDC_REQUEST_URL") {
		t.Errorf("no request URL: %v", err)
	}
}
