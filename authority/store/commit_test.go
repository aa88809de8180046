package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// TestCloseFinishesPendingWrites queues writes behind the committer and
// closes at once: Close must return only after every queued write has been
// committed and answered.
func TestCloseFinishesPendingWrites(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	opened, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	st := opened.(*sqlStore)
	const n = 300
	pending := make([]*pendingWrite, n)
	for i := range pending {
		w := &pendingWrite{proofID: fmt.Sprintf("jti-%d", i),
			expires: time.Now().Add(time.Hour), event: &AuditEvent{Event: "join", Allowed: true, Bot: "deployer", Time: time.Now()},
			result: make(chan error, 1)}
		pending[i] = w
		st.writes <- w
	}
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i, w := range pending {
		select {
		case err := <-w.result:
			if err != nil {
				t.Errorf("write %d: %v", i, err)
			}
		default:
			t.Fatalf("Close returned before write %d was answered", i)
		}
	}
	reopened, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	got, err := reopened.ListAudit(ctx, AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Errorf("after Close the audit has %d records, want the %d queued", len(got), n)
	}
}

// TestCommitBatch checks that a batch with a replay inside it fails only
// that write, and a proof used twice in one batch is admitted once.
func TestCommitBatch(t *testing.T) {
	ctx := context.Background()
	opened, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	st := opened.(*sqlStore)
	exp := time.Now().Add(time.Hour)
	mk := func(id string) *pendingWrite {
		return &pendingWrite{proofID: id, expires: exp, event: &AuditEvent{Event: "join", Allowed: true, Bot: id, Time: time.Now()},
			result: make(chan error, 1)}
	}
	batch := []*pendingWrite{mk("a"), mk("b"), mk("a"), {event: &AuditEvent{Event: "join", Bot: "refusal", Time: time.Now()}, result: make(chan error, 1)}, mk("c")}
	st.commitBatch(batch)
	want := []error{nil, nil, ErrReplay, nil, nil}
	for i, w := range batch {
		if err := <-w.result; err != want[i] {
			t.Errorf("write %d (%q): %v, want %v", i, w.proofID, err, want[i])
		}
	}
	got, err := st.ListAudit(ctx, AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var bots []string
	for _, ev := range got {
		bots = append(bots, ev.Bot)
	}
	if len(bots) != 4 || bots[0] != "c" || bots[1] != "refusal" || bots[2] != "b" || bots[3] != "a" {
		t.Errorf("audit holds %v, want [c refusal b a]", bots)
	}
}

// TestSQLiteStatementJournalInMemory: a join's audit insert fires the
// index trigger, so SQLite keeps a statement journal for it; in a file
// that was a write(2) per page the trigger touched, about a third of the
// committer's CPU (BenchmarkRecordJoinAudit). Every connection keeps it
// in memory.
func TestSQLiteStatementJournalInMemory(t *testing.T) {
	opened, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	st := opened.(*sqlStore)
	defer st.Close()
	for name, db := range map[string]interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}{"write": st.write, "read": st.read} {
		var mode int
		if err := db.QueryRowContext(context.Background(), `PRAGMA temp_store`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if mode != 2 {
			t.Errorf("%s connection: temp_store = %d, want 2 (MEMORY)", name, mode)
		}
	}
}

// TestSQLitePruneTermsByKey: pruning finds each term of a pruned record by
// audit_terms' primary key; a scan of audit_terms would read every term of
// the log every ten minutes.
func TestSQLitePruneTermsByKey(t *testing.T) {
	opened, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	st := opened.(*sqlStore)
	defer st.Close()
	plan := queryPlan(t, st.write, sqlitePruneTerms(), 1)
	if len(plan) == 0 || plan[0] != "SEARCH audit_terms USING PRIMARY KEY (term=? AND audit_id=?)" {
		t.Errorf("pruning the terms: plan %q, want audit_terms searched by its primary key first", plan)
	}
}
