package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

func open(t *testing.T) (store.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	st, err := store.OpenSQLite(context.Background(), dir)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st, dir
}

func joinEvent(bot string) *store.AuditEvent {
	return &store.AuditEvent{Event: "join", Allowed: true, Bot: bot, JoinToken: "github-deploy", Method: "github",
		Claims: map[string]string{"repository": "acme/app", "ref": "refs/heads/main"}}
}

func TestOpenSQLiteModes(t *testing.T) {
	_, dir := open(t)
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "mbot.db"): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s has mode %o, want %o", path, st.Mode().Perm(), want)
		}
	}
}

// TestOpenSQLiteInSharedDir opens a data_dir that others may read: the
// database and SQLite's -wal and -shm files beside it (which hold the CA
// keys until a checkpoint) must still be readable by the owner only.
func TestOpenSQLiteInSharedDir(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.CreateCA(ctx, "tls", []byte("-----BEGIN PRIVATE KEY-----")); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 2 {
		t.Fatalf("%s holds %d files; want the database and its WAL", dir, len(entries))
	}
	for _, e := range entries {
		st, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %o, want 0600", e.Name(), st.Mode().Perm())
		}
	}
}

func testReopenKeepsState(t *testing.T, db *testDB) {
	ctx := context.Background()
	st := db.open(t)
	if _, err := st.CreateCA(ctx, "tls", []byte("tls CA")); err != nil {
		t.Fatal(err)
	}
	if err := st.RecordJoin(ctx, "jti-1", time.Now().Add(time.Hour), joinEvent("deployer")); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	st = db.open(t)
	defer st.Close()
	if pem, err := st.CA(ctx, "tls"); err != nil || string(pem) != "tls CA" {
		t.Errorf("CA after reopening = %q, %v", pem, err)
	}
	if err := st.RecordJoin(ctx, "jti-1", time.Now().Add(time.Hour), joinEvent("deployer")); !errors.Is(err, store.ErrReplay) {
		t.Errorf("replay after reopening: %v, want ErrReplay", err)
	}
}

func testCreateCA(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	if _, err := st.CA(ctx, "ssh-user"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CA of an empty store: %v, want ErrNotFound", err)
	}
	first, err := st.CreateCA(ctx, "ssh-user", []byte("first"))
	if err != nil || string(first) != "first" {
		t.Fatalf("CreateCA = %q, %v; want first", first, err)
	}
	// A second start (or a concurrent one) must agree on the first CA.
	second, err := st.CreateCA(ctx, "ssh-user", []byte("second"))
	if err != nil || string(second) != "first" {
		t.Errorf("second CreateCA = %q, %v; want the stored first", second, err)
	}
	if got, err := st.CA(ctx, "ssh-user"); err != nil || string(got) != "first" {
		t.Errorf("CA = %q, %v; want first", got, err)
	}
	if got, err := st.CreateCA(ctx, "ssh-host", []byte("host")); err != nil || string(got) != "host" {
		t.Errorf("CreateCA of another name = %q, %v; want host", got, err)
	}
}

func testResources(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	if got, err := st.Resources(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Resources of an empty store = %v, %v", got, err)
	}
	for _, r := range []store.StoredResource{
		{Kind: "role", Name: "deploy", Body: []byte("v1")},
		{Kind: "bot", Name: "deployer", Body: []byte("bot")},
		{Kind: "role", Name: "audit-read", Body: []byte("audit")},
		{Kind: "role", Name: "deploy", Body: []byte("v2")}, // replaces v1
	} {
		if err := st.PutResources(ctx, []store.StoredResource{r}); err != nil {
			t.Fatalf("PutResource %s/%s: %v", r.Kind, r.Name, err)
		}
	}
	want := []store.StoredResource{
		{Kind: "bot", Name: "deployer", Body: []byte("bot")},
		{Kind: "role", Name: "audit-read", Body: []byte("audit")},
		{Kind: "role", Name: "deploy", Body: []byte("v2")},
	}
	if got, err := st.Resources(ctx); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Resources = %q, %v; want %q", got, err, want)
	}
	if err := st.DeleteResource(ctx, "role", "deploy"); err != nil {
		t.Fatalf("DeleteResource: %v", err)
	}
	if got, err := st.Resources(ctx); err != nil || !reflect.DeepEqual(got, want[:2]) {
		t.Errorf("Resources after delete = %q, %v; want %q", got, err, want[:2])
	}
	for _, kn := range [][2]string{{"role", "deploy"}, {"role", "missing"}, {"bot", "audit-read"}} {
		if err := st.DeleteResource(ctx, kn[0], kn[1]); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeleteResource(%s/%s): %v, want ErrNotFound", kn[0], kn[1], err)
		}
	}
}

func testRecordJoin(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	ev := joinEvent("deployer")
	if err := st.RecordJoin(ctx, "jti-1", exp, ev); err != nil {
		t.Fatalf("RecordJoin: %v", err)
	}
	if n := db.rows(t, "audit"); n != 1 {
		t.Fatalf("audit has %d rows after one join, want 1", n)
	}
	if err := st.RecordJoin(ctx, "jti-1", exp, joinEvent("deployer")); !errors.Is(err, store.ErrReplay) {
		t.Errorf("second RecordJoin of jti-1: %v, want ErrReplay", err)
	}
	if n := db.rows(t, "audit"); n != 1 {
		t.Errorf("audit has %d rows after a replay, want 1 (the caller records the refusal)", n)
	}
	got, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil || len(got) != 1 {
		t.Fatalf("ListAudit = %v, %v", got, err)
	}
	if got[0].Bot != "deployer" || !got[0].Allowed || got[0].Claims["repository"] != "acme/app" ||
		got[0].ID == 0 || !got[0].Time.Equal(ev.Time) || ev.Time.IsZero() {
		t.Errorf("audit record = %+v, want the join as recorded at %v", got[0], ev.Time)
	}
}

// TestRecordJoinConcurrent has many joins share group commits: each proof
// must be admitted exactly once however the joins are batched.
func testRecordJoinConcurrent(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	const ids = 100
	exp := time.Now().Add(time.Hour)
	errs := make([][2]error, ids)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range ids {
		for j := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i][j] = st.RecordJoin(ctx, fmt.Sprintf("jti-%03d", i), exp, joinEvent(fmt.Sprintf("bot-%d-%d", i, j)))
			}()
		}
	}
	close(start)
	wg.Wait()
	var ok, replays int
	for i, pair := range errs {
		var okHere int
		for _, err := range pair {
			switch {
			case err == nil:
				ok++
				okHere++
			case errors.Is(err, store.ErrReplay):
				replays++
			default:
				t.Errorf("RecordJoin jti-%03d: %v", i, err)
			}
		}
		if okHere != 1 {
			t.Errorf("jti-%03d was admitted %d times, want once", i, okHere)
		}
	}
	if ok != ids || replays != ids {
		t.Errorf("%d admitted and %d replays, want %d and %d", ok, replays, ids, ids)
	}
	if n := db.rows(t, "audit"); n != ids {
		t.Errorf("audit has %d rows, want %d (one per admitted join)", n, ids)
	}
}

func testListAudit(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	t0 := time.Date(2025, 6, 2, 10, 0, 0, 0, time.UTC)
	events := []store.AuditEvent{
		{Time: t0, Event: "join", Allowed: true, Bot: "deployer"},
		{Time: t0.Add(1 * time.Minute), Event: "join", Allowed: false, Bot: "deployer", Code: "rule_mismatch"},
		{Time: t0.Add(2 * time.Minute), Event: "join", Allowed: true, Bot: "auditor"},
		{Time: t0.Add(3 * time.Minute), Event: "join", Allowed: false, Bot: "", Code: "unknown_join_token"},
		{Time: t0.Add(4 * time.Minute), Event: "sign", Allowed: true, Bot: "deployer"},
	}
	for i := range events {
		if err := st.Audit(ctx, &events[i]); err != nil {
			t.Fatalf("Audit: %v", err)
		}
	}
	tests := []struct {
		name   string
		filter store.AuditFilter
		want   []int // indexes into events, newest first
	}{
		{"all", store.AuditFilter{}, []int{4, 3, 2, 1, 0}},
		{"since", store.AuditFilter{Since: t0.Add(2 * time.Minute)}, []int{4, 3, 2}},
		{"since after everything", store.AuditFilter{Since: t0.Add(time.Hour)}, nil},
		{"bot", store.AuditFilter{Bot: "deployer"}, []int{4, 1, 0}},
		{"denied only", store.AuditFilter{DeniedOnly: true}, []int{3, 1}},
		{"limit", store.AuditFilter{Limit: 2}, []int{4, 3}},
		{"all filters", store.AuditFilter{Since: t0.Add(30 * time.Second), Bot: "deployer", DeniedOnly: true, Limit: 5}, []int{1}},
		{"bot and limit", store.AuditFilter{Bot: "deployer", Limit: 2}, []int{4, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := st.ListAudit(ctx, tc.filter)
			if err != nil {
				t.Fatalf("ListAudit: %v", err)
			}
			var gotIdx []int
			for _, ev := range got {
				idx := -1
				for i := range events {
					if events[i].Time.Equal(ev.Time) {
						idx = i
					}
				}
				if idx < 0 || ev.Bot != events[idx].Bot || ev.Allowed != events[idx].Allowed || ev.Code != events[idx].Code {
					t.Errorf("ListAudit returned an event that was not recorded: %+v", ev)
				}
				gotIdx = append(gotIdx, idx)
			}
			if !reflect.DeepEqual(gotIdx, tc.want) {
				t.Errorf("ListAudit(%+v) returned events %v, want %v", tc.filter, gotIdx, tc.want)
			}
		})
	}
}

func testPruneProofs(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	now := time.Now()
	if err := st.RecordJoin(ctx, "expired", now.Add(-time.Minute), joinEvent("deployer")); err != nil {
		t.Fatal(err)
	}
	if err := st.RecordJoin(ctx, "valid", now.Add(time.Hour), joinEvent("deployer")); err != nil {
		t.Fatal(err)
	}
	if err := st.PruneProofs(ctx, now); err != nil {
		t.Fatalf("PruneProofs: %v", err)
	}
	if err := st.RecordJoin(ctx, "expired", now.Add(time.Hour), joinEvent("deployer")); err != nil {
		t.Errorf("RecordJoin of a pruned proof: %v, want it recorded afresh", err)
	}
	if err := st.RecordJoin(ctx, "valid", now.Add(time.Hour), joinEvent("deployer")); !errors.Is(err, store.ErrReplay) {
		t.Errorf("RecordJoin of an unexpired proof after pruning: %v, want ErrReplay", err)
	}
	if n := db.rows(t, "audit"); n != 3 {
		t.Errorf("audit has %d rows, want 3: pruning proofs must not touch the audit log", n)
	}
}

func testCanceledContext(t *testing.T, db *testDB) {
	st := db.open(t)
	// A canceled caller either never queues its write or waits for it, so
	// the outcome it reports is the outcome stored.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := st.RecordJoin(ctx, "jti-canceled", time.Now().Add(time.Hour), joinEvent("deployer"))
	rows := db.rows(t, "audit")
	switch {
	case err == nil && rows != 1, errors.Is(err, context.Canceled) && rows != 0:
		t.Errorf("RecordJoin with a canceled context returned %v but the audit has %d rows", err, rows)
	case err != nil && !errors.Is(err, context.Canceled):
		t.Errorf("RecordJoin with a canceled context: %v", err)
	}
}

func testPruneAudit(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	old := time.Now().Add(-48 * time.Hour)
	for i, at := range []time.Time{old, old.Add(time.Minute), time.Now()} {
		if err := st.Audit(ctx, &store.AuditEvent{Time: at, Event: "join", Bot: fmt.Sprint("b", i)}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := st.PruneAudit(ctx, time.Now().Add(-24*time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("PruneAudit = %d, %v; want 2 records older than a day removed", n, err)
	}
	evs, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil || len(evs) != 1 || evs[0].Bot != "b2" {
		t.Fatalf("left %v, %v; want only the recent record", evs, err)
	}
}
