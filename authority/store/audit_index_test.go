package store_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

// auditIndexEvents are the records testAuditIndex writes: joins of two
// repositories, admitted and refused, a hostile claim, and a sign.
func auditIndexEvents(t0 time.Time) []store.AuditEvent {
	return []store.AuditEvent{
		0: {Time: t0, Event: "join", Allowed: true, Bot: "deployer", JoinToken: "gh", Method: "github",
			Claims: map[string]string{"repository": "acme/app", "ref": "refs/heads/main"}, Serials: []string{"tls:0A1B", "ssh:17"}},
		1: {Time: t0.Add(time.Minute), Event: "join", Allowed: false, Bot: "deployer", JoinToken: "gh", Method: "github", Code: "rule_mismatch",
			Claims: map[string]string{"repository": "acme/other", "ref": "refs/heads/main"}},
		2: {Time: t0.Add(2 * time.Minute), Event: "join", Allowed: true, Bot: "auditor", JoinToken: "gl", Method: "gitlab",
			Claims: map[string]string{"project_path": "acme/app"}, Serials: []string{"tls:0C"}},
		3: {Time: t0.Add(3 * time.Minute), Event: "join", Allowed: false, JoinToken: "nope", Method: "github", Code: "unknown_join_token",
			Claims: map[string]string{"repository": "<script>alert(1)</script>\"'\x01"}},
		4: {Time: t0.Add(4 * time.Minute), Event: "sign", Allowed: true, Bot: "deployer"},
		5: {Time: t0.Add(5 * time.Minute), Event: "join", Allowed: true, Bot: "deployer", JoinToken: "gh", Method: "github",
			Claims: map[string]string{"repository": "acme/app", "ref": "refs/heads/dev"}},
	}
}

// writeAuditIndexEvents writes auditIndexEvents, the first an hour ago,
// and returns their start and the records as written.
func writeAuditIndexEvents(t *testing.T, st store.Store) (time.Time, []store.AuditEvent) {
	t.Helper()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	events := auditIndexEvents(t0)
	for i := range events {
		if err := st.Audit(context.Background(), &events[i]); err != nil {
			t.Fatal(err)
		}
	}
	return t0, events
}

// testAuditIndex: every filter the console offers finds exactly its
// records, newest first, page by page, and the per-minute counts agree
// with the records.
func testAuditIndex(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	t0, events := writeAuditIndexEvents(t, st)
	checkAuditFilters(t, st, t0, events)

	sum, err := st.AuditSummary(ctx, store.SummaryFilter{Since: t0.Add(-time.Minute), Event: "join"})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Admitted != 3 || sum.Refused != 2 {
		t.Errorf("summary: %d admitted, %d refused; want 3 and 2", sum.Admitted, sum.Refused)
	}
	if len(sum.Buckets) < 60 || sum.Buckets[1].Admitted != 1 || sum.Buckets[2].Refused != 1 {
		t.Errorf("summary buckets: %d, %+v", len(sum.Buckets), sum.Buckets[:min(4, len(sum.Buckets))])
	}
	wantCodes := []store.NamedCount{{Name: "rule_mismatch", N: 1}, {Name: "unknown_join_token", N: 1}}
	if !slices.Equal(sum.Codes, wantCodes) {
		t.Errorf("codes %+v, want %+v", sum.Codes, wantCodes)
	}
	if len(sum.Projects) != 4 || sum.Projects[0] != (store.NamedCount{Name: "repository=acme/app", N: 2}) {
		t.Errorf("projects %+v, want repository=acme/app first with 2 of 4", sum.Projects)
	}
	hour, err := st.AuditSummary(ctx, store.SummaryFilter{Since: t0.Add(-24 * time.Hour), Step: time.Hour, Event: "join"})
	if err != nil || hour.Admitted != 3 || len(hour.Buckets) < 24 || len(hour.Buckets) > 26 {
		t.Errorf("hourly summary: %v, %d buckets, %d admitted", err, len(hour.Buckets), hour.Admitted)
	}

	// Pruning takes the terms and counts with the records (counts by the
	// minute: a retention boundary is a minute's).
	before := db.rows(t, "audit_terms")
	if _, err := st.PruneAudit(ctx, t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got, err := st.ListAudit(ctx, store.AuditFilter{Claims: map[string]string{"repository": "acme/app"}}); err != nil || len(got) != 1 {
		t.Errorf("after pruning, repository=acme/app finds %d records (%v); want the one left", len(got), err)
	}
	// Record 0 has 9 terms (bot, event, result, join token, method, two
	// claims, two serials), record 1 has 8.
	if n := db.rows(t, "audit_terms"); n != before-17 {
		t.Errorf("after pruning, %d of %d terms are left; want the 17 of the two pruned records gone", n, before)
	}
	sum, err = st.AuditSummary(ctx, store.SummaryFilter{Since: t0.Add(-time.Minute), Event: "join"})
	if err != nil || sum.Admitted != 2 || sum.Refused != 1 {
		t.Errorf("after pruning the summary counts %d admitted, %d refused (%v); want 2 and 1", sum.Admitted, sum.Refused, err)
	}
}

func checkAuditFilters(t *testing.T, st store.Store, t0 time.Time, events []store.AuditEvent) {
	t.Helper()
	ctx := context.Background()
	tests := []struct {
		name   string
		filter store.AuditFilter
		want   []int
	}{
		{"claim", store.AuditFilter{Claims: map[string]string{"repository": "acme/app"}}, []int{5, 0}},
		{"two claims", store.AuditFilter{Claims: map[string]string{"repository": "acme/app", "ref": "refs/heads/main"}}, []int{0}},
		{"hostile claim", store.AuditFilter{Claims: map[string]string{"repository": "<script>alert(1)</script>\"'\x01"}}, []int{3}},
		{"join token", store.AuditFilter{JoinToken: "gh"}, []int{5, 1, 0}},
		{"method", store.AuditFilter{Method: "gitlab"}, []int{2}},
		{"code", store.AuditFilter{Code: "rule_mismatch"}, []int{1}},
		{"refused", store.AuditFilter{DeniedOnly: true}, []int{3, 1}},
		{"admitted joins", store.AuditFilter{AdmittedOnly: true, Event: "join"}, []int{5, 2, 0}},
		{"bot and token", store.AuditFilter{Bot: "deployer", JoinToken: "gh", AdmittedOnly: true}, []int{5, 0}},
		{"serial", store.AuditFilter{Serial: "tls:0A1B"}, []int{0}},
		{"bare serial", store.AuditFilter{Serial: "17"}, []int{0}},
		{"time window", store.AuditFilter{Since: t0.Add(time.Minute), Until: t0.Add(3 * time.Minute)}, []int{2, 1}},
		{"window and term", store.AuditFilter{Since: t0.Add(time.Minute), Until: t0.Add(6 * time.Minute), JoinToken: "gh"}, []int{5, 1}},
		{"nothing after", store.AuditFilter{Since: t0.Add(time.Hour)}, nil},
		{"no such claim", store.AuditFilter{Claims: map[string]string{"repository": "acme/none"}}, nil},
	}
	for _, tc := range tests {
		got, err := st.ListAudit(ctx, tc.filter)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if idx := indexesOf(got, events); !slices.Equal(idx, tc.want) {
			t.Errorf("%s: got records %v, want %v", tc.name, idx, tc.want)
		}
	}
	// Keyset paging: two at a time, each page after the last id seen.
	var pages [][]int
	f := store.AuditFilter{Limit: 2}
	for {
		got, err := st.ListAudit(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			break
		}
		pages = append(pages, indexesOf(got, events))
		f.BeforeID = got[len(got)-1].ID
	}
	if want := [][]int{{5, 4}, {3, 2}, {1, 0}}; !slices.EqualFunc(pages, want, slices.Equal) {
		t.Errorf("pages %v, want %v", pages, want)
	}
	f = store.AuditFilter{Limit: 1, JoinToken: "gh"}
	got, _ := st.ListAudit(ctx, f)
	f.BeforeID = got[0].ID
	if got, _ := st.ListAudit(ctx, f); !slices.Equal(indexesOf(got, events), []int{1}) {
		t.Errorf("the second page of join_token=gh is %v, want [1]", indexesOf(got, events))
	}
}

func indexesOf(got, events []store.AuditEvent) []int {
	var idx []int
	for _, ev := range got {
		for i := range events {
			if events[i].Time.Equal(ev.Time) {
				idx = append(idx, i)
			}
		}
	}
	return idx
}

// reopenedAfter writes events to a new SQLite store, runs queries on its
// database directly (what an older mbot left), and opens it again, closed
// when the test ends.
func reopenedAfter(t *testing.T, events []store.AuditEvent, queries ...string) store.Store {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range events {
		if err := st.Audit(ctx, &events[i]); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queries {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	st, err = store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestAuditIndexBackfill: a store written before the audit index (no
// trigger, no terms) is indexed when it is opened.
func TestAuditIndexBackfill(t *testing.T) {
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	events := auditIndexEvents(t0)
	// What an older mbot left: the records alone.
	st := reopenedAfter(t, events, `DROP TRIGGER audit_indexed`, `DELETE FROM audit_terms`, `DELETE FROM audit_minutes`)
	checkAuditFilters(t, st, t0, events)
	sum, err := st.AuditSummary(ctx, store.SummaryFilter{Since: t0.Add(-time.Minute), Event: "join"})
	if err != nil || sum.Admitted != 3 || sum.Refused != 2 {
		t.Errorf("backfilled summary: %d admitted, %d refused (%v); want 3 and 2", sum.Admitted, sum.Refused, err)
	}
}

// TestAuditTotalsBackfill: a store indexed before audit_minute_totals (its
// trigger counts only audit_minutes) gets the trigger that counts both and
// the totals of its records when it is opened.
func TestAuditTotalsBackfill(t *testing.T) {
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	st := reopenedAfter(t, auditIndexEvents(t0), `DROP TRIGGER audit_indexed`, `CREATE TRIGGER audit_indexed AFTER INSERT ON audit BEGIN SELECT 1; END`, `DELETE FROM audit_minute_totals`)
	sum, err := st.AuditSummary(ctx, store.SummaryFilter{Since: t0.Add(-time.Minute), Event: "join"})
	if err != nil || sum.Admitted != 3 || sum.Refused != 2 || len(sum.Codes) != 2 {
		t.Fatalf("summary after the upgrade: %d admitted, %d refused, codes %v (%v); want 3, 2 and two codes", sum.Admitted, sum.Refused, sum.Codes, err)
	}
	// The new trigger counts the next record.
	if err := st.Audit(ctx, &store.AuditEvent{Time: t0.Add(5 * time.Minute), Event: "join", Allowed: true, Bot: "b"}); err != nil {
		t.Fatal(err)
	}
	if sum, err := st.AuditSummary(ctx, store.SummaryFilter{Since: t0.Add(-time.Minute), Event: "join"}); err != nil || sum.Admitted != 4 {
		t.Errorf("a record after the upgrade: %v admitted (%v), want 4", sum.Admitted, err)
	}
}
