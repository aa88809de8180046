package joiners

import (
	"context"
	"errors"
	"net/url"
	"strings"
)

// forgejo fetches a Forgejo (or Gitea) Actions ID token from the runner's
// token endpoint, which copies GitHub's.
type forgejo struct{}

func init() { register(forgejo{}, priorityForgejo) }

func (forgejo) Method() string { return "forgejo" }

func (forgejo) Signals() string {
	return "FORGEJO_ACTIONS=true, GITEA_ACTIONS=true, or an ACTIONS_ID_TOKEN_REQUEST_URL under /api/actions/"
}

// Detect tells Forgejo from GitHub, whose GITHUB_ACTIONS=true the Forgejo
// runner sets too: by Forgejo's own variables, else by the token URL, which
// on Forgejo is <instance>/api/actions/... and on GitHub a host of its own.
func (forgejo) Detect(env Env) bool {
	if env("FORGEJO_ACTIONS") == "true" || env("GITEA_ACTIONS") == "true" {
		return true
	}
	return forgejoTokenURL(env("ACTIONS_ID_TOKEN_REQUEST_URL"))
}

func forgejoTokenURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || strings.HasSuffix(u.Hostname(), ".githubusercontent.com") {
		return false
	}
	return strings.Contains(u.Path, "/api/actions/")
}

func (forgejo) Proof(ctx context.Context, env Env, audience string) (string, error) {
	reqURL, reqToken := env("ACTIONS_ID_TOKEN_REQUEST_URL"), env("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
	if reqURL == "" || reqToken == "" {
		return "", errors.New("this Forgejo Actions job cannot request an ID token: ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN are unset. " +
			"Add `permissions: id-token: write` to the workflow or job (the instance must also run Forgejo 11 or later with Actions enabled)")
	}
	return fetchActionsToken(ctx, reqURL, reqToken, audience, "Forgejo Actions")
}
