package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/internal/simci"
)

// The cluster every test joins, as configured by startCluster.
const (
	clusterName = "e2e.test"
	botName     = "e2e-bot"
	roleName    = "e2e"
	// circleOrgID is the CircleCI organization the circleci join token trusts.
	circleOrgID = "4f1c7d2e-6a5b-4c3d-8e9f-0a1b2c3d4e5f"
)

// The join tokens of bots.yaml, one per platform.
const (
	tokenGitHub   = "github-e2e"
	tokenGitLab   = "gitlab-e2e"
	tokenCircleCI = "circleci-e2e"
)

const authorityYAML = `cluster_name: %s
listen: %s
data_dir: %s
resources: [bots.yaml]
ssh:
  host_patterns: [localhost]
`

// roleAndBotYAML is the role (%[1]s) whose logins come from the bot's
// trait, and the bot (%[2]s) whose login trait is %[3]q.
const roleAndBotYAML = `kind: role
version: v1
metadata: {name: %[1]s}
spec:
  logins: ["{{internal.logins}}"]
---
kind: bot
version: v1
metadata: {name: %[2]s}
spec:
  roles: [%[1]s]
  traits: {logins: [%[3]q]}
---
`

const botsYAML = roleAndBotYAML + `kind: join_token
version: v1
metadata: {name: %[4]s}
spec:
  bot: %[2]s
  method: github
  github:
    issuer: %[7]s
    allow:
      - repository: acme/app
        ref: refs/heads/main
---
kind: join_token
version: v1
metadata: {name: %[5]s}
spec:
  bot: %[2]s
  method: gitlab
  gitlab:
    issuer: %[7]s
    allow:
      - project_path: acme/app
        ref_protected: true
---
kind: join_token
version: v1
metadata: {name: %[6]s}
spec:
  bot: %[2]s
  method: circleci
  circleci:
    issuer: %[7]s
    organization_id: %[8]s
    allow:
      - project_id: %[9]s
`

// cluster is a running authority with a simulated CI platform beside it.
type cluster struct {
	ci     *simci.Issuer
	config string // path of authority.yaml
	url    string // https://127.0.0.1:PORT
	pin    string
	login  string // the OS user, the bot's SSH login
	home   string // HOME of the simulated jobs
}

// startCluster starts a simulated CI platform and `mbot authority start` as
// a subprocess, and stops both when the test ends; the authority must then
// shut down cleanly.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	c, _ := startClusterWith(t, defaultResources)
	return c
}

// defaultResources is the role, bot and three join tokens of botsYAML.
func defaultResources(c *cluster) string {
	projectID := simci.CircleCIClaims(circleOrgID)["oidc.circleci.com/project-id"].(string)
	return fmt.Sprintf(botsYAML, roleName, botName, c.login,
		tokenGitHub, tokenGitLab, tokenCircleCI, c.ci.URL, circleOrgID, projectID)
}

// startClusterWith is startCluster with the resources file that resources
// returns for the cluster (its issuer URL and OS login are set); it also
// hands back the running authority, whose output some tests search.
func startClusterWith(t *testing.T, resources func(c *cluster) string) (*cluster, *background) {
	t.Helper()
	return startClusterEnv(t, nil, resources)
}

// startClusterEnv is startClusterWith with env added to the authority's
// environment (SSL_CERT_FILE for an issuer under a test CA).
func startClusterEnv(t *testing.T, env []string, resources func(c *cluster) string) (*cluster, *background) {
	t.Helper()
	return startClusterConfig(t, env, resources, "")
}

// newCluster is a cluster yet to start: its simulated CI issuer, the
// current user's login, a home, and the address and authority.yaml path
// of its authority in dir.
func newCluster(t *testing.T) (c *cluster, dir, addr string) {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	ci, err := simci.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ci.Close() })
	dir = t.TempDir()
	addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	return &cluster{ci: ci, config: filepath.Join(dir, "authority.yaml"), url: "https://" + addr, login: u.Username, home: t.TempDir()}, dir, addr
}

// startClusterConfig is startClusterEnv with extraConfig appended to the
// authority's authority.yaml.
func startClusterConfig(t *testing.T, env []string, resources func(c *cluster) string, extraConfig string) (*cluster, *background) {
	t.Helper()
	c, dir, addr := newCluster(t)
	writeFile(t, c.config, fmt.Sprintf(authorityYAML, clusterName, addr, filepath.Join(dir, "data"))+extraConfig, 0o600)
	writeFile(t, filepath.Join(dir, "bots.yaml"), resources(c), 0o600)

	auth := startBackground(t, append(baseEnv(c.home), env...), true, mbotBin, "authority", "start", "--config", c.config)
	waitForPort(t, addr, auth.exited, auth.logs)

	// export opens the same SQLite database as the running authority.
	c.pin = strings.TrimSpace(mustMbot(t, baseEnv(c.home), "authority", "export", "--type", "ca-pin", "--config", c.config).stdout)
	if !strings.HasPrefix(c.pin, "sha256:") || len(c.pin) != len("sha256:")+64 {
		t.Fatalf("mbot authority export --type ca-pin printed %q, not sha256:<64 hex digits>", c.pin)
	}
	return c, auth
}

// issue runs `mbot issue` for join token token into out, in env.
func (c *cluster) issue(t *testing.T, env []string, token, out string, extra ...string) result {
	t.Helper()
	args := append([]string{"issue", "--authority", c.url, "--ca-pin", c.pin, "--token", token, "--out", out}, extra...)
	return mbot(t, env, args...)
}

// export runs `mbot authority export --type typ`.
func (c *cluster) export(t *testing.T, typ string) string {
	t.Helper()
	return mustMbot(t, baseEnv(c.home), "authority", "export", "--type", typ, "--config", c.config).stdout
}

// platform is one simulated CI platform: its join token and a job environment.
type platform struct {
	name  string
	token string
	// env returns the variables of a new job (with a fresh OIDC token where
	// the platform puts it into the environment).
	env func(t *testing.T, c *cluster) map[string]string
}

var platforms = []platform{
	{name: "github", token: tokenGitHub, env: gitHubJob},
	{name: "gitlab", token: tokenGitLab, env: gitLabJob},
	{name: "circleci", token: tokenCircleCI, env: circleCIJob},
}

// gitHubJob is a GitHub Actions job step with `permissions: id-token: write`
// and a GITHUB_OUTPUT file.
func gitHubJob(t *testing.T, c *cluster) map[string]string {
	vars := c.ci.GitHubEnv()
	vars["GITHUB_OUTPUT"] = filepath.Join(t.TempDir(), "github_output")
	return vars
}

// gitLabJob is a GitLab CI job with an MBOT_ID_TOKEN id_token for the cluster.
func gitLabJob(t *testing.T, c *cluster) map[string]string {
	vars, err := c.ci.GitLabEnv(clusterName)
	if err != nil {
		t.Fatal(err)
	}
	return vars
}

// circleCIJob is a CircleCI job of the trusted organization.
func circleCIJob(t *testing.T, c *cluster) map[string]string {
	vars, err := c.ci.CircleCIEnv(circleOrgID)
	if err != nil {
		t.Fatal(err)
	}
	return vars
}

// jobEnv is the environment of a simulated job: PATH, HOME and vars.
func (c *cluster) jobEnv(vars map[string]string) []string {
	return withVars(baseEnv(c.home), vars)
}

// gitLabEnvWithClaims is a GitLab job environment whose ID token carries
// GitLab's usual claims changed by override.
func (c *cluster) gitLabEnvWithClaims(t *testing.T, override map[string]any) map[string]string {
	t.Helper()
	claims := simci.GitLabClaims()
	claims["aud"] = clusterName
	for k, v := range override {
		claims[k] = v
	}
	tok, err := c.ci.Mint(claims)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"GITLAB_CI": "true", "CI": "true", "MBOT_ID_TOKEN": tok}
}

// gitHubEnvWithClaims is a GitHub Actions job environment whose runner
// token endpoint mints tokens with GitHub's usual claims changed by
// override. It is a runner endpoint of its own, so that the cluster's
// shared issuer keeps minting the usual claims for the other subtests.
func (c *cluster) gitHubEnvWithClaims(t *testing.T, override map[string]any) map[string]string {
	t.Helper()
	claims := simci.GitHubClaims()
	for k, v := range override {
		claims[k] = v
	}
	const requestToken = "e2e-runner-request-token"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+requestToken {
			http.Error(w, `{"message":"bad request token"}`, http.StatusUnauthorized)
			return
		}
		job := map[string]any{"aud": r.URL.Query().Get("audience")}
		for k, v := range claims {
			job[k] = v
		}
		tok, err := c.ci.Mint(job)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"value":%q}`, tok)
	}))
	t.Cleanup(srv.Close)
	return map[string]string{
		"GITHUB_ACTIONS":                 "true",
		"ACTIONS_ID_TOKEN_REQUEST_URL":   srv.URL + "/github/token?api-version=2.0",
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN": requestToken,
		"GITHUB_OUTPUT":                  filepath.Join(t.TempDir(), "github_output"),
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
