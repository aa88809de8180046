package joiners_test

import (
	"strings"
	"testing"
)

// forgejoEnv is a Forgejo Actions job step as the Forgejo runner sets it up:
// GitHub's variables too, and a token URL on the instance.
var forgejoEnv = map[string]string{
	"CI":                             "true",
	"GITHUB_ACTIONS":                 "true",
	"FORGEJO_ACTIONS":                "true",
	"GITHUB_SERVER_URL":              "https://codeberg.org",
	"GITHUB_REPOSITORY":              "acme/app",
	"ACTIONS_ID_TOKEN_REQUEST_URL":   "https://codeberg.org/api/actions/_apis/pipelines/workflows/8891/idtoken?api-version=2.0",
	"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-token",
}

func TestForgejoDetect(t *testing.T) {
	without := func(env map[string]string, names ...string) map[string]string {
		out := merge(env)
		for _, n := range names {
			delete(out, n)
		}
		return out
	}
	runDetectCases(t, []detectCase{
		{"Forgejo Actions", forgejoEnv, "forgejo"},
		{"Gitea Actions", merge(without(forgejoEnv, "FORGEJO_ACTIONS"), map[string]string{"GITEA_ACTIONS": "true"}), "forgejo"},
		{"an older runner: only the token URL tells", without(forgejoEnv, "FORGEJO_ACTIONS"), "forgejo"},
		{"GitHub Actions is not Forgejo", githubEnv, "github"},
		{"GitHub Enterprise Server is not Forgejo", merge(githubEnv, map[string]string{
			"GITHUB_SERVER_URL":            "https://ghes.acme.internal",
			"ACTIONS_ID_TOKEN_REQUEST_URL": "https://ghes.acme.internal/_services/pipelines/abc/idtoken?api-version=2.0",
		}), "github"},
	})
}

func TestForgejoProof(t *testing.T) {
	e := startTokenEndpoint(t, "forgejo-request-token")
	env := merge(forgejoEnv, map[string]string{
		"ACTIONS_ID_TOKEN_REQUEST_URL":   e.srv.URL + "/idtoken?api-version=2.0",
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "forgejo-request-token",
	})
	got, err := proof(t, "forgejo", env, "acme")
	if err != nil {
		t.Fatalf("Proof: %v", err)
	}
	if got != "jwt-for-acme" {
		t.Errorf("Proof = %q, want jwt-for-acme", got)
	}
	env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = "wrong"
	if _, err := proof(t, "forgejo", env, "acme"); err == nil || !strings.Contains(err.Error(), "Forgejo Actions token endpoint answered 401") {
		t.Errorf("a refused request: error %v, want it to name Forgejo's 401", err)
	}
	delete(env, "ACTIONS_ID_TOKEN_REQUEST_URL")
	if _, err := proof(t, "forgejo", env, "acme"); err == nil || !strings.Contains(err.Error(), "id-token: write") {
		t.Errorf("no token URL: error %v, want the permission to add", err)
	}
}
