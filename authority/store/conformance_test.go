package store_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/mbot-dev/mbot/authority/store"
)

// testDB is one empty database of one engine. Each open is another handle
// on it: another authority process on the same data_dir for SQLite,
// another replica for PostgreSQL.
type testDB struct {
	open func(t *testing.T) store.Store
	// rows counts a table's rows with a connection of its own, so that a
	// count does not depend on the store's own queries.
	rows func(t *testing.T, table string) int
	// dir is SQLite's data_dir ("" for PostgreSQL).
	dir string
}

// conformance is the suite every engine passes.
var conformance = []struct {
	name string
	test func(t *testing.T, db *testDB)
}{
	{"ReopenKeepsState", testReopenKeepsState},
	{"CreateCA", testCreateCA},
	{"Resources", testResources},
	{"RecordJoin", testRecordJoin},
	{"RecordJoinConcurrent", testRecordJoinConcurrent},
	{"ListAudit", testListAudit},
	{"PruneProofs", testPruneProofs},
	{"CanceledContext", testCanceledContext},
	{"PruneAudit", testPruneAudit},
	{"GenerationCounter", testGenerationCounter},
	{"StaleGenerationLocks", testStaleGenerationLocks},
	{"ConcurrentRenewalsOfOneGeneration", testConcurrentRenewalsOfOneGeneration},
	{"RemovingResourcesClearsRenewalState", testRemovingResourcesClearsRenewalState},
	{"UnlockBot", testUnlockBot},
	{"RenewalStateSurvivesReopen", testRenewalStateSurvivesReopen},
	{"Locks", testLocks},
	{"AuditBySerial", testAuditBySerial},
	{"StaleJoinIsNotRecorded", testStaleJoinIsNotRecorded},
	{"StaleRenewalChangesNothing", testStaleRenewalChangesNothing},
	{"AuditRecordBounded", testAuditRecordBounded},
	{"ReplayAcrossHandles", testReplayAcrossHandles},
	{"GenerationAcrossHandles", testGenerationAcrossHandles},
	{"Ping", testPing},
	{"RecordJoinStartingChain", testRecordJoinStartingChain},
	{"InstanceLockIsScoped", testInstanceLockIsScoped},
	{"InstanceLockAcrossHandles", testInstanceLockAcrossHandles},
	{"KeypairSequence", testKeypairSequence},
	{"KeypairChallenges", testKeypairChallenges},
	{"KeypairRaces", testKeypairRaces},
	{"ReplaceCAs", testReplaceCAs},
	{"CARotationRows", testCARotationRows},
	{"LeafTunnels", testLeafTunnels},
	{"IssuedCertificates", testIssuedCertificates},
	{"AuditIndex", testAuditIndex},
	{"AuditScan", testAuditScan},
	{"AuditScanRarestTerm", testAuditScanRarestTerm},
	{"AuditTimeBoundsOutOfOrder", testAuditTimeBoundsOutOfOrder},
}

// TestConformanceSQLite runs the suite on SQLite in a fresh data_dir per test.
func TestConformanceSQLite(t *testing.T) {
	for _, c := range conformance {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			c.test(t, &testDB{
				open: func(t *testing.T) store.Store {
					t.Helper()
					st, err := store.OpenSQLite(context.Background(), dir)
					if err != nil {
						t.Fatalf("OpenSQLite: %v", err)
					}
					t.Cleanup(func() { _ = st.Close() })
					return st
				},
				rows: func(t *testing.T, table string) int {
					return countRows(t, "sqlite", "file:"+filepath.Join(dir, store.FileName)+"?_pragma=query_only(1)", table)
				},
				dir: dir,
			})
		})
	}
}

func countRows(t *testing.T, driver, dsn, table string) int {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
