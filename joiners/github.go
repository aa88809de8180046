package joiners

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// gitHub fetches a GitHub Actions OIDC token from the runner's token endpoint.
type gitHub struct{}

func init() { register(gitHub{}, priorityGitHub) }

func (gitHub) Method() string { return "github" }

func (gitHub) Signals() string { return "GITHUB_ACTIONS=true" }

func (gitHub) Detect(env Env) bool { return env("GITHUB_ACTIONS") == "true" }

func (gitHub) Proof(ctx context.Context, env Env, audience string) (string, error) {
	reqURL, reqToken := env("ACTIONS_ID_TOKEN_REQUEST_URL"), env("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
	if reqURL == "" || reqToken == "" {
		if env("GITHUB_ACTIONS") != "true" {
			// Outside GitHub Actions the workflow hint would mislead: say what is missing.
			return "", errors.New("--join-method github needs a GitHub Actions job: ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN are unset " +
				"and GITHUB_ACTIONS is not true, so this is not a GitHub Actions job. " +
				"Run mbot issue in the job, or use --join-method token (or mbot demo to try it locally)")
		}
		return "", errors.New("this GitHub Actions job cannot request an OIDC token: ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN are unset. " +
			"Add `permissions: id-token: write` to the workflow or job")
	}
	return fetchActionsToken(ctx, reqURL, reqToken, audience, "GitHub Actions")
}

// fetchActionsToken asks an Actions runner's ID token endpoint (GitHub's,
// or Forgejo's, which copies it) for a token with audience; label names
// the platform in messages.
func fetchActionsToken(ctx context.Context, reqURL, reqToken, audience, label string) (string, error) {
	u, err := url.Parse(reqURL)
	if err != nil {
		return "", fmt.Errorf("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL: %w", err)
	}
	q := u.Query()
	q.Set("audience", audience)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+reqToken)
	req.Header.Set("Accept", "application/json")
	return requestIDToken(req, label, "value", "")
}

// requestIDToken sends req to a CI platform's ID token endpoint and returns
// the string in field of its JSON answer. label names the platform in
// messages; hint, if set, follows a refusal's.
func requestIDToken(req *http.Request, label, field, hint string) (string, error) {
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("requesting the %s OIDC token: %w", label, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("reading the %s OIDC token: %w", label, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("the %s token endpoint answered %s: %s%s", label, resp.Status, lastLines(strings.TrimSpace(string(body)), 3), hint)
	}
	var out map[string]json.RawMessage
	var token string
	if json.Unmarshal(body, &out) != nil || json.Unmarshal(out[field], &token) != nil || token == "" {
		return "", fmt.Errorf("the %s token endpoint answered without a token value (%s)", label, field)
	}
	return token, nil
}
