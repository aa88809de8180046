package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The resources TestAdmin adds to a running authority.
const (
	adminBot   = "admin-bot"
	adminToken = "admin-gitlab"
	// adminRoleA grants the OS user literally; adminRoleB grants the bot's logins
	// trait, which mbot bots add sets to another account.
	adminRoleA = "admin-a"
	adminRoleB = "admin-b"
)

const adminRolesYAML = `kind: role
version: v1
metadata: {name: %s}
spec:
  logins: [%q]
  max_ttl: 2h
---
kind: role
version: v1
metadata: {name: %s}
spec:
  logins: ["{{internal.logins}}"]
`

const adminTokenYAML = `kind: join_token
version: v1
metadata: {name: %s}
spec:
  bot: %s
  method: gitlab
  gitlab:
    issuer: %s
    allow:
      - project_path: acme/app
        ref_protected: true
`

// adminAuditRecord is the part of mbot audit -o json the tests read.
type adminAuditRecord struct {
	Event     string            `json:"event"`
	Allowed   bool              `json:"allowed"`
	Code      string            `json:"code"`
	Message   string            `json:"message"`
	Bot       string            `json:"bot"`
	JoinToken string            `json:"join_token"`
	Method    string            `json:"method"`
	Claims    map[string]string `json:"claims"`
	Serials   []string          `json:"serials"`
}

// TestAdmin changes the resources of a running authority with the admin
// commands (local mode, on the authority's store) and checks that joins,
// SSH logins through a real sshd, lint and the audit log follow, without
// restarting the authority.
func TestAdmin(t *testing.T) {
	c := startCluster(t)
	env := withVars(baseEnv(c.home), map[string]string{"MBOT_AUTHORITY_CONFIG": c.config})
	other := otherLogin(c.login)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "roles.yaml"), fmt.Sprintf(adminRolesYAML, adminRoleA, c.login, adminRoleB), 0o600)
	writeFile(t, filepath.Join(dir, "token.yaml"), fmt.Sprintf(adminTokenYAML, adminToken, adminBot, c.ci.URL), 0o600)
	identities := map[string]string{} // role → identity directory issued for it alone

	t.Run("bots-add-refuses-unknown-roles", func(t *testing.T) {
		res := mbot(t, env, "bots", "add", adminBot, "--roles", adminRoleA+","+adminRoleB, "--logins", other)
		if res.code != 1 {
			t.Fatalf("mbot bots add with undefined roles: want exit 1: %s", res)
		}
		for _, want := range []string{adminRoleA, adminRoleB, "not defined", "existing roles: " + roleName} {
			if !strings.Contains(res.stderr, want) {
				t.Errorf("stderr does not say %q:\n%s", want, res.stderr)
			}
		}
	})

	t.Run("apply-while-running", func(t *testing.T) {
		res := mustMbot(t, baseEnv(c.home), "apply", "--config", c.config, "-f", filepath.Join(dir, "roles.yaml"))
		if want := "applied role/" + adminRoleA + "\napplied role/" + adminRoleB + "\n"; res.stdout != want {
			t.Errorf("mbot apply printed %q, want %q", res.stdout, want)
		}
		res = mustMbot(t, env, "bots", "add", adminBot, "--roles", adminRoleA+","+adminRoleB, "--logins", other)
		if want := "applied bot/" + adminBot + "\n"; res.stdout != want {
			t.Errorf("mbot bots add printed %q, want %q", res.stdout, want)
		}
		res = mustMbot(t, env, "apply", "-f", filepath.Join(dir, "token.yaml"))
		if want := "applied join_token/" + adminToken + "\n"; res.stdout != want {
			t.Errorf("mbot apply printed %q, want %q", res.stdout, want)
		}

		// The authority checks the store for changes at most every 250ms.
		out := filepath.Join(dir, "identity-a") // outlives this subtest
		deadline := time.Now().Add(2 * time.Second)
		for {
			res := c.issue(t, c.jobEnv(gitLabJob(t, c)), adminToken, out, "--roles", adminRoleA)
			if res.code == 0 {
				break
			}
			if !strings.Contains(res.stderr, "unknown_join_token") || time.Now().After(deadline) {
				t.Fatalf("mbot issue with the join token applied at run time: %s", res)
			}
			time.Sleep(100 * time.Millisecond)
		}
		sum := readSummary(t, out)
		if sum.Bot != adminBot || !slices.Equal(sum.Roles, []string{adminRoleA}) || !slices.Equal(sum.Logins, []string{c.login}) {
			t.Errorf("identity.json: bot %q roles %v logins %v; want bot %s, roles [%s], logins [%s]",
				sum.Bot, sum.Roles, sum.Logins, adminBot, adminRoleA, c.login)
		}
		if d := time.Until(sum.NotAfter); d > 2*time.Hour+time.Minute {
			t.Errorf("identity valid for %s, above role %s max_ttl 2h", d.Round(time.Second), adminRoleA)
		}
		identities[adminRoleA] = out

		out = filepath.Join(dir, "identity-b")
		if res := c.issue(t, c.jobEnv(gitLabJob(t, c)), adminToken, out, "--roles", adminRoleB); res.code != 0 {
			t.Fatalf("mbot issue --roles %s: %s", adminRoleB, res)
		}
		if sum := readSummary(t, out); !slices.Equal(sum.Roles, []string{adminRoleB}) || !slices.Equal(sum.Logins, []string{other}) {
			t.Errorf("identity.json for --roles %s: roles %v logins %v; want logins [%s] from the bot's logins trait",
				adminRoleB, sum.Roles, sum.Logins, other)
		}
		identities[adminRoleB] = out
	})

	t.Run("refused-join", func(t *testing.T) {
		vars := c.gitLabEnvWithClaims(t, map[string]any{"project_path": "evil/app", "sub": "project_path:evil/app:ref_type:branch:ref:main"})
		wantRefused(t, c, c.jobEnv(vars), adminToken, "rule_mismatch", "project_path", "evil/app")
	})

	t.Run("get-bots", func(t *testing.T) {
		res := mustMbot(t, env, "get", "bots")
		lines := strings.Split(res.stdout, "\n")
		var rowA, rowB string
		for _, l := range lines {
			f := strings.Fields(l)
			switch {
			case slices.Contains(f, adminRoleA):
				rowA = l
			case slices.Contains(f, adminRoleB):
				rowB = l
			}
		}
		// Role A lists the login; role B grants it only through the bot's
		// trait, which the table marks.
		if !strings.Contains(rowA, adminBot) || !strings.HasSuffix(rowA, " "+c.login) {
			t.Errorf("row of role %s does not grant %s to %s: %q\n%s", adminRoleA, c.login, adminBot, rowA, res.stdout)
		}
		if !strings.HasSuffix(rowB, " "+other+"*") || !strings.Contains(res.stdout, "{{internal.logins}}") {
			t.Errorf("row of role %s does not mark %s as granted only by a trait: %q\n%s", adminRoleB, other, rowB, res.stdout)
		}
		res = mustMbot(t, env, "get", "bots", adminBot, "-o", "json")
		var doc struct {
			Kind     string
			Version  string
			Metadata struct{ Name string }
			Spec     struct {
				Roles  []string
				Traits map[string][]string
			}
		}
		if err := json.Unmarshal([]byte(res.stdout), &doc); err != nil {
			t.Fatalf("mbot get bots %s -o json: %v\n%s", adminBot, err, res.stdout)
		}
		if doc.Kind != "bot" || doc.Version != "v1" || doc.Metadata.Name != adminBot ||
			!slices.Equal(doc.Spec.Roles, []string{adminRoleA, adminRoleB}) || !slices.Equal(doc.Spec.Traits["logins"], []string{other}) {
			t.Errorf("mbot get bots %s -o json: %+v", adminBot, doc)
		}
	})

	t.Run("round-trip", func(t *testing.T) {
		for _, kind := range []string{"bots", "roles", "join_tokens"} {
			for _, format := range []string{"yaml", "json"} {
				t.Run(kind+"-"+format, func(t *testing.T) {
					before := mustMbot(t, env, "get", kind, "-o", format).stdout
					file := filepath.Join(t.TempDir(), kind+"."+format)
					writeFile(t, file, before, 0o600)
					res := mustMbot(t, env, "apply", "-f", file)
					singular := strings.TrimSuffix(kind, "s")
					if n := strings.Count(res.stdout, "applied "+singular+"/"); n < 2 {
						t.Errorf("mbot apply of mbot get %s -o %s applied %d %s resources:\n%s", kind, format, n, singular, res.stdout)
					}
					if after := mustMbot(t, env, "get", kind, "-o", format).stdout; after != before {
						t.Errorf("mbot get %s -o %s changed after a round trip through mbot apply:\n%s\n--- after:\n%s", kind, format, before, after)
					}
				})
			}
		}
		// The authority still serves the bot after its resources were re-applied.
		if res := c.issue(t, c.jobEnv(gitLabJob(t, c)), adminToken, filepath.Join(t.TempDir(), "again")); res.code != 0 {
			t.Fatalf("mbot issue after the round trip: %s", res)
		}
	})

	t.Run("rm", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "tmp.yaml"), "kind: role\nversion: v1\nmetadata: {name: tmp}\nspec: {logins: [nobody]}\n", 0o600)
		mustMbot(t, env, "apply", "-f", filepath.Join(dir, "tmp.yaml"))
		mustMbot(t, env, "bots", "add", "tmp-bot", "--roles", "tmp")

		res := mbot(t, env, "rm", "role/tmp")
		if res.code != 1 || !strings.Contains(res.stderr, "tmp-bot") {
			t.Errorf("mbot rm of a role a bot holds: want exit 1 naming the bot: %s", res)
		}
		mustMbot(t, env, "get", "roles", "tmp")
		if res := mustMbot(t, env, "rm", "bot/tmp-bot"); res.stdout != "removed bot/tmp-bot\n" {
			t.Errorf("mbot rm bot/tmp-bot printed %q", res.stdout)
		}
		if res := mustMbot(t, env, "rm", "roles/tmp"); res.stdout != "removed role/tmp\n" {
			t.Errorf("mbot rm roles/tmp printed %q", res.stdout)
		}
		if res := mbot(t, env, "get", "roles", "tmp"); res.code != 1 || !strings.Contains(res.stderr, `no role named "tmp"`) {
			t.Errorf("mbot get roles tmp after rm: %s", res)
		}
		if res := mbot(t, env, "rm", "tmp"); res.code != 2 {
			t.Errorf("mbot rm without KIND/: want exit 2 (usage): %s", res)
		}
	})

	t.Run("lint", func(t *testing.T) {
		res := mbot(t, env, "lint")
		if res.code != 0 {
			t.Fatalf("mbot lint of working bots: %s", res)
		}
		if !strings.Contains(res.stdout, "bot "+adminBot) || !strings.Contains(res.stdout, "role "+adminRoleB+": "+other+"*") {
			t.Errorf("mbot lint does not list what %s's roles grant:\n%s", adminBot, res.stdout)
		}
		writeFile(t, filepath.Join(dir, "mfa.yaml"), "kind: role\nversion: v1\nmetadata: {name: mfa-role}\nspec: {logins: [nobody], require_session_mfa: true}\n", 0o600)
		mustMbot(t, env, "apply", "-f", filepath.Join(dir, "mfa.yaml"))
		mustMbot(t, env, "bots", "add", "mfa-bot", "--roles", "mfa-role")
		res = mbot(t, env, "lint")
		if res.code != 1 {
			t.Fatalf("mbot lint with a bot holding a require_session_mfa role: want exit 1: %s", res)
		}
		var found bool
		for _, l := range strings.Split(res.stdout, "\n") {
			if strings.HasPrefix(l, "error: ") && strings.Contains(l, `role "mfa-role"`) && strings.Contains(l, "require_session_mfa") {
				found = true
			}
		}
		if !found {
			t.Errorf("mbot lint does not report role mfa-role as blocking:\n%s", res.stdout)
		}
	})

	t.Run("audit", func(t *testing.T) {
		res := mustMbot(t, env, "audit", "-o", "json", "--limit", "0")
		if strings.Contains(res.stdout, "eyJ") {
			t.Errorf("mbot audit -o json contains what looks like a JWT:\n%s", res.stdout)
		}
		var records []adminAuditRecord
		if err := json.Unmarshal([]byte(res.stdout), &records); err != nil {
			t.Fatalf("mbot audit -o json: %v\n%s", err, res.stdout)
		}
		has := func(what string, match func(r adminAuditRecord) bool) {
			t.Helper()
			if !slices.ContainsFunc(records, match) {
				t.Errorf("the audit log lacks %s", what)
			}
		}
		has("the admitted join with its claims and serials", func(r adminAuditRecord) bool {
			return r.Event == "join" && r.Allowed && r.JoinToken == adminToken && r.Bot == adminBot && r.Method == "gitlab" &&
				r.Claims["project_path"] == "acme/app" && r.Claims["ref"] == "main" && len(r.Serials) == 2
		})
		has("the refused join with its reason code and claims", func(r adminAuditRecord) bool {
			return r.Event == "join" && !r.Allowed && r.Code == "rule_mismatch" && r.JoinToken == adminToken &&
				r.Claims["project_path"] == "evil/app" && len(r.Serials) == 0
		})
		has("the join token applied at run time", func(r adminAuditRecord) bool {
			return r.Event == "resource.apply" && strings.Contains(r.Message, "join_token/"+adminToken)
		})
		has("the bot added at run time", func(r adminAuditRecord) bool {
			return r.Event == "resource.apply" && strings.Contains(r.Message, "bot/"+adminBot)
		})
		has("the removed role", func(r adminAuditRecord) bool { return r.Event == "resource.rm" && r.Message == "role/tmp" })

		res = mustMbot(t, env, "audit", "--denied", "-o", "json")
		var denied []adminAuditRecord
		if err := json.Unmarshal([]byte(res.stdout), &denied); err != nil {
			t.Fatalf("mbot audit --denied -o json: %v\n%s", err, res.stdout)
		}
		if len(denied) == 0 {
			t.Errorf("mbot audit --denied lists nothing")
		}
		for _, r := range denied {
			if r.Allowed {
				t.Errorf("mbot audit --denied lists an admitted record: %+v", r)
			}
		}

		res = mustMbot(t, env, "audit", "--bot", adminBot, "--since", "1h")
		for _, want := range []string{"denied rule_mismatch", "project_path=evil/app", "project_path=acme/app ref=main", adminToken} {
			if !strings.Contains(res.stdout, want) {
				t.Errorf("mbot audit --bot %s does not show %q:\n%s", adminBot, want, res.stdout)
			}
		}
		if strings.Contains(res.stdout, "resource.apply") {
			t.Errorf("mbot audit --bot %s lists resource changes:\n%s", adminBot, res.stdout)
		}
	})

	t.Run("ssh-logins-follow-roles", func(t *testing.T) {
		dirA, dirB := identities[adminRoleA], identities[adminRoleB]
		if dirA == "" || dirB == "" {
			t.Fatal("no identities issued per role")
		}
		if p := parseSSHCert(t, filepath.Join(dirA, "key-cert.pub")).ValidPrincipals; !slices.Equal(p, []string{c.login}) {
			t.Errorf("certificate for --roles %s has principals %v, want [%s]", adminRoleA, p, c.login)
		}
		srv := startSSHD(t, c)

		res := srv.connect(t, c, "-F", filepath.Join(dirA, "ssh_config"), "-l", c.login)
		if res.code != 0 || strings.TrimSpace(res.stdout) != "mbot-ok" {
			t.Fatalf("ssh as %s (role %s's login) with the %s certificate: %s\nsshd:\n%s", c.login, adminRoleA, adminRoleA, res, srv.logs)
		}

		// Role B's login with role A's certificate: sshd checks the
		// principals for an account it could log in to; a non-root sshd
		// refuses other accounts before that.
		const notListed = "name is not a listed principal"
		wants := []string{notListed, "User " + other + " not allowed", "Invalid user " + other}
		before := logCounts(srv, wants)
		res = srv.connect(t, c, "-F", filepath.Join(dirA, "ssh_config"), "-l", other)
		wantDenied(t, res, fmt.Sprintf("ssh as %s (role %s's login) with the %s certificate", other, adminRoleB, adminRoleA))
		switch waitForNewLog(srv, before, wants) {
		case notListed:
		case "":
			t.Errorf("sshd did not log why it refused %s:\n%s", other, srv.logs)
		default:
			if os.Geteuid() == 0 {
				t.Errorf("sshd running as root refused %s without checking the certificate:\n%s", other, srv.logs)
			}
			t.Logf("sshd refused the account %s before checking the certificate's principals", other)
		}

		// The other way round, checked by the certificate whatever the user:
		// role B's certificate does not log in as role A's login.
		if p := parseSSHCert(t, filepath.Join(dirB, "key-cert.pub")).ValidPrincipals; slices.Contains(p, c.login) {
			t.Errorf("certificate for --roles %s carries %s: %v", adminRoleB, c.login, p)
		}
		before = logCounts(srv, []string{notListed})
		res = srv.connect(t, c, "-F", filepath.Join(dirB, "ssh_config"), "-l", c.login)
		wantDenied(t, res, fmt.Sprintf("ssh as %s (role %s's login) with the %s certificate", c.login, adminRoleA, adminRoleB))
		if waitForNewLog(srv, before, []string{notListed}) == "" {
			t.Errorf("sshd did not refuse %s for the certificate's principals:\n%s", c.login, srv.logs)
		}
	})
}

// logCounts counts how often sshd has logged each of wants so far.
func logCounts(s *sshServer, wants []string) map[string]int {
	logs := s.logs.String()
	counts := map[string]int{}
	for _, w := range wants {
		counts[w] = strings.Count(logs, w)
	}
	return counts
}

// waitForNewLog waits briefly until sshd logs one of wants once more than
// it had in before, and returns it, or "".
func waitForNewLog(s *sshServer, before map[string]int, wants []string) string {
	deadline := time.Now().Add(3 * time.Second)
	for {
		now := logCounts(s, wants)
		for _, w := range wants {
			if now[w] > before[w] {
				return w
			}
		}
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLintBeforeFirstStart checks mbot lint --config on an authority that
// never started: it reports on the resources: files, as the first start
// would apply them, and creates no data_dir and no database.
func TestLintBeforeFirstStart(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "authority.yaml")
	writeFile(t, config, "cluster_name: acme\nlisten: 127.0.0.1:0\ndata_dir: ./data\nresources: [bots.yaml]\n", 0o600)
	writeFile(t, filepath.Join(dir, "bots.yaml"), `kind: role
version: v1
metadata: {name: deploy}
spec: {logins: [deploy]}
---
kind: role
version: v1
metadata: {name: mfa-role}
spec: {logins: [ops], require_session_mfa: true}
---
kind: bot
version: v1
metadata: {name: deployer}
spec: {roles: [deploy]}
---
kind: bot
version: v1
metadata: {name: mfa-bot}
spec: {roles: [mfa-role]}
`, 0o600)
	env := baseEnv(t.TempDir())
	res := mbot(t, env, "lint", "--config", config)
	if res.code != 1 {
		t.Fatalf("mbot lint of a bot holding a require_session_mfa role: want exit 1: %s", res)
	}
	for _, want := range []string{"bot deployer\n  role deploy: deploy\n", "bot mfa-bot\n", `role "mfa-role"`} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("mbot lint before the first start lacks %q:\n%s", want, res.stdout)
		}
	}
	if !strings.Contains(res.stderr, "has not started yet") || !strings.Contains(res.stderr, "nothing was created") {
		t.Errorf("mbot lint does not say it read the files of an authority that never started:\n%s", res.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mbot lint created data_dir (%v)", err)
	}
	// A reference to a role no file defines is what the first start would refuse.
	writeFile(t, filepath.Join(dir, "bots.yaml"), "kind: bot\nversion: v1\nmetadata: {name: lost}\nspec: {roles: [nowhere]}\n", 0o600)
	if res := mbot(t, env, "lint", "--config", config); res.code != 1 || !strings.Contains(res.stderr, "nowhere") {
		t.Errorf("mbot lint of a bot whose role no file defines: %s", res)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mbot lint created data_dir (%v)", err)
	}
}
