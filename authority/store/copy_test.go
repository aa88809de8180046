//go:build linux

package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// TestCopySQLiteToPostgres fills a SQLite store with one of everything it
// holds, copies it into an empty PostgreSQL database, and checks that the
// copy behaves as the original: the CA and resources read back, a used
// proof is a replay, renewal generations continue, locks and ended chains
// hold, the audit log is the same and grows after its copied ids. A second
// copy into the same database is refused.
func TestCopySQLiteToPostgres(t *testing.T) {
	pg := testservers.StartPostgresForStore(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	src, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	mustDo := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = src.CreateCA(ctx, "acme-tls", []byte("-----BEGIN CERTIFICATE-----\n"))
	mustDo(err)
	mustDo(src.PutResources(ctx, []store.StoredResource{{Kind: "bot", Name: "deployer", Body: []byte("kind: bot\n")},
		{Kind: "bot", Name: "copied", Body: []byte("kind: bot\n")}}))
	mustDo(src.RecordJoin(ctx, "jti-used", time.Now().Add(time.Hour), joinEvent("deployer")))
	mustDo(src.Audit(ctx, &store.AuditEvent{Event: "join", Allowed: false, Code: "rule_mismatch", Bot: "deployer"}))
	mustDo(src.StartChain(ctx, "deployer", "tok", "chain-1", "192.0.2.1:4000"))
	mustDo(src.AdvanceGeneration(ctx, store.Renewal{Bot: "deployer", JoinToken: "tok", Chain: "chain-1", Generation: 1, Keys: "k1"}))
	mustDo(src.StartChain(ctx, "copied", "tok", "chain-2", "192.0.2.1:4000"))
	var mismatch *store.GenerationMismatch
	if err := src.AdvanceGeneration(ctx, store.Renewal{Bot: "copied", JoinToken: "tok", Chain: "chain-2", Generation: 7, Keys: "k"}); !errors.As(err, &mismatch) {
		t.Fatalf("stale generation: %v", err)
	}
	mustDo(src.StartChain(ctx, "deployer", "other", "chain-3", "192.0.2.1:4000"))
	mustDo(src.AdvanceKeypair(ctx, store.KeypairJoin{JoinToken: "kp", Binding: "key:a", PublicKey: "a", NewPublicKey: "a", Keys: "k0"}))
	mustDo(src.RecordLeafTunnel(ctx, "leaf", store.LeafTunnel{Connected: true, LastSeen: time.Now()}))
	mustDo(src.StartCARotation(ctx, store.CARotation{CA: "acme-tls", Phase: "init", Grace: time.Hour, Started: time.Now(), Updated: time.Now()}, []byte("next")))
	mustDo(src.AddLock(ctx, &store.Lock{Kind: "admin", Target: "alice", Time: time.Now().UTC().Truncate(time.Microsecond), Reason: "laptop lost", LockedBy: "root"}))
	mustDo(src.AddLock(ctx, &store.Lock{Kind: "claim", Target: "repository=acme/app", Time: time.Now(), Expires: time.Now().Add(time.Hour), Reason: "leaked", LockedBy: "root"}))
	wantAudit, err := src.ListAudit(ctx, store.AuditFilter{})
	mustDo(err)
	mustDo(src.Close())

	dsn := pg.CreateDatabase(t, "copied")
	report, err := store.CopySQLiteToPostgres(ctx, dir, dsn, nil)
	if err != nil {
		t.Fatalf("CopySQLiteToPostgres: %v", err)
	}
	if report.Rows["audit"] != int64(len(wantAudit)) || report.Rows["resources"] != 2 || report.Rows["cas"] != 2 {
		t.Errorf("report %v", report.Rows)
	}

	dst, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if pem, err := dst.CA(ctx, "acme-tls"); err != nil || !strings.HasPrefix(string(pem), "-----BEGIN CERTIFICATE") {
		t.Errorf("CA after the copy = %q, %v", pem, err)
	}
	if rs, err := dst.Resources(ctx); err != nil || len(rs) != 2 || string(rs[0].Body) != "kind: bot\n" {
		t.Errorf("resources after the copy = %v, %v", rs, err)
	}
	if err := dst.RecordJoin(ctx, "jti-used", time.Now().Add(time.Hour), joinEvent("deployer")); !errors.Is(err, store.ErrReplay) {
		t.Errorf("a proof used before the copy: %v, want ErrReplay", err)
	}
	gotAudit, err := dst.ListAudit(ctx, store.AuditFilter{})
	mustDo(err)
	if !reflect.DeepEqual(gotAudit, wantAudit) {
		t.Errorf("audit after the copy:\n%+v\nwant\n%+v", gotAudit, wantAudit)
	}
	mustDo(dst.Audit(ctx, &store.AuditEvent{Event: "resource.apply", Allowed: true}))
	if after, err := dst.ListAudit(ctx, store.AuditFilter{Limit: 1}); err != nil || after[0].ID <= wantAudit[0].ID {
		t.Errorf("a record after the copy has id %v (%v), want after the copied %d", after, err, wantAudit[0].ID)
	}
	if err := dst.AdvanceGeneration(ctx, store.Renewal{Bot: "deployer", JoinToken: "tok", Chain: "chain-1", Generation: 2, Keys: "k2"}); err != nil {
		t.Errorf("renewing generation 2 after the copy: %v", err)
	}
	if locks, err := dst.InstanceLocks(ctx); err != nil || locks["chain-2"] == nil || locks["chain-2"].JoinToken != "tok" ||
		locks["chain-2"].Runner != "192.0.2.1:4000" {
		t.Errorf("instance locks after the copy = %+v, %v", locks, err)
	}
	if b, err := dst.KeypairBinding(ctx, "kp"); err != nil || b == nil || b.Sequence != 1 || b.PublicKey != "a" {
		t.Errorf("keypair binding after the copy = %+v, %v", b, err)
	}
	if tunnels, err := dst.LeafTunnels(ctx); err != nil || !tunnels["leaf"].Connected {
		t.Errorf("leaf tunnels after the copy = %+v, %v", tunnels, err)
	}
	if rots, err := dst.CARotations(ctx); err != nil || len(rots) != 1 || rots[0].Phase != "init" {
		t.Errorf("CA rotations after the copy = %+v, %v", rots, err)
	}
	if st, err := dst.LockState(ctx); err != nil || len(st.Locks) != 2 || st.Locks[0].Target != "alice" || st.Locks[0].Reason != "laptop lost" ||
		st.Locks[1].Target != "repository=acme/app" || st.Locks[1].Expires.IsZero() {
		t.Errorf("locks after the copy = %+v, %v", st, err)
	}
	u, err := dst.UnlockBot(ctx, "copied")
	if err != nil || len(u.JoinTokens) != 1 {
		t.Fatalf("UnlockBot after the copy = %+v, %v", u, err)
	}
	if err := dst.AdvanceGeneration(ctx, store.Renewal{Bot: "copied", JoinToken: "tok", Chain: "chain-2", Generation: 1, Keys: "k"}); !errors.Is(err, store.ErrUnlockedChain) {
		t.Errorf("renewal of a chain ended by unlock: %v, want ErrUnlockedChain", err)
	}

	if _, err := store.CopySQLiteToPostgres(ctx, dir, dsn, nil); err == nil || !strings.Contains(err.Error(), "already holds an authority") {
		t.Errorf("a second copy into the same database: %v, want a refusal", err)
	}
}
