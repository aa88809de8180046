// Package simci simulates the OIDC side of CI platforms on loopback: an
// issuer with discovery and JWKS that mints GitHub Actions, GitLab CI and
// CircleCI shaped tokens with a real RSA key, and GitHub's runner token
// endpoint. mbot demo, the tests and the benchmarks join against it.
package simci

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is a loopback OIDC issuer.
type Issuer struct {
	// URL is the issuer, iss of its tokens: Base, or Base followed by the
	// path the issuer lives under (StartForgejo).
	URL string
	// Base is the server's http://127.0.0.1:PORT.
	Base   string
	Key    *rsa.PrivateKey
	KeyID  string
	signer jose.Signer
	srv    *http.Server
	// runnerToken guards the GitHub token endpoint, like ACTIONS_ID_TOKEN_REQUEST_TOKEN.
	runnerToken string
	mu          sync.Mutex
	// githubClaims are the claims the GitHub token endpoint puts in its tokens.
	githubClaims map[string]any
	// TTL is the lifetime of minted tokens.
	TTL time.Duration
	// signed are GitHub tokens signed ahead of time by SignAhead, by audience.
	signed map[string][]string
	// jobs are the claims of the jobs whose token endpoints (Forgejo,
	// Azure Pipelines, Codefresh) this issuer serves, by request token.
	jobs map[string]job
}

// Start serves a new issuer on 127.0.0.1 with a fresh 2048-bit RSA key.
func Start() (*Issuer, error) { return startAt("") }

// StartForgejo serves a Forgejo instance's Actions issuer, which lives
// under the instance's /api/actions (Base is the instance).
func StartForgejo() (*Issuer, error) { return startAt(ForgejoIssuerPath) }

// startAt serves an issuer whose discovery document is under path.
func startAt(path string) (*Issuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	base := "http://" + ln.Addr().String()
	iss := &Issuer{
		URL:          base + path,
		Base:         base,
		Key:          key,
		KeyID:        randomHex(8),
		runnerToken:  randomHex(16),
		githubClaims: GitHubClaims(),
		TTL:          5 * time.Minute,
	}
	iss.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: iss.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+path+"/.well-known/openid-configuration", iss.discovery)
	mux.HandleFunc("GET "+path+"/.well-known/jwks", iss.jwks)
	mux.HandleFunc("GET /github/token", iss.githubToken)
	iss.handlePlatforms(mux)
	iss.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go iss.srv.Serve(ln)
	return iss, nil
}

// Close stops the issuer.
func (i *Issuer) Close() error { return i.srv.Close() }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func (i *Issuer) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{
		"issuer":                                i.URL,
		"jwks_uri":                              i.URL + "/.well-known/jwks",
		"subject_types_supported":               []string{"public"},
		"response_types_supported":              []string{"id_token"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"claims_supported":                      []string{"sub", "aud", "exp", "iat", "iss", "jti", "nbf"},
	})
}

// JWKS returns the issuer's public key set as JSON, for static_jwks.
func (i *Issuer) JWKS() string {
	data, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &i.Key.PublicKey, KeyID: i.KeyID, Algorithm: "RS256", Use: "sig"}}})
	return string(data)
}

func (i *Issuer) jwks(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(i.JWKS()))
}

// githubToken is the runner's ACTIONS_ID_TOKEN_REQUEST_URL endpoint.
func (i *Issuer) githubToken(w http.ResponseWriter, r *http.Request) {
	want := "Bearer " + i.runnerToken
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(want)) != 1 {
		http.Error(w, `{"message":"bad request token"}`, http.StatusUnauthorized)
		return
	}
	aud := r.URL.Query().Get("audience")
	if aud == "" {
		aud = "https://github.com/acme" // GitHub's default audience is the owner's URL
	}
	i.mu.Lock()
	claims := maps.Clone(i.githubClaims)
	tok, ahead := "", i.signed[aud]
	if len(ahead) > 0 {
		tok, i.signed[aud] = ahead[len(ahead)-1], ahead[:len(ahead)-1]
	}
	i.mu.Unlock()
	claims["aud"] = aud
	var err error
	if tok == "" {
		tok, err = i.Mint(claims)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]string{"value": tok})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// SetGitHubClaim changes one claim of the tokens the GitHub token endpoint
// mints from now on, to play a job of another repository or branch.
func (i *Issuer) SetGitHubClaim(name string, value any) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.githubClaims[name] = value
	clear(i.signed) // they carry the old claims
}

// SignAhead signs n GitHub tokens for audience now, for the GitHub token
// endpoint to hand out (each once) before it signs new ones. A benchmark
// of mbot issue uses it so that it measures mbot, not the simulator's RSA
// signing (about 1.5 ms a token on 2 cores, CPU taken from the run).
// They expire after TTL like any other.
func (i *Issuer) SignAhead(n int, audience string) error {
	i.mu.Lock()
	claims := maps.Clone(i.githubClaims)
	i.mu.Unlock()
	claims["aud"] = audience
	tokens := make([]string, n)
	for k := range tokens {
		var err error
		if tokens[k], err = i.Mint(claims); err != nil {
			return err
		}
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.signed == nil {
		i.signed = make(map[string][]string)
	}
	i.signed[audience] = append(i.signed[audience], tokens...)
	return nil
}

// Mint signs claims as this issuer. iss, iat, nbf, exp and jti are filled
// in unless claims sets them.
func (i *Issuer) Mint(claims map[string]any) (string, error) {
	c := maps.Clone(claims)
	now := time.Now()
	setDefault(c, "iss", i.URL)
	setDefault(c, "iat", now.Unix())
	setDefault(c, "nbf", now.Unix())
	setDefault(c, "exp", now.Add(i.TTL).Unix())
	setDefault(c, "jti", randomHex(16))
	return jwt.Signed(i.signer).Claims(c).Serialize()
}

func setDefault(m map[string]any, k string, v any) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

// GitHubEnv is the environment of a GitHub Actions job step with
// `permissions: id-token: write` on this issuer.
func (i *Issuer) GitHubEnv() map[string]string {
	return map[string]string{
		"GITHUB_ACTIONS":                 "true",
		"ACTIONS_ID_TOKEN_REQUEST_URL":   i.URL + "/github/token?api-version=2.0",
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN": i.runnerToken,
	}
}

// GitLabEnv is the environment of a GitLab CI job whose id_tokens: declares
// MBOT_ID_TOKEN with audience aud.
func (i *Issuer) GitLabEnv(aud string) (map[string]string, error) {
	c := GitLabClaims()
	c["aud"] = aud
	tok, err := i.Mint(c)
	if err != nil {
		return nil, err
	}
	return map[string]string{"GITLAB_CI": "true", "CI": "true", "MBOT_ID_TOKEN": tok}, nil
}

// CircleCIEnv is the environment of a CircleCI job of organization orgID.
func (i *Issuer) CircleCIEnv(orgID string) (map[string]string, error) {
	c := CircleCIClaims(orgID)
	c["aud"] = orgID
	tok, err := i.Mint(c)
	if err != nil {
		return nil, err
	}
	return map[string]string{"CIRCLECI": "true", "CI": "true", "CIRCLE_OIDC_TOKEN_V2": tok}, nil
}

// GitHubClaims are the claims of a push to main of acme/app, shaped like
// GitHub's documented example token.
func GitHubClaims() map[string]any {
	return map[string]any{
		"sub":                   "repo:acme/app:ref:refs/heads/main",
		"ref":                   "refs/heads/main",
		"sha":                   "e1b4c8a5f9f5b4e1f2d5c8a9b7e6d5c4b3a29180",
		"repository":            "acme/app",
		"repository_owner":      "acme",
		"repository_owner_id":   "1234567",
		"repository_id":         "7654321",
		"repository_visibility": "private",
		"run_id":                "5566778899",
		"run_number":            "42",
		"run_attempt":           "1",
		"actor":                 "octocat",
		"actor_id":              "583231",
		"workflow":              "deploy",
		"workflow_ref":          "acme/app/.github/workflows/deploy.yml@refs/heads/main",
		"job_workflow_ref":      "acme/app/.github/workflows/deploy.yml@refs/heads/main",
		"head_ref":              "",
		"base_ref":              "",
		"event_name":            "push",
		"ref_type":              "branch",
		"runner_environment":    "github-hosted",
	}
}

// GitLabClaims are the claims of a pipeline on main of acme/app, shaped like
// GitLab's documented ID token.
func GitLabClaims() map[string]any {
	return map[string]any{
		"sub":                   "project_path:acme/app:ref_type:branch:ref:main",
		"namespace_id":          "72",
		"namespace_path":        "acme",
		"project_id":            "20",
		"project_path":          "acme/app",
		"user_id":               "1",
		"user_login":            "sample-user",
		"user_email":            "sample-user@example.com",
		"pipeline_id":           "574",
		"pipeline_source":       "push",
		"job_id":                "302",
		"ref":                   "main",
		"ref_type":              "branch",
		"ref_path":              "refs/heads/main",
		"ref_protected":         "true",
		"environment":           "production",
		"environment_protected": "true",
		"deployment_tier":       "production",
		"runner_id":             "1",
		"runner_environment":    "gitlab-hosted",
		"sha":                   "714a629c0b401fdce83e847fc9589983fc6f46bc",
		"project_visibility":    "private",
		"ci_config_ref_uri":     "gitlab.com/acme/app//.gitlab-ci.yml@refs/heads/main",
		"ci_config_sha":         "714a629c0b401fdce83e847fc9589983fc6f46bc",
	}
}

// CircleCIClaims are the claims of a CircleCI V2 token of organization orgID.
func CircleCIClaims(orgID string) map[string]any {
	return map[string]any{
		"sub":                           fmt.Sprintf("org/%s/project/8f2b3c4d-0000-4000-8000-000000000002/user/5f1e2d3c-0000-4000-8000-000000000003", orgID),
		"oidc.circleci.com/project-id":  "8f2b3c4d-0000-4000-8000-000000000002",
		"oidc.circleci.com/context-ids": []string{"0c1d2e3f-0000-4000-8000-000000000004"},
		"oidc.circleci.com/vcs-origin":  "github.com/acme/app",
		"oidc.circleci.com/vcs-ref":     "refs/heads/main",
		"oidc.circleci.com/ssh-rerun":   false,
		"oidc.circleci.com/pipeline-id": "6a7b8c9d-0000-4000-8000-000000000005",
		"oidc.circleci.com/workflow-id": "7b8c9d0e-0000-4000-8000-000000000006",
		"oidc.circleci.com/job-id":      "8c9d0e1f-0000-4000-8000-000000000007",
	}
}

// SpaceliftClaims are the claims of a tracked run of stack infra in space
// legacy, shaped like Spacelift's documented standard claims.
func SpaceliftClaims() map[string]any {
	return map[string]any{
		"sub":        "space:legacy:stack:infra:run_type:TRACKED:scope:write",
		"spaceId":    "legacy",
		"callerType": "stack",
		"callerId":   "infra",
		"runType":    "TRACKED",
		"runId":      "01GQ2Z9M6VHK9V0R4J6Q4K6Z3N",
		"scope":      "write",
	}
}

// TerraformCloudClaims are the claims of an apply in workspace
// app-production of organization acme, shaped like HCP Terraform's
// documented workload identity token.
func TerraformCloudClaims() map[string]any {
	return map[string]any{
		"sub":                         "organization:acme:project:Default Project:workspace:app-production:run_phase:apply",
		"terraform_organization_id":   "org-GRNbCjYNpBB6NEH9",
		"terraform_organization_name": "acme",
		"terraform_project_id":        "prj-vegSA59s1XPwMr2t",
		"terraform_project_name":      "Default Project",
		"terraform_workspace_id":      "ws-mbsd5E3Ktt5Rg2Xm",
		"terraform_workspace_name":    "app-production",
		"terraform_full_workspace":    "organization:acme:project:Default Project:workspace:app-production",
		"terraform_run_id":            "run-X3n1AUXNGWbfECsJ",
		"terraform_run_phase":         "apply",
	}
}

// BitbucketClaims are the claims of a deployment step on main, shaped like
// Bitbucket Pipelines' documented OIDC token.
func BitbucketClaims() map[string]any {
	return map[string]any{
		"sub":                       "{6a0e5b1c-4f3d-4c2b-9a8e-7d6c5b4a3f21}:{d2c4e6f8-1a3b-4c5d-8e7f-9a0b1c2d3e4f}:{8b7a6c5d-2e1f-4a3b-9c8d-7e6f5a4b3c2d}",
		"stepUuid":                  "{8b7a6c5d-2e1f-4a3b-9c8d-7e6f5a4b3c2d}",
		"pipelineUuid":              "{1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b}",
		"workspaceUuid":             "{3c9d7e2a-8b1f-4e6d-a5c4-2b3a1d0e9f8c}",
		"repositoryUuid":            "{6a0e5b1c-4f3d-4c2b-9a8e-7d6c5b4a3f21}",
		"deploymentEnvironmentUuid": "{d2c4e6f8-1a3b-4c5d-8e7f-9a0b1c2d3e4f}",
		"branchName":                "main",
	}
}

// BuildkiteClaims are the claims of step build of a main build of pipeline
// super-duper-app, shaped like Buildkite's documented OIDC token.
func BuildkiteClaims() map[string]any {
	return map[string]any{
		"sub":                "organization:acme-inc:pipeline:super-duper-app:ref:refs/heads/main:commit:9f3182061f1e2cca4702c368cbc039b7dc9d4485:step:build",
		"organization_slug":  "acme-inc",
		"pipeline_slug":      "super-duper-app",
		"build_number":       1,
		"build_branch":       "main",
		"build_commit":       "9f3182061f1e2cca4702c368cbc039b7dc9d4485",
		"step_key":           "build",
		"job_id":             "0184990a-477b-4fa8-9968-496074483cee",
		"agent_id":           "0184990a-4782-42b5-afc1-16715b10b8ff",
		"build_source":       "ui",
		"runner_environment": "buildkite-hosted",
	}
}

// JenkinsClaims are the claims of build 42 of job app/main, shaped like a
// token of Jenkins' OpenID Connect Provider plugin (sub and build_number by
// default, and claim templates an administrator added), for the generic
// oidc method.
func JenkinsClaims() map[string]any {
	return map[string]any{
		"sub":          "https://jenkins.acme.internal/job/app/job/main/",
		"build_number": 42,
		"branch_name":  "main",
		"production":   true,
	}
}
