package store

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"
)

// TestAuditQueryPlans: on SQLite, every audit page's query reads audit and
// audit_terms through an index bounded by the filter, never along the
// log from either end: an until far back is one seek in the time index
// (it used to walk the ids from the newest record to it), a since too.
func TestAuditQueryPlans(t *testing.T) {
	ctx := context.Background()
	st, err := OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := st.(*sqlStore)
	now := time.Now()
	for _, f := range []AuditFilter{
		{Until: now.Add(-30 * 24 * time.Hour), Limit: 50},
		{Since: now.Add(-30 * 24 * time.Hour), Limit: 50},
		{Since: now.Add(-time.Hour), Until: now.Add(-time.Minute), JoinToken: "gh", Limit: 50},
		{Bot: "bot-7", DeniedOnly: true, Until: now.Add(-24 * time.Hour), Limit: 50, Scan: 5000},
		{Serial: "17", Until: now, Limit: 50, Scan: 5000},
	} {
		q, args, scanned, n := s.listAuditQuery(f, "")
		queries := map[string][]any{q: args}
		if scanned != "" {
			queries[scanned] = args[:n]
		}
		for q, args := range queries {
			plan := queryPlan(t, s.read, q, args...)
			for _, step := range plan {
				if (strings.HasPrefix(step, "SCAN ") || strings.HasPrefix(step, "SEARCH ")) && strings.Contains(step, "audit") && !strings.Contains(step, "(") {
					t.Errorf("%+v: the plan reads %q with no bound:\n%s\n%s", f, step, q, strings.Join(plan, "\n"))
				}
			}
		}
	}
}

// queryPlan is SQLite's EXPLAIN QUERY PLAN of q, one step's detail a line.
func queryPlan(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query("EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}
