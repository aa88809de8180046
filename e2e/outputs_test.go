package e2e

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	_ "modernc.org/sqlite" // the audit log is read straight from the store
)

// The bot of multiRolesYAML: two roles with different logins, one join token.
const (
	multiBot   = "multi-bot"
	roleA      = "deploy-a"
	roleB      = "ops-b"
	roleMFA    = "admin-mfa"
	roleTunnel = "tunnel-a"
	tokenMulti = "github-multi"
)

// multiRolesYAML adds to the cluster's resources a bot with two roles whose
// logins differ (%[1]s is role A's login, %[2]s role B's), a role that
// requires per-session MFA and one that permits port forwarding.
const multiRolesYAML = `
---
kind: role
version: v1
metadata: {name: ` + roleA + `}
spec:
  logins: [%[1]s]
---
kind: role
version: v1
metadata: {name: ` + roleB + `}
spec:
  logins: [%[2]s]
---
kind: role
version: v1
metadata: {name: ` + roleMFA + `}
spec:
  logins: [%[1]s]
  require_session_mfa: true
---
kind: role
version: v1
metadata: {name: ` + roleTunnel + `}
spec:
  logins: [%[1]s]
  permit_port_forwarding: true
---
kind: bot
version: v1
metadata: {name: ` + multiBot + `}
spec:
  roles: [` + roleA + `, ` + roleB + `]
---
kind: join_token
version: v1
metadata: {name: ` + tokenMulti + `}
spec:
  bot: ` + multiBot + `
  method: github
  github:
    issuer: %[3]s
    allow:
      - repository: acme/app
`

// multiCluster is a cluster whose resources also hold multiRolesYAML.
type multiCluster struct {
	*cluster
	loginA, loginB string
}

// startMultiCluster starts a cluster like startCluster does, with
// multiRolesYAML added to its resources. Role A's login is the OS user, the
// one account a non-root sshd can log in to; role B's is another account.
func startMultiCluster(t *testing.T) *multiCluster {
	t.Helper()
	mc := &multiCluster{}
	mc.cluster, _ = startClusterWith(t, func(c *cluster) string {
		mc.loginA, mc.loginB = c.login, otherLogin(c.login)
		return defaultResources(c) + fmt.Sprintf(multiRolesYAML, mc.loginA, mc.loginB, c.ci.URL)
	})
	return mc
}

// auditEvents reads the audit records of event from the authority's store,
// opened read-only beside the running authority, oldest first.
func auditEvents(t *testing.T, c *cluster, event string) []store.AuditEvent {
	t.Helper()
	path := filepath.Join(filepath.Dir(c.config), "data", "mbot.db")
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT record FROM audit WHERE event = ? ORDER BY id`, event)
	if err != nil {
		t.Fatalf("reading the audit log: %v", err)
	}
	defer rows.Close()
	var out []store.AuditEvent
	for rows.Next() {
		var record []byte
		var ev store.AuditEvent
		if err := rows.Scan(&record); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(record, &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

const mbotYAML = `# mbot.yaml
authority: %s
ca_pin: %s
token: %s
join_method: auto
ttl: 2h
outputs:
  - type: identity
    destination: %s
    roles: [%s]
  - type: identity
    destination: %s
    roles: [%s]
`

// TestOutputs runs mbot issue --config mbot.yaml with two outputs of
// different roles: one join, two directories, each certificate with only
// its roles' logins, and sshd admits each output only as its own login.
func TestOutputs(t *testing.T) {
	mc := startMultiCluster(t)
	c := mc.cluster
	work := t.TempDir()
	dirA, dirB := filepath.Join(work, "mbot-deploy"), filepath.Join(work, "mbot-ops")
	config := filepath.Join(work, "mbot.yaml")
	writeFile(t, config, fmt.Sprintf(mbotYAML, c.url, c.pin, tokenMulti, dirA, roleA, dirB, roleB), 0o644)

	vars := gitHubJob(t, c)
	vars["MBOT_CONFIG"] = config
	res := mbot(t, c.jobEnv(vars), "issue")
	if res.code != 0 {
		t.Fatalf("mbot issue with MBOT_CONFIG: %s", res)
	}

	certs := map[string]string{dirA: mc.loginA, dirB: mc.loginB}
	roles := map[string]string{dirA: roleA, dirB: roleB}
	var serials []string
	for dir, login := range certs {
		for _, name := range identityFiles {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				t.Errorf("output %s: %v", filepath.Base(dir), err)
			}
		}
		sum := readSummary(t, dir)
		if sum.Bot != multiBot || sum.JoinToken != tokenMulti || !slices.Equal(sum.Roles, []string{roles[dir]}) ||
			!slices.Equal(sum.Logins, []string{login}) {
			t.Errorf("%s/identity.json: bot %q join_token %q roles %v logins %v; want %s %s [%s] [%s]",
				filepath.Base(dir), sum.Bot, sum.JoinToken, sum.Roles, sum.Logins, multiBot, tokenMulti, roles[dir], login)
		}
		if d := time.Until(sum.NotAfter); d > 2*time.Hour+time.Minute || d < 2*time.Hour-5*time.Minute {
			t.Errorf("%s valid for %s, want ttl: 2h from mbot.yaml", filepath.Base(dir), d.Round(time.Second))
		}
		cert := parseSSHCert(t, filepath.Join(dir, "key-cert.pub"))
		if !slices.Equal(cert.ValidPrincipals, []string{login}) {
			t.Errorf("%s/key-cert.pub principals %v, want only [%s]", filepath.Base(dir), cert.ValidPrincipals, login)
		}
		leaf := parseCertChain(t, filepath.Join(dir, "tls.crt"))[0]
		if !slices.Equal(leaf.Subject.OrganizationalUnit, []string{roles[dir]}) {
			t.Errorf("%s/tls.crt carries roles %v, want [%s]", filepath.Base(dir), leaf.Subject.OrganizationalUnit, roles[dir])
		}
		serials = append(serials, fmt.Sprintf("ssh:%d", cert.Serial))
		if cfg := readFile(t, filepath.Join(dir, "ssh_config")); !strings.Contains(cfg, "User "+login) || !strings.Contains(cfg, filepath.Join(dir, "key")) {
			t.Errorf("%s/ssh_config does not use its own key and login %s:\n%s", filepath.Base(dir), login, cfg)
		}
	}
	if readFile(t, filepath.Join(dirA, "key")) == readFile(t, filepath.Join(dirB, "key")) {
		t.Errorf("the two outputs share a private key")
	}

	t.Run("github-step-outputs", func(t *testing.T) {
		outputs := readFile(t, vars["GITHUB_OUTPUT"])
		for _, want := range []string{"mbot-deploy-destination-dir=" + dirA + "\n", "mbot-ops-ssh-config=" + filepath.Join(dirB, "ssh_config") + "\n"} {
			if !strings.Contains(outputs, want) {
				t.Errorf("GITHUB_OUTPUT lacks %q:\n%s", strings.TrimSpace(want), outputs)
			}
		}
	})

	t.Run("one-join", func(t *testing.T) {
		joins := auditEvents(t, c, "join")
		if len(joins) != 1 {
			t.Fatalf("%d join audit records, want 1 for both outputs: %+v", len(joins), joins)
		}
		ev := joins[0]
		if !ev.Allowed || ev.Bot != multiBot || ev.JoinToken != tokenMulti || !slices.Equal(ev.Roles, []string{roleA, roleB}) {
			t.Errorf("join record: allowed %v bot %q join_token %q roles %v", ev.Allowed, ev.Bot, ev.JoinToken, ev.Roles)
		}
		for _, s := range serials {
			if !slices.Contains(ev.Serials, s) {
				t.Errorf("join record serials %v lack %s", ev.Serials, s)
			}
		}
	})

	t.Run("ssh", func(t *testing.T) {
		srv := startSSHD(t, c)
		res := srv.connect(t, c, "-F", filepath.Join(dirA, "ssh_config"))
		if res.code != 0 || strings.TrimSpace(res.stdout) != "mbot-ok" {
			t.Fatalf("ssh as %s with output A: %s\nsshd:\n%s", mc.loginA, res, srv.logs)
		}
		wantDenied(t, srv.connect(t, c, "-F", filepath.Join(dirA, "ssh_config"), "-l", mc.loginB), "output A as B's login "+mc.loginB)
		// Output B's certificate names only B's login, so sshd refuses it for
		// A's login, the account it could otherwise log in to.
		wantDenied(t, srv.connect(t, c, "-F", filepath.Join(dirB, "ssh_config"), "-l", mc.loginA), "output B as A's login "+mc.loginA)
		if srv.waitForLog("name is not a listed principal") == "" {
			t.Errorf("sshd did not refuse output B for its principals:\n%s", srv.logs)
		}
	})

	t.Run("failed-write-leaves-nothing", func(t *testing.T) {
		// Output B's directory now holds a file mbot did not write, so it
		// cannot be replaced: the run is refused before it joins (no proof
		// spent), and removes the identities earlier runs left in both
		// outputs, leaving neither behind.
		writeFile(t, filepath.Join(dirB, "notes.txt"), "keep me\n", 0o644)
		vars := gitHubJob(t, c)
		res := mbot(t, c.jobEnv(vars), "issue", "--config", config)
		if res.code == 0 {
			t.Fatalf("mbot issue into a directory with foreign files succeeded: %s", res)
		}
		if !strings.Contains(res.stderr, "notes.txt") || !strings.Contains(res.stderr, "removed the earlier identity in "+dirA+", "+dirB) {
			t.Errorf("stderr should name the foreign file and say what was removed:\n%s", res.stderr)
		}
		if _, err := os.Stat(dirA); !os.IsNotExist(err) {
			t.Errorf("output A is left behind after output B failed: %v", err)
		}
		entries, err := os.ReadDir(dirB)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Name() != "notes.txt" {
			t.Errorf("output B's directory holds %v, want only notes.txt (the stale identity removed)", entries)
		}
		wantNoTemporaries(t, work)
	})

	t.Run("refused-config", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "mbot.yaml")
		writeFile(t, bad, fmt.Sprintf(mbotYAML, c.url, c.pin, tokenMulti, dirA, roleA, dirA+"/", roleB), 0o644)
		res := mbot(t, c.jobEnv(gitHubJob(t, c)), "issue", "--config", bad)
		if res.code == 0 || !strings.Contains(res.stderr, bad+":12:") || !strings.Contains(res.stderr, "already the destination") {
			t.Errorf("two outputs with one destination: want a refusal at %s:12: %s", bad, res)
		}
		writeFile(t, bad, "outputs:\n  - type: kubernetes\n    destination: ./kube\n", 0o644)
		res = mbot(t, c.jobEnv(gitHubJob(t, c)), "issue", "--config", bad)
		if res.code == 0 || !strings.Contains(res.stderr, bad+":2:") || !strings.Contains(res.stderr, "outputs[0].kubernetes_cluster: is required") {
			t.Errorf("a kubernetes output without its cluster: want a refusal at %s:2 saying kubernetes_cluster is required: %s", bad, res)
		}
	})
}

// wantNoTemporaries checks that no half-written temporary directory is left in dir.
func wantNoTemporaries(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("a temporary %s is left in %s", e.Name(), dir)
		}
	}
}
