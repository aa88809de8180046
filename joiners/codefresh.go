package joiners

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// codefresh asks Codefresh's OIDC provider for the pipeline's ID token, as
// the obtain-oidc-id-token step does.
type codefresh struct{}

func init() { register(codefresh{}, priorityCodefresh) }

func (codefresh) Method() string { return "codefresh" }

func (codefresh) Signals() string { return "CF_BUILD_ID" }

func (codefresh) Detect(env Env) bool { return env("CF_BUILD_ID") != "" }

// Proof sends CF_OIDC_REQUEST_TOKEN, as it is (Codefresh does not prefix
// it with Bearer), to CF_OIDC_REQUEST_URL, asking for audience.
func (codefresh) Proof(ctx context.Context, env Env, audience string) (string, error) {
	reqURL, reqToken := env("CF_OIDC_REQUEST_URL"), env("CF_OIDC_REQUEST_TOKEN")
	if reqURL == "" || reqToken == "" {
		return "", errors.New("this Codefresh build has no CF_OIDC_REQUEST_URL/CF_OIDC_REQUEST_TOKEN; Codefresh sets them in every build " +
			"of an account with OIDC, in freestyle steps (run mbot issue in one)")
	}
	u, err := url.Parse(reqURL)
	if err != nil {
		return "", fmt.Errorf("CF_OIDC_REQUEST_URL is not a URL: %w", err)
	}
	if audience != "" {
		q := u.Query()
		q.Set("audience", audience)
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", reqToken)
	req.Header.Set("Accept", "application/json")
	return requestIDToken(req, "Codefresh", "id_token", "")
}
