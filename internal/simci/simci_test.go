package simci

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TestSignAhead checks that tokens signed ahead are handed out once each
// for their audience, that the endpoint signs new ones after them, and that
// a claim change drops them.
func TestSignAhead(t *testing.T) {
	iss, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	if err := iss.SignAhead(2, "ahead"); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 3 {
		claims := fetchGitHubToken(t, iss, "ahead")
		if claims["aud"] != "ahead" || claims["repository"] != "acme/app" {
			t.Errorf("claims aud=%v repository=%v", claims["aud"], claims["repository"])
		}
		jti := claims["jti"].(string)
		if seen[jti] {
			t.Errorf("token %s handed out twice", jti)
		}
		seen[jti] = true
	}
	if err := iss.SignAhead(1, "ahead"); err != nil {
		t.Fatal(err)
	}
	iss.SetGitHubClaim("repository", "acme/other")
	if got := fetchGitHubToken(t, iss, "ahead")["repository"]; got != "acme/other" {
		t.Errorf("after SetGitHubClaim the endpoint handed out a token of %v", got)
	}
}

func fetchGitHubToken(t *testing.T, iss *Issuer, audience string) map[string]any {
	t.Helper()
	env := iss.GitHubEnv()
	req, err := http.NewRequest(http.MethodGet, env["ACTIONS_ID_TOKEN_REQUEST_URL"]+"&audience="+url.QueryEscape(audience), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Value string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseSigned(body.Value, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{}
	if err := tok.Claims(&iss.Key.PublicKey, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}
