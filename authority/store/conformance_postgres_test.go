//go:build linux

package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// TestConformancePostgres runs the suite on a real PostgreSQL (Debian's
// postgresql package), one fresh database per test.
func TestConformancePostgres(t *testing.T) {
	pg := testservers.StartPostgresForStore(t)
	var n atomic.Int64
	for _, c := range conformance {
		t.Run(c.name, func(t *testing.T) {
			dsn := pg.CreateDatabase(t, fmt.Sprintf("conformance_%d", n.Add(1)))
			c.test(t, &testDB{
				open: func(t *testing.T) store.Store {
					t.Helper()
					st, err := store.OpenPostgres(context.Background(), dsn)
					if err != nil {
						t.Fatalf("OpenPostgres: %v", err)
					}
					t.Cleanup(func() { _ = st.Close() })
					return st
				},
				rows: func(t *testing.T, table string) int { return countRows(t, "pgx", dsn, table) },
			})
		})
	}
}
