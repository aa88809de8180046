package simci

import (
	"crypto/subtle"
	"maps"
	"net/http"
	"strings"
)

// ForgejoIssuerPath is where a Forgejo instance serves its Actions issuer.
const ForgejoIssuerPath = "/api/actions"

// Azure Pipelines' organization and service connection of AzureDevOpsClaims.
const (
	AzureDevOpsOrgID             = "0f8e4c2b-1a2b-4c3d-9e8f-123456789abc"
	AzureDevOpsServiceConnection = "4e5f6a7b-0000-4000-8000-00000000ad01"
	AzureDevOpsAudience          = "api://AzureADTokenExchange"
)

// job is one job's token endpoint: the platform it runs on and the claims
// of the tokens the endpoint mints for it.
type job struct {
	platform string
	claims   map[string]any
}

// newJob registers a job of platform and returns its request token.
func (i *Issuer) newJob(platform string, claims map[string]any) string {
	tok := randomHex(16)
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.jobs == nil {
		i.jobs = map[string]job{}
	}
	i.jobs[tok] = job{platform: platform, claims: maps.Clone(claims)}
	return tok
}

// jobOf returns the job whose request token presented is, checked in
// constant time against each (there are a handful).
func (i *Issuer) jobOf(platform, presented string) (job, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	for tok, j := range i.jobs {
		if j.platform == platform && subtle.ConstantTimeCompare([]byte(tok), []byte(presented)) == 1 {
			return j, true
		}
	}
	return job{}, false
}

func (i *Issuer) handlePlatforms(mux *http.ServeMux) {
	mux.HandleFunc("GET "+ForgejoIssuerPath+"/_apis/pipelines/workflows/{run}/idtoken", i.forgejoToken)
	mux.HandleFunc("POST /azure-devops/{org}/{project}/_apis/distributedtask/hubs/build/plans/{plan}/jobs/{job}/oidctoken", i.azureDevOpsToken)
	mux.HandleFunc("GET /codefresh/oidc/token", i.codefreshToken)
}

// forgejoToken is a Forgejo runner's ACTIONS_ID_TOKEN_REQUEST_URL: GitHub's
// contract (bearer token, audience query, {"value": ...}).
func (i *Issuer) forgejoToken(w http.ResponseWriter, r *http.Request) {
	j, ok := i.jobOf("forgejo", strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	if !ok || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		http.Error(w, `{"message":"bad request token"}`, http.StatusUnauthorized)
		return
	}
	i.mintFor(w, j.claims, r.URL.Query().Get("audience"), "value")
}

// azureDevOpsToken is Azure Pipelines' "Oidctoken - Create": POST, the
// job's System.AccessToken as bearer, api-version 7.1; with
// serviceConnectionId the token is the service connection's (sub
// sc://...), else the pipeline's (sub p://...). Its audience is fixed.
func (i *Issuer) azureDevOpsToken(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	j, ok := i.jobOf("azure_devops", strings.TrimPrefix(auth, "Bearer "))
	if !ok || !strings.HasPrefix(auth, "Bearer ") {
		http.Error(w, `{"message":"TF400813: The user is not authorized to access this resource."}`, http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	if !strings.HasPrefix(q.Get("api-version"), "7.1") {
		http.Error(w, `{"message":"The requested REST API version is not supported."}`, http.StatusBadRequest)
		return
	}
	claims := maps.Clone(j.claims)
	org, project := r.PathValue("org"), r.PathValue("project")
	switch id := q.Get("serviceConnectionId"); id {
	case "":
		claims["sub"] = "p://" + org + "/" + project + "/deploy"
	case AzureDevOpsServiceConnection:
		claims["sub"] = "sc://" + org + "/" + project + "/mbot-deploy"
	default:
		http.Error(w, `{"message":"Service connection `+id+` not found or not authorized for this pipeline."}`, http.StatusBadRequest)
		return
	}
	i.mintFor(w, claims, AzureDevOpsAudience, "oidcToken")
}

// codefreshToken is CF_OIDC_REQUEST_URL: the build's CF_OIDC_REQUEST_TOKEN
// as the whole Authorization header, an optional audience (default the
// platform's URL), {"id_token": ...}.
func (i *Issuer) codefreshToken(w http.ResponseWriter, r *http.Request) {
	j, ok := i.jobOf("codefresh", r.Header.Get("Authorization"))
	if !ok {
		http.Error(w, `{"message":"Unauthorized"}`, http.StatusUnauthorized)
		return
	}
	aud := r.URL.Query().Get("audience")
	if aud == "" {
		aud = "https://g.codefresh.io"
	}
	i.mintFor(w, j.claims, aud, "id_token")
}

func (i *Issuer) mintFor(w http.ResponseWriter, claims map[string]any, aud, field string) {
	claims = maps.Clone(claims)
	claims["aud"] = aud
	tok, err := i.Mint(claims)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]string{field: tok})
}

// ForgejoEnv is the environment of a Forgejo Actions job step with
// `permissions: id-token: write` whose tokens carry claims; the runner sets
// GITHUB_ACTIONS too.
func (i *Issuer) ForgejoEnv(claims map[string]any) map[string]string {
	return map[string]string{
		"CI": "true", "GITHUB_ACTIONS": "true", "FORGEJO_ACTIONS": "true",
		"GITHUB_SERVER_URL":              i.Base,
		"ACTIONS_ID_TOKEN_REQUEST_URL":   i.Base + ForgejoIssuerPath + "/_apis/pipelines/workflows/8891/idtoken?api-version=2.0",
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN": i.newJob("forgejo", claims),
	}
}

// AzureDevOpsEnv is the environment of an Azure Pipelines step that maps
// System.AccessToken, in project infra of organization acme.
func (i *Issuer) AzureDevOpsEnv(claims map[string]any) map[string]string {
	return map[string]string{
		"TF_BUILD":              "True",
		"SYSTEM_COLLECTIONURI":  "https://dev.azure.com/acme/",
		"SYSTEM_TEAMPROJECT":    "infra",
		"SYSTEM_OIDCREQUESTURI": i.Base + "/azure-devops/acme/infra/_apis/distributedtask/hubs/build/plans/5b6c7d8e-0000-4000-8000-00000000ad02/jobs/6c7d8e9f-0000-4000-8000-00000000ad03/oidctoken",
		"SYSTEM_ACCESSTOKEN":    i.newJob("azure_devops", claims),
	}
}

// CodefreshEnv is the environment of a Codefresh freestyle step.
func (i *Issuer) CodefreshEnv(claims map[string]any) map[string]string {
	return map[string]string{
		"CF_BUILD_ID":           "65a1b2c3d4e5f6a7b8c9d0e2",
		"CF_OIDC_REQUEST_URL":   i.Base + "/codefresh/oidc/token",
		"CF_OIDC_REQUEST_TOKEN": i.newJob("codefresh", claims),
	}
}

// ForgejoClaims are the claims of a push to main of acme/app on a Forgejo
// instance, in the immutable-id subject format of repositories created
// after Forgejo added it.
func ForgejoClaims() map[string]any {
	return map[string]any{
		"sub":                 "repo:acme-1234/app-5678:ref:refs/heads/main",
		"repository":          "acme/app",
		"repository_owner":    "acme",
		"repository_id":       "5678",
		"repository_owner_id": "1234",
		"actor":               "octocat",
		"actor_id":            "4321",
		"workflow":            "deploy.yml",
		"workflow_ref":        "acme/app/.forgejo/workflows/deploy.yml@refs/heads/main",
		"event_name":          "push",
		"ref":                 "refs/heads/main",
		"ref_type":            "branch",
		"run_id":              "8891",
		"sha":                 "6a8c2e1f0b9d4c3a7e5f1b2d8c4a6e0f9b3d7c1a",
	}
}

// AzureDevOpsClaims are the claims of a run of pipeline 42 of project infra
// in organization acme (the endpoint sets sub), shaped like the token
// Azure DevOps' oidctoken API returns.
func AzureDevOpsClaims() map[string]any {
	return map[string]any{
		"org_id":  AzureDevOpsOrgID,
		"prj_id":  "6d1b9f2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
		"def_id":  "42",
		"rpo_id":  "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
		"rpo_uri": "https://dev.azure.com/acme/infra/_git/app",
		"rpo_ver": "e1b4c8a5f9f5b4e1f2d5c8a9b7e6d5c4b3a29180",
		"rpo_ref": "refs/heads/main",
		"run_id":  "1234",
	}
}

// Env0Claims are the claims of a deployment of environment network-prod,
// shaped like env0's documented OIDC token.
func Env0Claims() map[string]any {
	return map[string]any{
		"sub":             "auth0|62e0f8a1b2c3d4e5f6a7b8c9",
		"organizationId":  "5c6d7e8f-0000-4000-8000-0000000000e0",
		"apiKeyType":      "oidc",
		"projectId":       "9a8b7c6d-0000-4000-8000-0000000000e1",
		"projectName":     "platform",
		"templateId":      "1f2e3d4c-0000-4000-8000-0000000000e2",
		"templateName":    "network",
		"environmentId":   "7e6d5c4b-0000-4000-8000-0000000000e3",
		"environmentName": "network-prod",
		"workspaceName":   "network-prod",
		"deploymentLogId": "3b4c5d6e-0000-4000-8000-0000000000e4",
		"deployerEmail":   "jane@acme.example",
	}
}

// SemaphoreClaims are the claims of a job on main of acme/web in
// organization acme, shaped like Semaphore's documented OIDC token.
func SemaphoreClaims() map[string]any {
	return map[string]any{
		"sub":       "org:acme:project:936a5312-a3b8-4921-8b3f-2cec8baac574:repo:web:ref_type:branch:ref:refs/heads/main",
		"branch":    "main",
		"ref":       "refs/heads/main",
		"ref_type":  "branch",
		"repo":      "web",
		"repo_slug": "acme/web",
		"prj_id":    "936a5312-a3b8-4921-8b3f-2cec8baac574",
		"wf_id":     "1be81412-6ab8-4fc0-9d0d-7af33335a6ec",
		"ppl_id":    "1e1fcfb5-09c0-487e-b051-2d0b5514c42a",
		"job_type":  "pipeline_job",
		"job_id":    "c117e453-1189-4eaf-b03a-dd6538eb49b2",
	}
}

// CodefreshClaims are the claims of a git-triggered build of pipeline
// app/deploy of account acme, shaped like Codefresh's documented ID token.
func CodefreshClaims() map[string]any {
	return map[string]any{
		"sub":                "account:5f30ebd30312313ae7f17948:pipeline:64de5cd47626b3ca134e760a:scm_repo_url:https://github.com/acme/app:scm_user_name:octocat:scm_ref:main",
		"account_id":         "5f30ebd30312313ae7f17948",
		"account_name":       "acme",
		"pipeline_id":        "64de5cd47626b3ca134e760a",
		"pipeline_name":      "app/deploy",
		"workflow_id":        "65a1b2c3d4e5f6a7b8c9d0e1",
		"scm_repo_url":       "https://github.com/acme/app",
		"scm_user_name":      "octocat",
		"scm_ref":            "main",
		"runner_environment": "hybrid",
		"platform_url":       "https://g.codefresh.io",
	}
}
