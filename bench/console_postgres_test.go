//go:build linux

package bench

import (
	"context"
	"database/sql"
	"os"
	"strconv"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// generatePostgresAuditSQL is generateAuditSQL in PostgreSQL's functions:
// the same records, in id order.
const generatePostgresAuditSQL = `INSERT INTO audit (time, event, allowed, bot, record)
	SELECT t, 'join', allowed, bot, (CASE WHEN allowed THEN
		base || jsonb_build_object('roles', jsonb_build_array('deploy'), 'outputs', jsonb_build_array('identity (identity): logins ci'),
			'serials', jsonb_build_array('tls:' || upper(to_hex(1152921504606846976 + i)), 'ssh:' || i),
			'not_after', to_char(to_timestamp(t / 1e9 + 3600) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
	ELSE base || jsonb_build_object('code', code, 'message', 'join token ' || tok || ': no allow rule matches ' || repo) END)::text
	FROM (SELECT i, t, allowed, bot, repo, 'token-' || (i % 100) AS tok,
		(ARRAY['rule_mismatch','proof_replayed','wrong_audience','token_expired','bot_locked'])[i / 10 % 5 + 1] AS code,
		jsonb_build_object('id', 0, 'time', to_char(to_timestamp(t / 1e9) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'event', 'join',
			'allowed', allowed, 'bot', bot, 'join_token', 'token-' || (i % 100), 'method', 'github',
			'claims', jsonb_build_object('repository', repo, 'ref', 'refs/heads/main', 'sub', 'repo:' || repo || ':ref:refs/heads/main',
				'workflow', 'deploy', 'run_id', i::text),
			'remote', '10.0.' || (i % 250) || '.' || (i % 200 + 1) || ':443') AS base
		FROM (SELECT i, $2::bigint - ($1::bigint - i) * $3::bigint AS t, i % 10 <> 0 AS allowed, 'bot-' || (i % 50) AS bot,
			CASE WHEN i = $1::bigint / 2 THEN 'acme/needle' ELSE 'acme/app-' || (i % 1000) END AS repo
			FROM generate_series(1, $1::bigint) i) r) x
	ORDER BY i`

// generatePostgresIssuedSQL is generateIssuedSQL in PostgreSQL's functions.
const generatePostgresIssuedSQL = `INSERT INTO issued_certificates (ca, serial, not_after, bot, bot_instance, join_token, audit_id, record)
	SELECT $1::text, serial, time + 86400000000000, bot, '', join_token, id,
		jsonb_build_object('ca', $1::text, 'serial', serial, 'not_after', to_char(to_timestamp(time / 1e9 + 86400) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
			'output', 'identity', 'output_type', 'identity', 'bot', bot, 'join_token', join_token, 'claims', r->'claims', 'issued', r->>'time', 'audit_id', id)::text
	FROM (SELECT id, time, bot, r, r->>'join_token' AS join_token, substr(r->'serials'->>$2::int, 5) AS serial
		FROM (SELECT id, time, bot, record::jsonb AS r FROM audit WHERE time >= $3::bigint AND allowed) a) x`

// fillAuditPostgres is fillAuditSQLite on the PostgreSQL store at dsn:
// the same records through PostgreSQL's trigger, then VACUUM ANALYZE, as
// autovacuum would leave a table this size.
func fillAuditPostgres(tb testing.TB, dsn string, n int, now time.Time) {
	tb.Helper()
	ctx := context.Background()
	st, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	st.Close()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	if _, err := db.ExecContext(ctx, generatePostgresAuditSQL, n, now.UnixNano(), int64(consoleRecordGap)); err != nil {
		tb.Fatalf("generating %d audit records: %v", n, err)
	}
	for k, ca := range []string{"tls-ca", "ssh-user-ca"} {
		if _, err := db.ExecContext(ctx, generatePostgresIssuedSQL, ca, k, now.Add(-24*time.Hour).UnixNano()); err != nil {
			tb.Fatalf("recording the certificates of the last day's joins: %v", err)
		}
	}
	if _, err := db.ExecContext(ctx, `VACUUM ANALYZE`); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("generated %d audit records on PostgreSQL in %v", n, time.Since(start).Round(time.Millisecond))
}

// BenchmarkConsolePagesPostgres is BenchmarkConsolePages1M on PostgreSQL:
// the same records (generatePostgresAuditSQL), the large store of
// MBOT_BENCH_PG_RECORDS (default 1,000,000) against its last 4% (40,000
// of 1,000,000), generated through PostgreSQL's trigger at each run.
//
//	go test ./bench -run '^$' -bench ConsolePagesPostgres -benchtime 10x -timeout 60m
func BenchmarkConsolePagesPostgres(b *testing.B) {
	large := 1_000_000
	if s := os.Getenv("MBOT_BENCH_PG_RECORDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 25_000 {
			b.Fatalf("MBOT_BENCH_PG_RECORDS=%q: want a count of at least 25,000", s)
		}
		large = n
	}
	day := large / 25
	pg := testservers.StartPostgresForStore(b)
	onStore := func(records int, name string) *consoleEnv {
		dsn := pg.CreateDatabase(b, name)
		now := time.Now()
		return startConsoleEnv(b, records, testservers.PostgresStorageYAML(b, dsn), func(string) time.Time {
			fillAuditPostgres(b, dsn, records, now)
			return now
		})
	}
	benchConsolePages(b, onStore(large, "console_large"), onStore(day, "console_small"))
}
