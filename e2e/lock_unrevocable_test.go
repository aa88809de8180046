//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// unrevocableYAML adds a bot holding a kubeconfig and JWT-SVIDs: no
// revocation list reaches either. %[1]s: issuer, %[2]s: the API server's
// CA, indented (no API server runs: the kubeconfig is only issued).
const unrevocableYAML = `
---
kind: role
version: v1
metadata: {name: kube-jwt}
spec:
  kubernetes_users: [deployer]
  spiffe_ids: ["/ci/deploy"]
  jwt_audiences: [vault, sts.amazonaws.com]
---
kind: bot
version: v1
metadata: {name: kube-jwt-bot}
spec:
  roles: [kube-jwt]
---
kind: join_token
version: v1
metadata: {name: github-kube-jwt}
spec:
  bot: kube-jwt-bot
  method: github
  github:
    issuer: %[1]s
    allow:
      - repository: acme/app
---
kind: kubernetes_cluster
version: v1
metadata: {name: prod}
spec:
  api_server: https://127.0.0.1:6443
  ca: |
%[2]s
`

const unrevocableMbotYAML = `authority: %s
ca_pin: %s
token: github-kube-jwt
ttl: 2h
outputs:
  - type: kubernetes
    destination: %[3]s/kube
    kubernetes_cluster: prod
  - type: workload-identity-jwt
    destination: %[3]s/jwt
    audiences: [vault, sts.amazonaws.com]
    spiffe_id: /ci/deploy
`

// TestLockSaysWhatCannotBeRevoked: mbot lock of a bot, or of a claim, that
// covers a kubeconfig and JWT-SVIDs says so (kube-apiserver reads no CRL,
// a JWT-SVID lives at most 1 h and is not renewed) with how many and when
// the last expires, in its text (--config) and in -o json's unrevocable
// (--auth); a lock that covers none says that none is unexpired.
func TestLockSaysWhatCannotBeRevoked(t *testing.T) {
	ca := testservers.NewCA(t, "API server CA")
	c, _ := startClusterWith(t, func(c *cluster) string {
		return defaultResources(c) + fmt.Sprintf(unrevocableYAML, c.ci.URL, "    "+strings.ReplaceAll(strings.TrimSpace(string(ca.CertPEM)), "\n", "\n    "))
	})
	env := baseEnv(c.home)
	adminDir := filepath.Join(filepath.Dir(c.config), "data", "admin")
	work := t.TempDir()
	config := filepath.Join(work, "mbot.yaml")
	writeFile(t, config, fmt.Sprintf(unrevocableMbotYAML, c.url, c.pin, work), 0o644)
	vars := gitHubJob(t, c)
	vars["MBOT_CONFIG"] = config
	if res := mbot(t, c.jobEnv(vars), "issue"); res.code != 0 {
		t.Fatalf("mbot issue: %s", res)
	}
	var kube, jwt struct {
		NotAfter time.Time `json:"not_after"`
	}
	for path, v := range map[string]any{filepath.Join(work, "kube", "kubernetes.json"): &kube, filepath.Join(work, "jwt", "workload-identity-jwt.json"): &jwt} {
		if err := json.Unmarshal([]byte(readFile(t, path)), v); err != nil {
			t.Fatal(err)
		}
	}
	if time.Until(kube.NotAfter) < 90*time.Minute || time.Until(jwt.NotAfter) > time.Hour {
		t.Fatalf("the kubeconfig lives until %s, the JWT-SVIDs until %s: want 2 h and at most 1 h", kube.NotAfter, jwt.NotAfter)
	}

	res := mustMbot(t, env, "lock", "bot/kube-jwt-bot", "--reason", "runner stolen", "--config", c.config)
	for _, want := range []string{
		"1 kubeconfig (kubernetes outputs) it covers cannot be revoked, since kube-apiserver reads no revocation list",
		"the last expires at " + kube.NotAfter.UTC().Format(time.RFC3339),
		"2 JWT-SVIDs it covers cannot be revoked",
		"at most 1 h and is not renewed once locked; the last expires at " + jwt.NotAfter.UTC().Format(time.RFC3339),
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("mbot lock bot/ does not say %q:\n%s", want, res.stdout)
		}
	}
	mustMbot(t, env, "unlock", "bot/kube-jwt-bot", "--config", c.config)

	var added admin.LockAdded
	if err := json.Unmarshal([]byte(mustMbot(t, env, "lock", "--claim", "repository=acme/app", "-o", "json", "--auth", adminDir).stdout), &added); err != nil {
		t.Fatal(err)
	}
	// Every join of defaultResources' github token carries the claim too,
	// but only this bot holds a kubeconfig or JWT-SVIDs.
	got := map[string]admin.Unrevocable{}
	for _, u := range added.Unrevocable {
		got[u.Kind] = u
	}
	if k := got["kubeconfig"]; len(added.Unrevocable) != 2 || k.Count != 1 || !k.LatestExpiry.Equal(kube.NotAfter) {
		t.Errorf("mbot lock --claim -o json: unrevocable %+v, want 1 kubeconfig until %s", added.Unrevocable, kube.NotAfter)
	}
	if j := got["jwt-svid"]; j.Count != 2 || !j.LatestExpiry.Equal(jwt.NotAfter) {
		t.Errorf("mbot lock --claim -o json: unrevocable %+v, want 2 JWT-SVIDs until %s", added.Unrevocable, jwt.NotAfter)
	}

	res = mustMbot(t, env, "lock", "bot/"+botName, "--config", c.config)
	if !strings.Contains(res.stdout, "no kubeconfigs (kubernetes outputs) or JWT-SVIDs it covers are unexpired") {
		t.Errorf("mbot lock of a bot with neither:\n%s", res.stdout)
	}
}
