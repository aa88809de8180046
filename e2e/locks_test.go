//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
)

// lockRounds is how many times TestChangesCountWhenCommandReturns changes
// something and joins straight after, per engine.
const lockRounds = 200

// gitlabTokenYAML is the gitlab join token of botsYAML with the project its
// allow rule names (%[2]s); %[1]s is the issuer.
const gitlabTokenYAML = `kind: join_token
version: v1
metadata: {name: ` + tokenGitLab + `}
spec:
  bot: ` + botName + `
  method: gitlab
  gitlab:
    issuer: %[1]s
    allow:
      - project_path: %[2]s
        ref_protected: true
`

// joinGitLab joins through url (pinned to pin) with a fresh GitLab ID
// token of the simulated platform, as a new client would, and returns the
// refusal code ("" when admitted).
func joinGitLab(t *testing.T, c *cluster, url string) (identity.ErrorCode, string) {
	t.Helper()
	job, err := c.ci.GitLabEnv(clusterName)
	if err != nil {
		t.Fatal(err)
	}
	api, err := client.NewAPI(url, c.pin)
	if err != nil {
		t.Fatal(err)
	}
	defer api.CloseIdleConnections()
	keys, err := identity.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	_, err = api.Join(ctx, &identity.JoinRequest{JoinToken: tokenGitLab, Method: "gitlab", Proof: job["MBOT_ID_TOKEN"], TTLSeconds: 600,
		Outputs: []identity.OutputRequest{{Name: "identity", SSHPublicKey: keys.SSHPublicKey(), TLSPublicKey: keys.TLSPublicKeyPEM()}}})
	var refusal *identity.Error
	switch {
	case err == nil:
		return "", ""
	case errors.As(err, &refusal):
		return refusal.Code, refusal.Message
	}
	t.Fatalf("join through %s: %v", url, err)
	return "", ""
}

// change is one kind of change an admin makes, the refusal a join right
// after it must get, and the change back.
type change struct {
	name       string
	do, undo   []string
	refusal    identity.ErrorCode
	mentioning string
}

func lockChanges(t *testing.T, c *cluster) []change {
	dir := t.TempDir()
	original, other := filepath.Join(dir, "token.yaml"), filepath.Join(dir, "token-other.yaml")
	writeFile(t, original, fmt.Sprintf(gitlabTokenYAML, c.ci.URL, "acme/app"), 0o600)
	writeFile(t, other, fmt.Sprintf(gitlabTokenYAML, c.ci.URL, "acme/other"), 0o600)
	return []change{
		{"rm", []string{"rm", "join_token/" + tokenGitLab}, []string{"apply", "-f", original}, identity.CodeUnknownJoinToken, tokenGitLab},
		{"apply", []string{"apply", "-f", other}, []string{"apply", "-f", original}, identity.CodeRuleMismatch, tokenGitLab},
		{"lock bot", []string{"lock", "bot/" + botName, "--reason", "CI secret leaked"}, []string{"unlock", "bot/" + botName}, identity.CodeBotLocked, "CI secret leaked"},
		{"lock role", []string{"lock", "role/" + roleName, "--reason", "incident"}, []string{"unlock", "role/" + roleName}, identity.CodeRoleLocked, "mbot unlock role/" + roleName},
		{"lock join token", []string{"lock", "join_token/" + tokenGitLab}, []string{"unlock", "join_token/" + tokenGitLab}, identity.CodeJoinTokenLocked, "join_token/" + tokenGitLab},
		{"lock claim", []string{"lock", "--claim", "project_path=acme/app", "--reason", "repository compromised"}, []string{"unlock", "--claim", "project_path=acme/app"},
			identity.CodeClaimLocked, "mbot unlock --claim project_path=acme/app"},
	}
}

// runChangeRounds makes each change in turn through admin (its flags:
// --config or --auth of one process) and joins at once through joinURL:
// every join straight after a change that forbids it is refused, every
// join after the change back is admitted.
func runChangeRounds(t *testing.T, c *cluster, env []string, admin func(round int) []string, joinURL string) {
	changes := lockChanges(t, c)
	if code, msg := joinGitLab(t, c, joinURL); code != "" {
		t.Fatalf("the first join: %s: %s", code, msg)
	}
	admitted := 0
	for round := range lockRounds {
		ch := changes[round%len(changes)]
		mustMbot(t, env, append(ch.do, admin(round)...)...)
		if code, msg := joinGitLab(t, c, joinURL); code != ch.refusal || !strings.Contains(msg, ch.mentioning) {
			t.Fatalf("round %d: a join right after mbot %s returned: %q %s, want %s naming %q", round, strings.Join(ch.do, " "), code, msg, ch.refusal, ch.mentioning)
		}
		mustMbot(t, env, append(ch.undo, admin(round)...)...)
		if code, msg := joinGitLab(t, c, joinURL); code != "" {
			t.Fatalf("round %d: a join right after mbot %s returned: %s: %s, want admitted", round, strings.Join(ch.undo, " "), code, msg)
		}
		admitted++
	}
	t.Logf("%d changes, each refused the join made straight after it; %d joins admitted after the change back", lockRounds, admitted)
}

// TestChangesCountWhenCommandReturnsSQLite: on the embedded store, mbot rm,
// mbot apply and mbot lock on the authority host (--config, another
// process than the running authority) and through the admin API (--auth)
// count for the very next join, every time.
func TestChangesCountWhenCommandReturnsSQLite(t *testing.T) {
	c := startCluster(t)
	env := baseEnv(c.home)
	adminDir := filepath.Join(filepath.Dir(c.config), "data", "admin")
	runChangeRounds(t, c, env, func(round int) []string {
		if round%2 == 0 {
			return []string{"--config", c.config}
		}
		return []string{"--auth", adminDir}
	}, c.url)
}

// TestChangesCountWhenCommandReturnsPostgres: the same with two replicas
// on one PostgreSQL database, the change made through replica A (--config
// on its host, or its admin API) and the join sent to replica B.
func TestChangesCountWhenCommandReturnsPostgres(t *testing.T) {
	rs := startReplicas(t, 2)
	a, b := rs.replicas[0], rs.replicas[1]
	adminA := filepath.Join(filepath.Dir(a.config), "data", "admin")
	runChangeRounds(t, a.cluster, a.env, func(round int) []string {
		if round%2 == 0 {
			return []string{"--config", a.config}
		}
		return []string{"--auth", adminA}
	}, b.url)
}

// TestLocksExpireAndList: locks with --expires, through --config and
// --auth, on two PostgreSQL replicas: set through A, the lock refuses at B
// before the command returns, mbot get locks lists it on both (who, when,
// why, until when), and it stops by itself at its expiry; the lock and
// unlock are in the audit log.
func TestLocksExpireAndList(t *testing.T) {
	rs := startReplicas(t, 2)
	a, b := rs.replicas[0], rs.replicas[1]
	adminA := filepath.Join(filepath.Dir(a.config), "data", "admin")
	adminB := filepath.Join(filepath.Dir(b.config), "data", "admin")
	for _, via := range [][]string{{"--config", a.config}, {"--auth", adminA}} {
		res := mustMbot(t, a.env, append([]string{"lock", "bot/" + botName, "--reason", "runner stolen", "--expires", "3s"}, via...)...)
		if !strings.Contains(res.stdout, "locked bot/"+botName) || !strings.Contains(res.stdout, "kubeconfigs") || !strings.Contains(res.stdout, "JWT-SVIDs") {
			t.Errorf("mbot lock %v printed:\n%s", via, res)
		}
		until := time.Now().Add(3 * time.Second)
		if code, msg := joinGitLab(t, a.cluster, b.url); code != identity.CodeBotLocked || !strings.Contains(msg, "runner stolen") || !strings.Contains(msg, "until ") {
			t.Fatalf("a join through B right after a lock through A (%v): %s %s", via, code, msg)
		}
		var list []admin.Lock
		if err := json.Unmarshal([]byte(mustMbot(t, b.env, "get", "locks", "-o", "json", "--auth", adminB).stdout), &list); err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Name() != "bot/"+botName || list[0].Reason != "runner stolen" || list[0].Expires.IsZero() ||
			!strings.Contains(list[0].LockedBy, "admin") || list[0].Since.IsZero() {
			t.Errorf("mbot get locks through B: %+v", list)
		}
		if res := mustMbot(t, b.env, "get", "locks", "--config", b.config); !strings.Contains(res.stdout, "bot/"+botName) || !strings.Contains(res.stdout, "runner stolen") {
			t.Errorf("mbot get locks --config on B:\n%s", res)
		}
		time.Sleep(time.Until(until) + 100*time.Millisecond)
		if code, msg := joinGitLab(t, a.cluster, b.url); code != "" {
			t.Fatalf("a join after the lock expired: %s %s", code, msg)
		}
		if res := mustMbot(t, b.env, "get", "locks", "--auth", adminB); !strings.Contains(res.stdout, "no locks") {
			t.Errorf("mbot get locks after the expiry:\n%s", res)
		}
	}
	// Lifted before its expiry through the other replica's admin API.
	mustMbot(t, a.env, "lock", "--claim", "project_path=acme/app", "--expires", "1h", "--config", a.config)
	res := mustMbot(t, b.env, "unlock", "--claim", "project_path=acme/app", "--auth", adminB)
	if !strings.Contains(res.stdout, "unlocked claim/project_path=acme/app") {
		t.Errorf("mbot unlock --claim printed:\n%s", res)
	}
	if code, msg := joinGitLab(t, a.cluster, a.url); code != "" {
		t.Fatalf("a join through A right after an unlock through B: %s %s", code, msg)
	}
	if res := mbot(t, a.env, "unlock", "--claim", "project_path=acme/app", "--config", a.config); res.code != 1 || !strings.Contains(res.stderr, "is not locked") {
		t.Errorf("unlocking what is not locked: %s", res)
	}
	if res := mbot(t, a.env, "lock", "bot/no-such-bot", "--config", a.config); res.code != 1 || !strings.Contains(res.stderr, "no-such-bot") {
		t.Errorf("locking a bot that does not exist: %s", res)
	}
	events := map[string]int{}
	for _, ev := range append(rs.audit(t, "bot.lock"), rs.audit(t, "claim.lock")...) {
		events[ev.Event]++
	}
	for _, ev := range rs.audit(t, "claim.unlock") {
		events[ev.Event]++
	}
	if events["bot.lock"] != 2 || events["claim.lock"] != 1 || events["claim.unlock"] != 1 {
		t.Errorf("audit records of the locks: %v", events)
	}
}

// TestLockCertBySerial: mbot audit --serial finds the join that issued a
// certificate (the serial an sshd or database log shows), mbot lock
// cert/SERIAL refuses its renewal at once (cert_locked), and another
// runner of the same bot keeps renewing.
func TestLockCertBySerial(t *testing.T) {
	c := startCluster(t)
	env := baseEnv(c.home)
	name, secret := addToken(t, c)
	name2, secret2 := addToken(t, c)
	dir, dir2 := filepath.Join(t.TempDir(), "id"), filepath.Join(t.TempDir(), "id2")
	for _, j := range []struct{ name, secret, dir string }{{name, secret, dir}, {name2, secret2, dir2}} {
		if res := c.issue(t, tokenJobEnv(c, j.secret), j.name, j.dir); res.code != 0 {
			t.Fatalf("token join:\n%s", res)
		}
	}
	serial := tlsSerial(dir)
	if serial == "" {
		t.Fatal("identity.json names no TLS serial")
	}
	var events []struct {
		Event     string   `json:"event"`
		JoinToken string   `json:"join_token"`
		Serials   []string `json:"serials"`
	}
	if err := json.Unmarshal([]byte(mustMbot(t, env, "audit", "--serial", "tls:"+serial, "-o", "json", "--config", c.config).stdout), &events); err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Event != "join" || events[0].JoinToken != name {
		t.Fatalf("mbot audit --serial tls:%s = %+v, want the join with %s", serial, events, name)
	}
	res := mustMbot(t, env, "lock", "cert/tls:"+serial, "--reason", "key left on a laptop", "--config", c.config)
	if !strings.Contains(res.stdout, "locked cert/tls:"+serial) {
		t.Errorf("mbot lock cert/ printed:\n%s", res)
	}
	if err := renewWith(t, c, dir); err == nil || !strings.Contains(err.Error(), "cert_locked") || !strings.Contains(err.Error(), "key left on a laptop") {
		t.Errorf("renewing the locked certificate: %v, want cert_locked with the reason", err)
	}
	if err := renewWith(t, c, dir2); err != nil {
		t.Errorf("renewing another runner of the bot: %v", err)
	}
	mustMbot(t, env, "unlock", "cert/tls:"+serial, "--config", c.config)
	if err := renewWith(t, c, dir); err != nil {
		t.Errorf("renewing after mbot unlock cert/: %v", err)
	}
}
