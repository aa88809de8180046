package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

// testAuditScan: a bounded read of filters that match nothing in its
// window says how far back it looked, and reading on from there finds the
// older match; ListAudit of the same filter reads to the end.
func testAuditScan(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	t0, events := writeAuditIndexEvents(t, st)
	idOf := func(i int) int64 {
		got, err := st.ListAudit(ctx, store.AuditFilter{Since: events[i].Time, Until: events[i].Time.Add(time.Nanosecond)})
		if err != nil || len(got) != 1 {
			t.Fatalf("record %d: %v, %v", i, got, err)
		}
		return got[0].ID
	}
	// deployer's records are 5, 4, 1 and 0; of them only 1 is refused
	// (refused are 3 and 1). A window of one entry: the first goes along
	// the refusals, which reach further back; the second's windows are
	// alike (record 1) and it goes along deployer's, which has more.
	f := store.AuditFilter{Bot: "deployer", DeniedOnly: true, Limit: 50, Scan: 1}
	var pages [][]int
	var marks []int64
	for range 4 {
		scan, err := st.ScanAudit(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, indexesOf(scan.Records, events))
		if scan.ScannedTo == nil {
			break
		}
		marks = append(marks, scan.ScannedTo.ID)
		f.BeforeID = scan.ScannedTo.ID
	}
	if want := [][]int{nil, {1}, nil}; !slices.EqualFunc(pages, want, slices.Equal) {
		t.Errorf("bot=deployer&result=refused one index entry at a time: pages %v, want %v", pages, want)
	}
	if want := []int64{idOf(3), idOf(1)}; !slices.Equal(marks, want) {
		t.Errorf("the pages stopped looking at records %v, want %v (records 3 and 1; the third found no refusal left)", marks, want)
	}
	f = store.AuditFilter{Bot: "deployer", DeniedOnly: true, Limit: 50, Scan: 2}
	if got, err := st.ListAudit(ctx, f); err != nil || !slices.Equal(indexesOf(got, events), []int{1}) {
		t.Errorf("ListAudit of bot=deployer&result=refused: %v (%v), want record 1 whatever Scan says", indexesOf(got, events), err)
	}
	// Both windows of one before record 2 hold record 1; deployer's has
	// record 0 after it.
	scan, err := st.ScanAudit(ctx, store.AuditFilter{Bot: "deployer", DeniedOnly: true, Limit: 50, Scan: 1, BeforeID: idOf(2)})
	if err != nil || scan.ScannedTo == nil || scan.ScannedTo.ID != idOf(1) || !scan.ScannedTo.Time.Equal(events[1].Time) {
		t.Errorf("a window of record 1 says it looked back to %+v (%v), want record 1 at %v", scan.ScannedTo, err, events[1].Time)
	}
	// A full page, or a window that held the last matching records, says
	// nothing of where it stopped; so does a window without terms.
	for _, f := range []store.AuditFilter{
		{JoinToken: "gh", Limit: 1, Scan: 3},
		{JoinToken: "gh", Limit: 50, Scan: 3},
		{Until: t0.Add(3 * time.Minute), Limit: 50, Scan: 1000},
	} {
		scan, err := st.ScanAudit(ctx, f)
		if err != nil || scan.ScannedTo != nil || len(scan.Records) == 0 {
			t.Errorf("%+v: %d records, stopped at %+v (%v); want records and no stop", f, len(scan.Records), scan.ScannedTo, err)
		}
	}
	// Without terms the window is the log's own ids: two of the records
	// before record 3's time, the older of them where it stopped.
	scan, err = st.ScanAudit(ctx, store.AuditFilter{Until: t0.Add(3 * time.Minute), Event: "", Limit: 1, Scan: 2})
	if err != nil || !slices.Equal(indexesOf(scan.Records, events), []int{2}) {
		t.Errorf("until record 3, one record: %v (%v), want record 2", indexesOf(scan.Records, events), err)
	}
	if _, err := st.ScanAudit(ctx, store.AuditFilter{Scan: -1}); err == nil {
		t.Error("a negative scan is accepted")
	}
}

// testAuditScanRarestTerm: the window is read along the filter's rarest
// term near the page, not its first: a claim every record has does not
// make a page search only its few newest records.
func testAuditScanRarestTerm(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	events := make([]store.AuditEvent, 12)
	for i := range events {
		bot := "common"
		if i == 0 {
			bot = "rare"
		}
		events[i] = store.AuditEvent{Time: t0.Add(time.Duration(i) * time.Second), Event: "join", Allowed: true, Bot: bot,
			Claims: map[string]string{"workflow": "deploy"}}
		if err := st.Audit(ctx, &events[i]); err != nil {
			t.Fatal(err)
		}
	}
	f := store.AuditFilter{Claims: map[string]string{"workflow": "deploy"}, Bot: "rare", Limit: 50, Scan: 3}
	scan, err := st.ScanAudit(ctx, f)
	if err != nil || !slices.Equal(indexesOf(scan.Records, events), []int{0}) || scan.ScannedTo != nil {
		t.Errorf("workflow=deploy&bot=rare, windows of 3: %v stopping at %+v (%v); want record 0 on the first page, read along bot=rare", indexesOf(scan.Records, events), scan.ScannedTo, err)
	}
	// A term no record has answers at once: nothing, and nothing to go on
	// searching.
	f = store.AuditFilter{Claims: map[string]string{"workflow": "deploy"}, Bot: "common", DeniedOnly: true, Limit: 50, Scan: 3}
	scan, err = st.ScanAudit(ctx, f)
	if err != nil || len(scan.Records) != 0 || scan.ScannedTo != nil {
		t.Errorf("workflow=deploy&bot=common&result=refused: %v stopping at %+v (%v); want none and no search on", indexesOf(scan.Records, events), scan.ScannedTo, err)
	}
}

// testAuditTimeBoundsOutOfOrder: since and until stay exact when ids and
// times disagree (a record queued earlier, or stamped by a replica whose
// clock is behind, gets a later id), within the slack the bounds allow.
func testAuditTimeBoundsOutOfOrder(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	// In id order; times 0s, 40s, 20s, 60s, 50s.
	offsets := []time.Duration{0, 40 * time.Second, 20 * time.Second, 60 * time.Second, 50 * time.Second}
	events := make([]store.AuditEvent, len(offsets))
	for i, d := range offsets {
		events[i] = store.AuditEvent{Time: t0.Add(d), Event: "join", Allowed: true, Bot: "deployer", JoinToken: "gh"}
		if err := st.Audit(ctx, &events[i]); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		filter store.AuditFilter
		want   []int
	}{
		{"until 30s", store.AuditFilter{Until: t0.Add(30 * time.Second)}, []int{2, 0}},
		{"until 45s", store.AuditFilter{Until: t0.Add(45 * time.Second)}, []int{2, 1, 0}},
		{"until 55s", store.AuditFilter{Until: t0.Add(55 * time.Second)}, []int{4, 2, 1, 0}},
		{"since 30s", store.AuditFilter{Since: t0.Add(30 * time.Second)}, []int{4, 3, 1}},
		{"since 45s", store.AuditFilter{Since: t0.Add(45 * time.Second)}, []int{4, 3}},
		{"since 10s until 45s", store.AuditFilter{Since: t0.Add(10 * time.Second), Until: t0.Add(45 * time.Second)}, []int{2, 1}},
		{"token until 30s", store.AuditFilter{JoinToken: "gh", Until: t0.Add(30 * time.Second)}, []int{2, 0}},
		{"until before all", store.AuditFilter{Until: t0}, nil},
		{"since after all", store.AuditFilter{Since: t0.Add(2 * time.Minute)}, nil},
	}
	for _, tc := range tests {
		for _, scan := range []int{0, 100} {
			tc.filter.Scan = scan
			res, err := st.ScanAudit(ctx, tc.filter)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if idx := indexesOf(res.Records, events); !slices.Equal(idx, tc.want) {
				t.Errorf("%s (scan %d): got records %v, want %v", tc.name, scan, idx, tc.want)
			}
		}
	}
}
