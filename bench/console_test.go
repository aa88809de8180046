package bench

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/console"
)

// consoleBots is how many bots (each with two join tokens) the console
// benchmark's authority has.
const consoleBots = 50

// consoleResources are consoleBots bots with two GitHub join tokens each.
func consoleResources() string {
	var b strings.Builder
	b.WriteString("kind: role\nversion: v1\nmetadata: {name: deploy}\nspec: {logins: [ci], db_users: [app]}\n")
	for i := range consoleBots {
		fmt.Fprintf(&b, "---\nkind: bot\nversion: v1\nmetadata: {name: bot-%d}\nspec: {roles: [deploy]}\n", i)
		for _, t := range []int{i, i + consoleBots} {
			fmt.Fprintf(&b, "---\nkind: join_token\nversion: v1\nmetadata: {name: token-%d}\nspec:\n  bot: bot-%d\n  method: github\n"+
				"  github:\n    issuer: https://issuer.invalid\n    allow: [{repository: acme/app-%d}]\n", t, i, t)
		}
	}
	return b.String()
}

// consoleRecordGap is the time between two generated audit records: 1,000,000
// records span 30 days, about 23 a minute, ending now.
const consoleRecordGap = 30 * 24 * time.Hour / 1_000_000

// generateAuditSQL writes $1 join records, the last at $2 (Unix ns), $3 ns apart.
const generateAuditSQL = `WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < $1),
	r AS (SELECT i, $2 - ($1 - i) * $3 AS t, i % 10 <> 0 AS allowed, 'bot-' || (i % 50) AS bot,
		CASE WHEN i = $1 / 2 THEN 'acme/needle' ELSE 'acme/app-' || (i % 1000) END AS repo FROM g)
	INSERT INTO audit (time, event, allowed, bot, record)
	SELECT t, 'join', allowed, bot, CASE WHEN allowed THEN
		json_set(base, '$.roles', json_array('deploy'), '$.outputs', json_array('identity (identity): logins ci'),
			'$.serials', json_array('tls:' || printf('%X', 1152921504606846976 + i), 'ssh:' || i),
			'$.not_after', strftime('%Y-%m-%dT%H:%M:%fZ', t / 1e9 + 3600, 'unixepoch'))
	ELSE json_set(base, '$.code', code, '$.message', 'join token ' || tok || ': no allow rule matches ' || repo) END
	FROM (SELECT i, t, allowed, bot, repo, 'token-' || (i % 100) AS tok,
		json_extract('["rule_mismatch","proof_replayed","wrong_audience","token_expired","bot_locked"]', '$[' || (i / 10 % 5) || ']') AS code,
		json_object('id', 0, 'time', strftime('%Y-%m-%dT%H:%M:%fZ', t / 1e9, 'unixepoch'), 'event', 'join',
			'allowed', json(CASE WHEN allowed THEN 'true' ELSE 'false' END), 'bot', bot, 'join_token', 'token-' || (i % 100),
			'method', 'github', 'claims', json_object('repository', repo, 'ref', 'refs/heads/main',
				'sub', 'repo:' || repo || ':ref:refs/heads/main', 'workflow', 'deploy', 'run_id', CAST(i AS TEXT)),
			'remote', '10.0.' || (i % 250) || '.' || (i % 200 + 1) || ':443') AS base FROM r)`

// generateIssuedSQL records certificate $2 (0: TLS, 1: SSH) of each admitted
// join since $3 as issued by CA $1.
const generateIssuedSQL = `INSERT INTO issued_certificates (ca, serial, not_after, bot, bot_instance, join_token, audit_id, record)
		SELECT $1, serial, time + 86400000000000, bot, '', join_token, id,
			json_object('ca', $1, 'serial', serial, 'not_after', strftime('%Y-%m-%dT%H:%M:%fZ', time / 1e9 + 86400, 'unixepoch'), 'output', 'identity',
				'output_type', 'identity', 'bot', bot, 'join_token', join_token, 'claims', json(claims), 'issued', issued, 'audit_id', id)
		FROM (SELECT id, time, bot, json_extract(record, '$.join_token') AS join_token, json_extract(record, '$.claims') AS claims,
			json_extract(record, '$.time') AS issued, substr(json_extract(record, '$.serials[' || $2 || ']'), 5) AS serial
			FROM audit WHERE time >= $3 AND allowed)`

// fillAuditSQLite writes n join records into the SQLite store of dataDir
// in one statement, through the store's own schema and trigger (which
// indexes them as any write does), and the certificates of the last 24
// hours' admitted joins. Record i (1..n) is at now-(n-i)*gap: ids grow
// with time, as the authority writes them. One in ten is refused, by one
// of five codes; bot i%50, join token i%100, repository acme/app-(i%1000)
// (1,000 records each), except record n/2, the only one of acme/needle.
// Admitted joins carry a TLS and an SSH serial: tls:%X of 2^60+i and ssh:i.
func fillAuditSQLite(tb testing.TB, dataDir string, n int, now time.Time) {
	tb.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, dataDir)
	if err != nil {
		tb.Fatal(err)
	}
	st.Close()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dataDir, store.FileName)+"?_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)&_pragma=cache_size(-262144)")
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	_, err = db.ExecContext(ctx, generateAuditSQL, n, now.UnixNano(), int64(consoleRecordGap))
	if err != nil {
		tb.Fatalf("generating %d audit records: %v", n, err)
	}
	for k, ca := range []string{"tls-ca", "ssh-user-ca"} {
		_, err = db.ExecContext(ctx, generateIssuedSQL, ca, k, now.Add(-24*time.Hour).UnixNano())
		if err != nil {
			break
		}
	}
	if err != nil {
		tb.Fatalf("recording the certificates of the last day's joins: %v", err)
	}
	tb.Logf("generated %d audit records in %v", n, time.Since(start).Round(time.Millisecond))
}

// auditStoreCacheAge is how long a generated store is reused: well within
// the 90 days' audit_retention that would prune its older records.
const auditStoreCacheAge = 7 * 24 * time.Hour

// cachedAuditStore puts into dataDir a store of n generated records (see
// fillAuditSQLite) and returns the time of its newest one. Generating
// 1,000,000 records through the trigger takes minutes of CPU, so the store
// is generated once and kept in the user's cache directory
// (mbot-bench/, 1.4 GB for 1,000,000), named by a hash of the generator and of the
// tables it writes: a change to either generates it anew. Other changes to
// the schema upgrade the copy as the store upgrades any store it opens.
func cachedAuditStore(tb testing.TB, dataDir string, n int) time.Time {
	tb.Helper()
	ctx := context.Background()
	fresh := tb.TempDir()
	st, err := store.OpenSQLite(ctx, fresh)
	if err != nil {
		tb.Fatal(err)
	}
	st.Close()
	schema := sqliteQuery(tb, fresh, `SELECT sql FROM sqlite_master WHERE name IN ('audit', 'issued_certificates')`)
	key := sha256.Sum256([]byte(fmt.Sprintf("%d\x00%s\x00%s\x00%s\x00%d", n, generateAuditSQL, generateIssuedSQL, schema, consoleRecordGap)))
	cacheDir, err := os.UserCacheDir()
	if err != nil {
		cacheDir = os.TempDir()
	}
	cacheDir = filepath.Join(cacheDir, "mbot-bench")
	cached := filepath.Join(cacheDir, fmt.Sprintf("console-audit-%d-%x.db", n, key[:8]))
	if fi, err := os.Stat(cached); err != nil || time.Since(fi.ModTime()) > auditStoreCacheAge {
		if err := os.MkdirAll(cacheDir, 0o700); err != nil {
			tb.Fatal(err)
		}
		gen := tb.TempDir()
		fillAuditSQLite(tb, gen, n, time.Now())
		if err := sqliteExec(filepath.Join(gen, store.FileName), `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			tb.Fatal(err)
		}
		if err := copyFile(filepath.Join(gen, store.FileName), cached+".tmp"); err != nil {
			tb.Fatal(err)
		}
		if err := os.Rename(cached+".tmp", cached); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := copyFile(cached, filepath.Join(dataDir, store.FileName)); err != nil {
		tb.Fatal(err)
	}
	newest, err := strconv.ParseInt(sqliteQuery(tb, dataDir, `SELECT max(time) FROM audit`), 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return time.Unix(0, newest)
}

// sqliteQuery is the first column of the first row of q on dataDir's store.
func sqliteQuery(tb testing.TB, dataDir, q string) string {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dataDir, store.FileName))
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	var out sql.NullString
	if err := db.QueryRow(q).Scan(&out); err != nil && !errors.Is(err, sql.ErrNoRows) {
		tb.Fatalf("%s: %v", q, err)
	}
	return out.String
}

// sqliteExec runs q on the SQLite database at path.
func sqliteExec(path, q string) error {
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Exec(q); err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// consoleEnv is an authority on a store of generated audit records and a
// console reading it through the admin API, logged in.
type consoleEnv struct {
	records int
	dataDir string
	// now is the newest record's time.
	now     time.Time
	url     string
	browser *http.Client
}

// startConsoleEnv serves an authority whose store fill prepares in its
// data_dir (or in the store extraConfig names), and a console on it whose
// clock starts at the time fill returns.
func startConsoleEnv(b *testing.B, records int, extraConfig string, fill func(dataDir string) time.Time) *consoleEnv {
	b.Helper()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bots.yaml"), []byte(consoleResources()), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"), []byte("cluster_name: acme\nlisten: 127.0.0.1:0\ndata_dir: data\nresources: [bots.yaml]\n"+extraConfig))
	if err != nil {
		b.Fatal(err)
	}
	now, started := fill(cfg.DataDir), time.Now()
	a, err := authority.Open(context.Background(), cfg, authority.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan net.Addr, 1), make(chan error, 1)
	go func() { done <- a.Serve(ctx, func(addr net.Addr) { ready <- addr }) }()
	select {
	case <-ready:
	case err := <-done:
		b.Fatal(err)
	}
	b.Cleanup(func() { cancel(); <-done; a.Close() })
	client, err := admin.OpenRemote(filepath.Join(cfg.DataDir, authority.AdminDirName), "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.Close() })
	srv := httptest.NewUnstartedServer(nil)
	c, err := console.New(console.Options{Client: client, Addr: srv.Listener.Addr().String(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return now.Add(time.Since(started)) }})
	if err != nil {
		b.Fatal(err)
	}
	srv.Config.Handler = c.Handler()
	srv.Start()
	b.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	e := &consoleEnv{records: records, dataDir: cfg.DataDir, now: now, url: srv.URL, browser: &http.Client{Jar: jar}}
	if resp, err := e.browser.Get(c.URL()); err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("logging in to the console: %v %v", resp, err)
	}
	return e
}

// get fetches a console page and checks it shows want.
func (e *consoleEnv) get(b *testing.B, path, want string) int {
	resp, err := e.browser.Get(e.url + path)
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		b.Fatalf("GET %s on %d records: %d, %v, want %q in\n%.2000s", path, e.records, resp.StatusCode, err, want, body)
	}
	return len(body)
}

// BenchmarkConsolePages1M: each console page through the admin API (as
// mbot console --auth reads it) on a SQLite store of 1,000,000 audit
// records, 30 days of joins at about 23 a minute, and its ratio to the
// same page on a store of the last 40,000 of them (29 hours, so the same
// last day: what the overview counts), measured alternately in the same
// loop. A ratio near 1 is a page that costs what it shows, not the size of
// the log.
//
//	go test ./bench -run '^$' -bench ConsolePages1M -benchtime 20x
func BenchmarkConsolePages1M(b *testing.B) {
	const large, day = 1_000_000, 40_000
	onLarge := startConsoleEnv(b, large, "", func(dir string) time.Time { return cachedAuditStore(b, dir, large) })
	onDay := startConsoleEnv(b, day, "", func(dir string) time.Time { return cachedAuditStore(b, dir, day) })
	benchConsolePages(b, onLarge, onDay)
	// A window of the driving term's ids (what the console reads, at most
	// 5,000 of them) against a zigzag (leapfrog) intersection of the
	// terms' id lists with a budget of as many index seeks, on the large
	// store: how far back each searches per millisecond.
	b.Run("intersection", func(b *testing.B) {
		st, err := store.OpenSQLite(context.Background(), onLarge.dataDir)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		db, err := sql.Open("sqlite", "file:"+filepath.Join(onLarge.dataDir, store.FileName)+"?mode=ro")
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		const budget = 5000
		for _, c := range []struct {
			name   string
			filter store.AuditFilter
			terms  []string // in auditTerms' order
		}{
			{"bot-7-refused", store.AuditFilter{Bot: "bot-7", DeniedOnly: true}, []string{"bot=bot-7", "result=refused"}},
			{"bot-7-admitted", store.AuditFilter{Bot: "bot-7", AdmittedOnly: true}, []string{"bot=bot-7", "result=admitted"}},
			{"ref-bot-7-bot-locked", store.AuditFilter{Claims: map[string]string{"ref": "refs/heads/main"}, Bot: "bot-7", Code: "bot_locked"},
				[]string{"claim:ref=refs/heads/main", "bot=bot-7", "code=bot_locked"}},
		} {
			b.Run(c.name, func(b *testing.B) {
				f := c.filter
				f.Limit, f.Scan = pageSize, budget
				newest := int64(large)
				var tWindow, tZigzag time.Duration
				var backWindow, backZigzag int64
				q, args := leapfrogSQL(c.terms, pageSize, budget)
				for b.Loop() {
					t0 := time.Now()
					scan, err := st.ScanAudit(context.Background(), f)
					if err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					var matched, oldest int64
					if err := db.QueryRow(q, args...).Scan(&matched, &oldest); err != nil {
						b.Fatal(err)
					}
					tWindow += t1.Sub(t0)
					tZigzag += time.Since(t1)
					backWindow = newest
					switch {
					case scan.ScannedTo != nil:
						backWindow = newest - scan.ScannedTo.ID
					case len(scan.Records) > 0:
						backWindow = newest - scan.Records[len(scan.Records)-1].ID
					}
					backZigzag = newest - oldest
					if len(scan.Records) != int(matched) {
						b.Fatalf("the window found %d records, the zigzag %d", len(scan.Records), matched)
					}
				}
				b.ReportMetric(float64(tWindow.Microseconds())/float64(b.N)/1000, "ms-window")
				b.ReportMetric(float64(backWindow), "back-window")
				b.ReportMetric(float64(tZigzag.Microseconds())/float64(b.N)/1000, "ms-zigzag")
				b.ReportMetric(float64(backZigzag), "back-zigzag")
				b.ReportMetric((float64(backZigzag)/float64(tZigzag))/(float64(backWindow)/float64(tWindow)), "x-zigzag-per-ms")
			})
		}
	})
	// The overview's counts of the last 24 h on the large store: from
	// audit_minute_totals (charts, codes) and audit_minutes (top projects),
	// against all three from audit_minutes, as before the totals.
	b.Run("day-summary-sql", func(b *testing.B) {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(onLarge.dataDir, store.FileName)+"?mode=ro")
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		last := onLarge.now.UnixNano() / int64(time.Minute)
		first := last - 24*60
		run := func(counts string) {
			for _, q := range []string{
				`SELECT minute, allowed, sum(n) FROM ` + counts + ` WHERE minute >= $1 AND minute < $2 AND event = 'join' GROUP BY minute, allowed`,
				`SELECT code, sum(n) FROM ` + counts + ` WHERE minute >= $1 AND minute < $2 AND event = 'join' AND NOT allowed GROUP BY code ORDER BY 2 DESC, 1 LIMIT 10`,
				`SELECT project, sum(n) FROM audit_minutes WHERE minute >= $1 AND minute < $2 AND event = 'join' AND project <> '' GROUP BY project ORDER BY 2 DESC, 1 LIMIT 10`,
			} {
				rows, err := db.Query(q, first, last+1)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for rows.Next() {
					n++
				}
				rows.Close()
				if n == 0 {
					b.Fatalf("%s: no rows", q)
				}
			}
		}
		var tTotals, tMinutes time.Duration
		for b.Loop() {
			t0 := time.Now()
			run("audit_minute_totals")
			t1 := time.Now()
			run("audit_minutes")
			tTotals += t1.Sub(t0)
			tMinutes += time.Since(t1)
		}
		b.ReportMetric(float64(tTotals.Microseconds())/float64(b.N)/1000, "ms-totals")
		b.ReportMetric(float64(tMinutes.Microseconds())/float64(b.N)/1000, "ms-minutes-only")
		b.ReportMetric(float64(tMinutes)/float64(tTotals), "x-faster")
	})
}

// consolePages are the pages the console benchmarks load, with what each
// must show. Both stores have records 1 to 40,000 (or to their size): record
// 777 is 30 days old in the large one, a day old in the other; record n/2
// (HALF) is acme/needle.
func consolePages() []struct{ name, path, want string } {
	serialOf := func(i int) string { return fmt.Sprintf("%X", 1<<60+i) }
	return []struct{ name, path, want string }{
		{"overview", "/", "Joins per minute, last hour"},
		{"bots", "/bots", "bot-49"},
		{"clusters", "/clusters", "Trusted clusters"},
		{"actions", "/actions", "lock-form"},
		{"audit", "/audit", "acme/app-"},
		{"audit-page-2", "/audit?before=HALF", "acme/app-"},
		{"audit-refused", "/audit?result=refused", "refused"},
		{"audit-code", "/audit?code=bot_locked", "bot_locked"},
		{"audit-bot-refused", "/audit?bot=bot-7&result=refused", "bot-7"},
		{"audit-bot-refused-on", "/audit?bot=bot-7&result=refused&before=HALF", "bot-7"},
		{"audit-ref-bot-code", "/audit?claim=ref%3Drefs%2Fheads%2Fmain&bot=bot-7&code=bot_locked", "records match"},
		{"audit-claim", "/audit?claim=repository%3Dacme%2Fapp-777", "acme/app-777"},
		{"audit-claim-needle", "/audit?claim=repository%3Dacme%2Fneedle", "acme/needle"},
		{"audit-join-token-hour", "/audit?join_token=token-3&since=1h", "token-3"},
		{"audit-code-day", "/audit?code=bot_locked&event=join&since=24h", "bot_locked"},
		{"audit-until-day", "/audit?until=24h", "acme/app-"},
		{"audit-until-far", "/audit?until=UNTIL", "acme/app-"},
		{"audit-since-far", "/audit?since=UNTIL&result=refused", "refused"},
		{"audit-serial", "/audit?serial=tls:" + serialOf(777), "acme/app-777"},
		{"audit-serial-bare", "/audit?serial=777", "acme/app-777"},
		{"record", "/audit/777", "Audit record 777"},
	}
}

// benchConsolePages loads each of consolePages on onLarge and on onDay
// alternately and reports both and their ratio. UNTIL is a time half way
// through each store.
func benchConsolePages(b *testing.B, onLarge, onDay *consoleEnv) {
	for _, p := range consolePages() {
		b.Run(p.name, func(b *testing.B) {
			path := func(e *consoleEnv) string {
				back := time.Duration(e.records/2) * consoleRecordGap
				return strings.NewReplacer("HALF", strconv.Itoa(e.records/2), "UNTIL", url.QueryEscape(e.now.Add(-back).UTC().Format(time.RFC3339))).Replace(p.path)
			}
			largePath, dayPath := path(onLarge), path(onDay)
			onLarge.get(b, largePath, p.want)
			onDay.get(b, dayPath, p.want)
			var tLarge, tDay time.Duration
			var size int
			for b.Loop() {
				t0 := time.Now()
				size = onLarge.get(b, largePath, p.want)
				t1 := time.Now()
				onDay.get(b, dayPath, p.want)
				tLarge += t1.Sub(t0)
				tDay += time.Since(t1)
			}
			b.ReportMetric(float64(tLarge.Microseconds())/float64(b.N)/1000, "ms-large")
			b.ReportMetric(float64(tDay.Microseconds())/float64(b.N)/1000, "ms-small")
			b.ReportMetric(float64(tLarge)/float64(tDay), "x-small")
			b.ReportMetric(float64(size), "bytes")
		})
	}
}

// pageSize is the console's audit page.
const pageSize = 50

// leapfrogSQL is a zigzag intersection of terms' id lists in audit_terms,
// newest first, as one recursive query: each step seeks the next term's
// greatest id at or below the candidate; len(terms) equal results in a row
// are a match. It stops after limit matches or budget seeks, and returns
// the matches and the oldest id it reached.
func leapfrogSQL(terms []string, limit, budget int) (string, []any) {
	k := len(terms)
	args := make([]any, k)
	var pick strings.Builder
	pick.WriteString("CASE (t + 1) % " + strconv.Itoa(k))
	for i, t := range terms {
		args[i] = t
		fmt.Fprintf(&pick, " WHEN %d THEN $%d", i, i+1)
	}
	pick.WriteString(" END")
	run := "CASE WHEN x = prev THEN run + 1 ELSE 1 END"
	q := fmt.Sprintf(`WITH RECURSIVE z(step, x, t, prev, run, n) AS (
		SELECT 0, (SELECT max(audit_id) FROM audit_terms WHERE term = $1), 0, NULL, 0, 0
		UNION ALL
		SELECT step + 1,
			(SELECT max(audit_id) FROM audit_terms WHERE term = %[1]s AND audit_id <= CASE WHEN %[2]s = %[3]d THEN x - 1 ELSE x END),
			(t + 1) %% %[3]d, x, %[2]s, n + CASE WHEN %[2]s = %[3]d THEN 1 ELSE 0 END
		FROM z WHERE x IS NOT NULL AND step < %[4]d AND n < %[5]d)
	SELECT coalesce(sum(CASE WHEN %[2]s = %[3]d THEN 1 ELSE 0 END), 0), coalesce(min(x), 0) FROM z`, pick.String(), run, k, budget, limit)
	return q, args
}
