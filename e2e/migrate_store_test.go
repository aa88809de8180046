//go:build linux

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// TestMigrateStore moves a SQLite authority that has served joins into
// PostgreSQL with mbot authority migrate-store, and starts it on
// PostgreSQL: the CA pin is the same, a proof used before the move is still
// a replay, a token-joined identity keeps renewing, and the audit log holds
// the joins made before the move.
func TestMigrateStore(t *testing.T) {
	dc := startDaemonCluster(t)
	c := dc.cluster
	job, err := c.ci.GitLabEnv(clusterName)
	if err != nil {
		t.Fatal(err)
	}
	if res := c.issue(t, c.jobEnv(job), tokenGitLab, filepath.Join(t.TempDir(), "id")); res.code != 0 {
		t.Fatalf("join before the move:\n%s", res)
	}
	name, secret := addToken(t, c, "--name", "runner-moved")
	tokenDir := filepath.Join(t.TempDir(), "token-id")
	if res := c.issue(t, tokenJobEnv(c, secret), name, tokenDir); res.code != 0 {
		t.Fatalf("token join before the move:\n%s", res)
	}
	pinBefore := c.pin
	if code := dc.auth.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("the authority exited %d on SIGTERM", code)
	}

	pg := testservers.StartPostgresForStore(t)
	dsn := pg.CreateDatabase(t, "moved")
	// Without a key-encryption key it refuses and copies nothing: the keys
	// would sit in the clear in PostgreSQL.
	noKEK := append(baseEnv(c.home), "MBOT_STORAGE_DSN="+dsn)
	if res := mbot(t, noKEK, "authority", "migrate-store", "--config", c.config); res.code == 0 ||
		!strings.Contains(res.stderr, "ca_key_encryption") || !strings.Contains(res.stderr, "MBOT_CA_KEK") || !strings.Contains(res.stderr, "mbot authority gen-kek") {
		t.Errorf("migrate-store without a key-encryption key: want a refusal naming ca_key_encryption, MBOT_CA_KEK and gen-kek:\n%s", res)
	}
	env := append(noKEK, "MBOT_CA_KEK="+testservers.NewKEK(t))
	res := mustMbot(t, env, "authority", "migrate-store", "--config", c.config)
	if !strings.Contains(res.stderr, "copied") || !strings.Contains(res.stderr, "sealed") || !strings.Contains(res.stderr, "storage: {type: postgres}") {
		t.Errorf("migrate-store does not say what it copied, that it sealed the keys, and what to do next:\n%s", res)
	}
	// Every CA row in PostgreSQL is sealed, and none holds a key in the clear.
	func() {
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		st, err := store.OpenPostgres(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		rows, err := st.ListCAs(ctx)
		if err != nil || len(rows) < 8 {
			t.Fatalf("CA rows in PostgreSQL: %d, %v; want the 8 CAs", len(rows), err)
		}
		for name, material := range rows {
			if !strings.Contains(string(material), "BEGIN MBOT SEALED PRIVATE KEY") || strings.Contains(string(material), "BEGIN PRIVATE KEY") {
				t.Errorf("the %s CA was copied with its key in the clear", name)
			}
		}
	}()
	if strings.Contains(res.stdout+res.stderr, dsn) {
		t.Errorf("migrate-store printed the DSN:\n%s", res)
	}
	if res := mbot(t, env, "authority", "migrate-store", "--config", c.config); res.code == 0 || !strings.Contains(res.stderr, "already holds an authority") {
		t.Errorf("a second migrate-store into the same database should be refused:\n%s", res)
	}

	config, err := os.ReadFile(c.config)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, c.config, string(config)+"storage: {type: postgres}\n", 0o600)
	dc.auth = startProc(t, env, mbotBin, "authority", "start", "--config", c.config)
	waitForPort(t, dc.addr, dc.auth.exited, dc.auth.logs)

	if pin := strings.TrimSpace(mustMbot(t, env, "authority", "export", "--type", "ca-pin", "--config", c.config).stdout); pin != pinBefore {
		t.Fatalf("CA pin on PostgreSQL %s, was %s on SQLite: clients would stop trusting the authority", pin, pinBefore)
	}
	wantRefused(t, c, c.jobEnv(job), tokenGitLab, "proof_replayed")
	if err := renewWith(t, c, tokenDir); err != nil {
		t.Errorf("renewing an identity joined before the move: %v", err)
	}
	job2, err := c.ci.GitLabEnv(clusterName)
	if err != nil {
		t.Fatal(err)
	}
	if res := c.issue(t, c.jobEnv(job2), tokenGitLab, filepath.Join(t.TempDir(), "id")); res.code != 0 {
		t.Fatalf("join after the move:\n%s", res)
	}

	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	st, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	events, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	joins := 0
	for _, ev := range events {
		if ev.Event == "join" && ev.Allowed {
			joins++
		}
	}
	if joins != 3 {
		t.Errorf("the audit log on PostgreSQL holds %d admitted joins, want the 2 before the move and the 1 after", joins)
	}
}
