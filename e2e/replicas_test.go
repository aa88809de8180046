//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/simci"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// authorityPostgresYAML is authority.yaml of a replica: the DSN comes from
// MBOT_STORAGE_DSN, as a deployment keeps the password out of the file, and
// the CA key-encryption key from MBOT_CA_KEK (replicaSet.kek).
const authorityPostgresYAML = authorityYAML + `storage: {type: postgres}
`

// replicaSet is several `mbot authority start` replicas sharing one
// PostgreSQL database, each with its own port, data_dir and config, as
// behind a load balancer.
type replicaSet struct {
	pg  *testservers.Postgres
	dsn string
	// kek seals the CA keys in the database, as PostgreSQL storage requires.
	kek      string
	replicas []*replica
}

// replica is one replica: a cluster (its own URL, the shared pin) and its
// process, which a test may kill and start again.
type replica struct {
	*cluster
	addr string
	// metricsAddr serves /metrics, /healthz and /readyz (metrics_listen).
	metricsAddr string
	env         []string
	auth        *proc
}

// startReplicas starts PostgreSQL and n replicas on one database, all at
// once (their schema migrations and first CA creation race), with the
// default resources.
func startReplicas(t *testing.T, n int) *replicaSet {
	t.Helper()
	rs := &replicaSet{pg: testservers.StartPostgresForStore(t)}
	rs.dsn = rs.pg.CreateDatabase(t, "mbot")
	rs.kek = testservers.NewKEK(t)
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	ci, err := simci.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ci.Close() })
	home := t.TempDir()
	for range n {
		dir := t.TempDir()
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		c := &cluster{ci: ci, config: filepath.Join(dir, "authority.yaml"), url: "https://" + addr, login: u.Username, home: home}
		metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		writeFile(t, c.config, fmt.Sprintf(authorityPostgresYAML, clusterName, addr, filepath.Join(dir, "data"))+"metrics_listen: "+metricsAddr+"\n", 0o600)
		writeFile(t, filepath.Join(dir, "bots.yaml"), defaultResources(c), 0o600)
		r := &replica{cluster: c, addr: addr, metricsAddr: metricsAddr, env: append(baseEnv(home), "MBOT_STORAGE_DSN="+rs.dsn, "MBOT_CA_KEK="+rs.kek)}
		rs.replicas = append(rs.replicas, r)
	}
	for _, r := range rs.replicas {
		r.start(t)
	}
	for _, r := range rs.replicas {
		waitForPort(t, r.addr, r.auth.exited, r.auth.logs)
	}
	pin := strings.TrimSpace(mustMbot(t, rs.replicas[0].env, "authority", "export", "--type", "ca-pin", "--config", rs.replicas[0].config).stdout)
	for i, r := range rs.replicas {
		// Every replica must sign with the same CAs: the first start of
		// each raced to create them.
		if got := strings.TrimSpace(mustMbot(t, r.env, "authority", "export", "--type", "ca-pin", "--config", r.config).stdout); got != pin {
			t.Fatalf("replica %d has CA pin %s, replica 0 %s: the replicas created different CAs", i, got, pin)
		}
		r.pin = pin
	}
	return rs
}

// start starts the replica's authority process.
func (r *replica) start(t *testing.T) {
	t.Helper()
	r.auth = startProc(t, r.env, mbotBin, "authority", "start", "--config", r.config)
}

// audit reads the shared audit log of event, oldest first, through the store.
func (rs *replicaSet) audit(t *testing.T, event string) []store.AuditEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	st, err := store.OpenPostgres(ctx, rs.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	all, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var out []store.AuditEvent
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].Event == event {
			out = append(out, all[i])
		}
	}
	return out
}

// TestReplicasAdmitAProofOnce posts the same GitLab ID token to two
// replicas at the same instant, several times: each time exactly one
// admits it and the other refuses it proof_replayed, and the audit log
// holds one admitted join per token.
func TestReplicasAdmitAProofOnce(t *testing.T) {
	rs := startReplicas(t, 2)
	const rounds = 5
	for round := range rounds {
		job, err := rs.replicas[0].ci.GitLabEnv(clusterName)
		if err != nil {
			t.Fatal(err)
		}
		results := make([]result, len(rs.replicas))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, r := range rs.replicas {
			env := r.jobEnv(job)
			out := filepath.Join(t.TempDir(), "id")
			wg.Go(func() {
				<-start
				results[i] = r.issue(t, env, tokenGitLab, out)
			})
		}
		close(start)
		wg.Wait()
		admitted, replayed := 0, 0
		for _, res := range results {
			switch {
			case res.code == 0:
				admitted++
			case strings.Contains(res.stderr, "proof_replayed"):
				replayed++
			default:
				t.Errorf("round %d: mbot issue neither joined nor was refused proof_replayed:\n%s", round, res)
			}
		}
		if admitted != 1 || replayed != 1 {
			t.Errorf("round %d: %d replicas admitted the token and %d refused it as replayed, want one of each:\n%s\n%s",
				round, admitted, replayed, results[0], results[1])
		}
	}
	joins, refusals := 0, 0
	for _, ev := range rs.audit(t, "join") {
		switch {
		case ev.Allowed:
			joins++
		case ev.Code == "proof_replayed":
			refusals++
		}
	}
	if joins != rounds || refusals != rounds {
		t.Errorf("the audit log holds %d admitted joins and %d proof_replayed refusals, want %d of each", joins, refusals, rounds)
	}
}

// TestReplicasShareChanges makes changes through one replica and sees them
// take effect on the other without restarting it: a join token added at
// run time, a join token removed, an admin locked, and a bot instance
// locked by a stale renewal on one replica refusing that instance's
// renewals (only) on the other, then unlocked.
func TestReplicasShareChanges(t *testing.T) {
	rs := startReplicas(t, 2)
	a, b := rs.replicas[0], rs.replicas[1]

	t.Run("apply", func(t *testing.T) {
		name, secret := addTokenEnv(t, a, "--name", "added-on-a")
		dir := filepath.Join(t.TempDir(), "id")
		if res := b.issue(t, tokenJobEnv(b.cluster, secret), name, dir); res.code != 0 {
			t.Fatalf("a join token added through replica A does not join through replica B:\n%s", res)
		}
		mustMbot(t, a.env, "rm", "join_token/"+name, "--config", a.config)
		_, secret2 := addTokenEnv(t, a, "--name", "removed-on-a")
		mustMbot(t, a.env, "rm", "join_token/removed-on-a", "--config", a.config)
		waitForRefusal(t, "replica B to refuse a join token removed through replica A", func() string {
			return b.issue(t, tokenJobEnv(b.cluster, secret2), "removed-on-a", filepath.Join(t.TempDir(), "id")).stderr
		}, "unknown_join_token")
	})

	t.Run("remote apply and admin lock", func(t *testing.T) {
		adminA := filepath.Join(filepath.Dir(a.config), "data", "admin")
		adminB := filepath.Join(filepath.Dir(b.config), "data", "admin")
		rolePath := filepath.Join(t.TempDir(), "role.yaml")
		writeFile(t, rolePath, "kind: role\nversion: v1\nmetadata: {name: made-on-a}\nspec: {logins: [nobody]}\n", 0o600)
		mustMbot(t, a.env, "apply", "--auth", adminA, "-f", rolePath)
		if res := mustMbot(t, b.env, "get", "roles", "--auth", adminB); !strings.Contains(res.stdout, "made-on-a") {
			t.Errorf("a role applied through replica A's admin API is not listed by replica B:\n%s", res)
		}
		mustMbot(t, a.env, "lock", "--admin", "admin", "--reason", "laptop lost", "--config", a.config)
		waitForRefusal(t, "replica B to refuse an admin locked on host A", func() string {
			return mbot(t, b.env, "get", "bots", "--auth", adminB).stderr
		}, "admin_locked")
		mustMbot(t, a.env, "unlock", "--admin", "admin", "--config", a.config)
		start := time.Now()
		for mbot(t, b.env, "get", "bots", "--auth", adminB).code != 0 {
			if time.Since(start) > 10*time.Second {
				t.Fatal("replica B still refuses the admin unlocked on host A")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("lock", func(t *testing.T) {
		_, secret1 := addTokenEnv(t, a, "--name", "runner-1")
		_, secret2 := addTokenEnv(t, a, "--name", "runner-2")
		dir1, dir2 := filepath.Join(t.TempDir(), "id1"), filepath.Join(t.TempDir(), "id2")
		for _, j := range []struct{ name, secret, dir string }{{"runner-1", secret1, dir1}, {"runner-2", secret2, dir2}} {
			if res := a.issue(t, tokenJobEnv(a.cluster, j.secret), j.name, j.dir); res.code != 0 {
				t.Fatalf("token join %s:\n%s", j.name, res)
			}
		}
		stale := copyIdentity(t, dir1)
		// The first renewal of runner-1's generation 1 goes through A; the
		// copy of that generation then shows up at B, which locks runner-1's
		// instance (not the bot).
		if err := renewWith(t, a.cluster, dir1); err != nil {
			t.Fatalf("renewing runner-1 through replica A: %v", err)
		}
		if err := renewWith(t, b.cluster, stale); err == nil || !strings.Contains(err.Error(), "instance_locked") {
			t.Fatalf("a stale generation presented to replica B: %v, want instance_locked", err)
		}
		// runner-1's original is refused on A by the lock taken on B.
		waitForRefusal(t, "replica A to refuse renewals of the instance locked on replica B", func() string {
			err := renewWith(t, a.cluster, dir1)
			if err == nil {
				return ""
			}
			return err.Error()
		}, "instance_locked")
		// runner-2 is another instance of the same bot: it keeps renewing,
		// through the replica that took the lock too.
		if err := renewWith(t, b.cluster, dir2); err != nil {
			t.Errorf("renewing runner-2, another instance of the bot, through replica B: %v", err)
		}
		var list []admin.BotInstance
		if err := json.Unmarshal([]byte(mustMbot(t, a.env, "get", "bot_instances", "--config", a.config, "-o", "json").stdout), &list); err != nil {
			t.Fatal(err)
		}
		var locked []string
		for _, in := range list {
			if in.State == "locked" {
				locked = append(locked, in.ID)
			}
		}
		if len(locked) != 1 {
			t.Fatalf("bot instances listed through host A: %+v; want one locked", list)
		}
		// Unlocking the instance through A ends its chain on B too.
		mustMbot(t, a.env, "unlock", "--config", a.config, "bot_instance/"+locked[0])
		waitForRefusal(t, "replica B to refuse renewals of the instance unlocked on host A", func() string {
			err := renewWith(t, b.cluster, dir1)
			if err == nil {
				return ""
			}
			return err.Error()
		}, "renewal_refused")
	})
}

// addTokenEnv is addToken for a replica (its environment holds the DSN).
func addTokenEnv(t *testing.T, r *replica, args ...string) (name, secret string) {
	t.Helper()
	res := mustMbot(t, r.env, append([]string{"tokens", "add", "--bot", botName, "--config", r.config}, args...)...)
	for _, line := range strings.Split(res.stdout, "\n") {
		if v, ok := strings.CutPrefix(line, "MBOT_TOKEN="); ok {
			name = v
		}
		if v, ok := strings.CutPrefix(line, "MBOT_JOIN_SECRET="); ok {
			secret = v
		}
	}
	if name == "" || secret == "" {
		t.Fatalf("mbot tokens add printed no token and secret:\n%s", res)
	}
	return name, secret
}

// waitForRefusal calls try until what it returns holds code. A change made
// through one replica reaches the others by LISTEN/NOTIFY within
// milliseconds; the bound is generous for a loaded CI machine, and how long
// it took is logged.
func waitForRefusal(t *testing.T, what string, try func() string, code string) {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < 10*time.Second {
		if last = try(); strings.Contains(last, code) {
			t.Logf("%s took %s", what, time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: still %q, want %s", what, last, code)
}

// TestIssueWhileStoreDown stops PostgreSQL under a running replica: mbot
// issue is refused store_unavailable with Retry-After, retries within its
// --timeout, then fails saying the authority's store is down and writes
// nothing. When PostgreSQL starts again the same replica serves again.
func TestIssueWhileStoreDown(t *testing.T) {
	rs := startReplicas(t, 1)
	r := rs.replicas[0]
	rs.pg.Stop(t)

	job, err := r.ci.GitLabEnv(clusterName)
	if err != nil {
		t.Fatal(err)
	}
	_, err = joinOnce(r, job["MBOT_ID_TOKEN"], 3*time.Second)
	var refusal *identity.Error
	if !errors.As(err, &refusal) || refusal.Code != identity.CodeStoreUnavailable || refusal.RetryAfter <= 0 {
		t.Errorf("a join with PostgreSQL down: %v, want store_unavailable with Retry-After", err)
	}
	parent := t.TempDir()
	out := filepath.Join(parent, "id")
	res := r.issue(t, r.jobEnv(job), tokenGitLab, out, "--timeout", "6s")
	if res.code == 0 || !strings.Contains(res.stderr, "store_unavailable") || !strings.Contains(res.stderr, "the authority's store is down") {
		t.Errorf("mbot issue with PostgreSQL down should fail saying the authority's store is down:\n%s", res)
	}
	wantEmpty(t, parent)
	r.auth.running(t)
	// A load balancer checking /readyz drains the replica meanwhile, and
	// the refusals are counted under their code.
	if code := r.readyz(t); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with PostgreSQL down: %d, want 503", code)
	}
	if metrics := r.metrics(t); !strings.Contains(metrics, `code="store_unavailable"`) {
		t.Errorf("/metrics counts no store_unavailable refusal:\n%s", metrics)
	}

	rs.pg.Start(t)
	if res := r.issue(t, r.jobEnv(job), tokenGitLab, out); res.code != 0 {
		t.Fatalf("mbot issue once PostgreSQL is back (same replica, same proof, which was never recorded):\n%s", res)
	}
	if code := r.readyz(t); code != http.StatusOK {
		t.Errorf("/readyz once PostgreSQL is back: %d, want 200", code)
	}
}

// readyz is the status of the replica's /readyz.
func (r *replica) readyz(t *testing.T) int {
	t.Helper()
	resp, err := http.Get("http://" + r.metricsAddr + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// metrics is the replica's /metrics page.
func (r *replica) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + r.metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
