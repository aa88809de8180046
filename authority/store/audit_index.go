package store

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The audit log is read by the console (mbot console) and mbot audit with
// filters on fields that live in the record's JSON: join token, method,
// refusal code, claims, serials. Two tables, kept by a trigger on every
// insert into audit whatever path wrote it, make those reads cost what
// they return instead of a scan of the log:
//
//   - audit_terms holds one row per (term, record): "bot=deployer",
//     "join_token=github-main", "method=github", "code=rule_mismatch",
//     "result=refused", "event=join", "claim:repository=acme/app",
//     "serial=tls:3F2A...". A filter reads the records of its most
//     selective term newest first along the primary key (keyset paging by
//     id) and checks the others by key.
//   - audit_minutes counts records per minute, event, outcome, refusal
//     code and project (the first identifying claim: repository,
//     project_path, ...), for the overview's top projects; and
//     audit_minute_totals the same without the project, for its charts
//     and refusal codes: a minute of joins from a thousand repositories is
//     a thousand rows of the first and two or three of the second, so the
//     charts of the last 24 h read a few thousand rows whatever the log
//     holds. On PostgreSQL each backend counts in rows of its own (shard),
//     so that replicas and committers never wait for each other's counters.
//
// PruneAudit prunes them with the log.

// auditProject is the SQL expression of a record's project, given how to
// read a claim: its first identifying claim as NAME=VALUE (as the audit
// filter's claim takes it). sub is left out: it differs per ref and would
// make every ref a project.
func auditProject(get func(key string) string) string {
	keys := []string{"repository", "project_path", "vcs_origin", "project_id", "workspace_name", "space_id", "aws_arn", "service_account"}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = "'" + k + "=' || " + get(k)
	}
	return "coalesce(" + strings.Join(parts, ", ") + ", '')"
}

// sqliteAuditTerms are the terms of row r (new in the trigger, audit's
// alias a in the backfill), each a SELECT of (term, id) with what it adds
// to the FROM clause; NULL terms (absent fields) are dropped.
func sqliteAuditTerms(r string) []string { return sqliteAuditTermsFrom(r, "audit") }

// sqliteAuditTermsFrom is sqliteAuditTerms of the rows of table (audit, or
// a subquery of it) as r.
func sqliteAuditTermsFrom(r, table string) []string {
	from, list := "", ""
	if r != "new" {
		from, list = " FROM "+table+" "+r, table+" "+r+", "
	}
	rec := r + ".record"
	return []string{
		fmt.Sprintf(`SELECT 'bot=' || %[1]s.bot, %[1]s.id%[2]s WHERE %[1]s.bot <> ''`, r, from),
		fmt.Sprintf(`SELECT 'event=' || %[1]s.event, %[1]s.id%[2]s`, r, from),
		fmt.Sprintf(`SELECT CASE WHEN %[1]s.allowed THEN 'result=admitted' ELSE 'result=refused' END, %[1]s.id%[2]s`, r, from),
		fmt.Sprintf(`SELECT 'join_token=' || json_extract(%[3]s, '$.join_token'), %[1]s.id%[2]s WHERE json_extract(%[3]s, '$.join_token') IS NOT NULL`, r, from, rec),
		fmt.Sprintf(`SELECT 'method=' || json_extract(%[3]s, '$.method'), %[1]s.id%[2]s WHERE json_extract(%[3]s, '$.method') IS NOT NULL`, r, from, rec),
		fmt.Sprintf(`SELECT 'code=' || json_extract(%[3]s, '$.code'), %[1]s.id%[2]s WHERE json_extract(%[3]s, '$.code') IS NOT NULL`, r, from, rec),
		fmt.Sprintf(`SELECT 'claim:' || j.key || '=' || j.value, %[1]s.id FROM %[2]sjson_each(%[3]s, '$.claims') j`, r, list, rec),
		fmt.Sprintf(`SELECT 'serial=' || j.value, %[1]s.id FROM %[2]sjson_each(%[3]s, '$.serials') j`, r, list, rec),
	}
}

func sqliteAuditProject(r string) string {
	return auditProject(func(k string) string { return fmt.Sprintf(`json_extract(%s.record, '$.claims.%s')`, r, k) })
}

const sqliteAuditIndexSchema = `
CREATE TABLE IF NOT EXISTS audit_terms (term TEXT NOT NULL, audit_id INTEGER NOT NULL, PRIMARY KEY (term, audit_id)) WITHOUT ROWID;
DROP INDEX IF EXISTS audit_terms_id;
CREATE TABLE IF NOT EXISTS audit_minutes (minute INTEGER NOT NULL, event TEXT NOT NULL, allowed INTEGER NOT NULL, code TEXT NOT NULL,
	project TEXT NOT NULL, shard INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (minute, event, allowed, code, project, shard)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS issued_certificates_audit ON issued_certificates (audit_id);
CREATE TABLE IF NOT EXISTS audit_minute_totals (minute INTEGER NOT NULL, event TEXT NOT NULL, allowed INTEGER NOT NULL, code TEXT NOT NULL,
	shard INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (minute, event, allowed, code, shard)) WITHOUT ROWID;
`

// sqliteAuditTrigger keeps both tables on every insert into audit.
func sqliteAuditTrigger() string {
	var b strings.Builder
	b.WriteString("CREATE TRIGGER audit_indexed AFTER INSERT ON audit BEGIN\n")
	for _, t := range sqliteAuditTerms("new") {
		b.WriteString("\tINSERT OR IGNORE INTO audit_terms (term, audit_id) " + t + ";\n")
	}
	return b.String() + `
	INSERT INTO audit_minutes (minute, event, allowed, code, project, shard, n)
		VALUES (new.time / 60000000000, new.event, new.allowed, coalesce(json_extract(new.record, '$.code'), ''), ` + sqliteAuditProject("new") + `, 0, 1)
		ON CONFLICT (minute, event, allowed, code, project, shard) DO UPDATE SET n = n + 1;
	INSERT INTO audit_minute_totals (minute, event, allowed, code, shard, n)
		VALUES (new.time / 60000000000, new.event, new.allowed, coalesce(json_extract(new.record, '$.code'), ''), 0, 1)
		ON CONFLICT (minute, event, allowed, code, shard) DO UPDATE SET n = n + 1;
END;`
}

// backfillMinuteTotals counts audit_minute_totals from audit_minutes.
const backfillMinuteTotals = `INSERT INTO audit_minute_totals (minute, event, allowed, code, shard, n)
	SELECT minute, event, allowed, code, 0, sum(n) FROM audit_minutes GROUP BY minute, event, allowed, code`

// indexSQLiteAudit creates the trigger, once, and indexes the records
// written before it, in one transaction: another process sharing data_dir
// writes either before (and is backfilled) or after (and is indexed by the
// trigger). A trigger from before audit_minute_totals is replaced, and the
// totals counted from audit_minutes.
func indexSQLiteAudit(ctx context.Context, db *sql.DB) error {
	const triggerSQL = `SELECT coalesce((SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'audit_indexed'), '')`
	current := func(q interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}) (exists, upToDate bool, err error) {
		var trigger string
		err = q.QueryRowContext(ctx, triggerSQL).Scan(&trigger)
		return trigger != "", strings.Contains(trigger, "audit_minute_totals"), err
	}
	if _, ok, err := current(db); err != nil || ok {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	exists, ok, err := current(tx)
	if err != nil || ok {
		return err
	}
	var steps []string
	if exists {
		steps = []string{`DROP TRIGGER audit_indexed`, sqliteAuditTrigger(), `DELETE FROM audit_minute_totals`, backfillMinuteTotals}
	} else {
		steps = []string{sqliteAuditTrigger()}
		for _, t := range sqliteAuditTerms("a") {
			steps = append(steps, "INSERT OR IGNORE INTO audit_terms (term, audit_id) "+t)
		}
		steps = append(steps, `INSERT INTO audit_minutes (minute, event, allowed, code, project, shard, n)
			SELECT a.time / 60000000000, a.event, a.allowed, coalesce(json_extract(a.record, '$.code'), ''), `+sqliteAuditProject("a")+`, 0, count(*)
			FROM audit a GROUP BY 1, 2, 3, 4, 5 ON CONFLICT DO NOTHING`, `DELETE FROM audit_minute_totals`, backfillMinuteTotals)
	}
	for _, q := range steps {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("indexing the audit log: %w", err)
		}
	}
	return tx.Commit()
}

// The terms are found by their primary key only. An index by record
// (audit_terms_id, until schema version 6) was a second B-tree insert per
// term, a fifth of a join's record, for pruning alone: pruning computes
// the terms of the records it deletes again, from the records, and
// deletes them by key.

// sqlitePruneTerms deletes the terms of the records before $1. The
// compound query is wrapped in a SELECT so that SQLite looks each pair up
// by the primary key rather than scanning audit_terms against it.
func sqlitePruneTerms() string {
	return "DELETE FROM audit_terms WHERE (term, audit_id) IN (SELECT * FROM (" +
		strings.Join(sqliteAuditTermsFrom("a", "(SELECT id, bot, event, allowed, record FROM audit WHERE time < $1)"), " UNION ALL ") + "))"
}

// pgPruneTerms deletes the terms of the records before $1.
func pgPruneTerms() string {
	return `DELETE FROM audit_terms x USING (SELECT t.term, a.id FROM audit a, LATERAL (SELECT a.record::jsonb AS r) j,
	LATERAL (` + pgAuditTerms("a", "j.r") + `) t WHERE a.time < $1 AND t.term IS NOT NULL) o WHERE x.term = o.term AND x.audit_id = o.id`
}

// pgDropTermsByRecordMigration is PostgreSQL's schema version 6 (see
// sqlitePruneTerms).
const pgDropTermsByRecordMigration = `DROP INDEX IF EXISTS audit_terms_id;
`

// pgAuditProject is a record's project in PostgreSQL's trigger, r its jsonb.
func pgAuditProject() string {
	return auditProject(func(k string) string { return fmt.Sprintf(`(r->'claims'->>'%s')`, k) })
}

// pgAuditTerms are the terms of audit row row whose record (jsonb) is r.
func pgAuditTerms(row, r string) string {
	return fmt.Sprintf(`SELECT 'bot=' || %[1]s.bot AS term WHERE %[1]s.bot <> ''
		UNION ALL SELECT 'event=' || %[1]s.event
		UNION ALL SELECT CASE WHEN %[1]s.allowed THEN 'result=admitted' ELSE 'result=refused' END
		UNION ALL SELECT 'join_token=' || (%[2]s->>'join_token')
		UNION ALL SELECT 'method=' || (%[2]s->>'method')
		UNION ALL SELECT 'code=' || (%[2]s->>'code')
		UNION ALL SELECT 'claim:' || key || '=' || value FROM jsonb_each_text(coalesce(%[2]s->'claims', '{}'::jsonb))
		UNION ALL SELECT 'serial=' || value FROM jsonb_array_elements_text(coalesce(%[2]s->'serials', '[]'::jsonb))`, row, r)
}

// pgAuditIndexFunction is the trigger function's text, the totals counted
// from version 5 on.
func pgAuditIndexFunction(totals bool) string {
	f := `CREATE FUNCTION audit_indexed() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE r jsonb := NEW.record::jsonb;
BEGIN
	INSERT INTO audit_terms (term, audit_id) SELECT t.term, NEW.id FROM (` + pgAuditTerms("NEW", "r") + `) t
		WHERE t.term IS NOT NULL ON CONFLICT DO NOTHING;
	INSERT INTO audit_minutes (minute, event, allowed, code, project, shard, n)
		VALUES (NEW.time / 60000000000, NEW.event, NEW.allowed, coalesce(r->>'code', ''), ` + pgAuditProject() + `, pg_backend_pid(), 1)
		ON CONFLICT (minute, event, allowed, code, project, shard) DO UPDATE SET n = audit_minutes.n + 1;
`
	if totals {
		f = strings.Replace(f, "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1) + `	INSERT INTO audit_minute_totals (minute, event, allowed, code, shard, n)
		VALUES (NEW.time / 60000000000, NEW.event, NEW.allowed, coalesce(r->>'code', ''), pg_backend_pid(), 1)
		ON CONFLICT (minute, event, allowed, code, shard) DO UPDATE SET n = audit_minute_totals.n + 1;
`
	}
	return f + `	RETURN NULL;
END
$fn$;
`
}

// pgAuditIndexMigration is PostgreSQL's schema version 4: the tables, the
// trigger, and the records written before it.
func pgAuditIndexMigration() string {
	return `
CREATE TABLE audit_terms (term TEXT NOT NULL, audit_id BIGINT NOT NULL, PRIMARY KEY (term, audit_id));
CREATE INDEX audit_terms_id ON audit_terms (audit_id);
CREATE TABLE audit_minutes (minute BIGINT NOT NULL, event TEXT NOT NULL, allowed BOOLEAN NOT NULL, code TEXT NOT NULL,
	project TEXT NOT NULL, shard INTEGER NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (minute, event, allowed, code, project, shard));
CREATE INDEX issued_certificates_audit ON issued_certificates (audit_id);
` + pgAuditIndexFunction(false) + `CREATE TRIGGER audit_indexed AFTER INSERT ON audit FOR EACH ROW EXECUTE FUNCTION audit_indexed();
INSERT INTO audit_terms (term, audit_id) SELECT t.term, a.id FROM audit a, LATERAL (SELECT a.record::jsonb AS r) j,
	LATERAL (` + pgAuditTerms("a", "j.r") + `) t WHERE t.term IS NOT NULL ON CONFLICT DO NOTHING;
INSERT INTO audit_minutes (minute, event, allowed, code, project, shard, n)
	SELECT a.time / 60000000000, a.event, a.allowed, coalesce(r->>'code', ''), ` + pgAuditProject() + `, 0, count(*)
	FROM audit a, LATERAL (SELECT a.record::jsonb AS r) j GROUP BY 1, 2, 3, 4, 5;
`
}

// pgAuditTotalsMigration is PostgreSQL's schema version 5: the counts
// without the project, kept by the trigger from now on and counted from
// audit_minutes for what came before. Writers wait for it (the lock), so
// that no record is counted by the old trigger after the backfill read.
func pgAuditTotalsMigration() string {
	return `
LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE audit_minute_totals (minute BIGINT NOT NULL, event TEXT NOT NULL, allowed BOOLEAN NOT NULL, code TEXT NOT NULL,
	shard INTEGER NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (minute, event, allowed, code, shard));
` + pgAuditIndexFunction(true) + backfillMinuteTotals + ";\n"
}

// auditTerms are f's conditions as audit_terms terms, the most selective
// first as a rule (the query reads the first along its index; ScanAudit
// picks the rarest near its page, rarestAuditTerm); alternatives are
// terms of which a record needs one (a bare serial: ssh: or tls:).
func auditTerms(f AuditFilter) (terms []string, alternatives []string) {
	if f.Serial != "" {
		if strings.Contains(f.Serial, ":") {
			terms = append(terms, "serial="+f.Serial)
		} else {
			alternatives = []string{"serial=ssh:" + f.Serial, "serial=tls:" + f.Serial}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(f.Claims)) {
		terms = append(terms, "claim:"+k+"="+f.Claims[k])
	}
	for _, t := range [][2]string{{"join_token", f.JoinToken}, {"bot", f.Bot}, {"code", f.Code}, {"method", f.Method}, {"event", f.Event}} {
		if t[1] != "" {
			terms = append(terms, t[0]+"="+t[1])
		}
	}
	switch {
	case f.DeniedOnly:
		terms = append(terms, "result=refused")
	case f.AdmittedOnly:
		terms = append(terms, "result=admitted")
	}
	return terms, alternatives
}

// auditTimeSlack bounds how far the order of two records' ids and the
// order of their times may disagree: a record is stamped when it is
// queued and gets its id when its batch is inserted (milliseconds later),
// and replicas on one PostgreSQL stamp with their own clocks. A time
// bound becomes an id bound read from the time index within this much of
// the bound (auditIDBound), so that it costs the records of one slack, not
// those between the bound and either end of the log; a record stamped
// more than this much out of order near a bound could be left out of it.
const auditTimeSlack = time.Minute

// auditIDBound is the SQL of the least id of a record at or after t
// (since) or the greatest id of one before t (until), or NULL if there is
// none. The time index finds the first record past the bound by time
// (one seek), and the ids of the records within auditTimeSlack of it
// settle the id: if ids and times disagree by less than the slack, no
// record on the bound's side has an id beyond it. id + 0, not id: both
// engines would read min(id) or max(id) along the ids from an end of the
// log until a record is in the time range.
func auditIDBound(since bool, t, slack string) string {
	if since {
		return "(SELECT min(id + 0) FROM audit WHERE time >= " + t + " AND time < (SELECT min(time) FROM audit WHERE time >= " + t + ") + " + slack + ")"
	}
	return "(SELECT max(id + 0) FROM audit WHERE time < " + t + " AND time > (SELECT max(time) FROM audit WHERE time < " + t + ") - " + slack + ")"
}

// listAuditQuery is ListAudit's query for f: it walks the record ids of
// f's first term newest first (its alternatives', or the audit table's
// ids when f has no term), checks the other terms by key, reads the
// matching records and stops after f.Limit. Time bounds become id bounds
// (auditIDBound) and are checked on the record too, so that they are
// exact. With f.Scan, the walk reads at most that many ids; scanned, run
// with the first nScanned args, counts the ids of that window and one more
// and returns the window's oldest id and its time: where a short page
// stopped looking, if anything older is left.
//
// drive, if one of f's terms, drives the walk instead of the first.
func (s *sqlStore) listAuditQuery(f AuditFilter, drive string) (query string, args []any, scanned string, nScanned int) {
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	terms, alternatives := auditTerms(f)
	if i := slices.Index(terms, drive); i > 0 {
		terms = slices.Concat([]string{drive}, terms[:i], terms[i+1:])
	}
	driver, idCol := "SELECT id FROM audit WHERE id > 0", "id"
	switch {
	case len(alternatives) > 0:
		ph := make([]string, len(alternatives))
		for i, t := range alternatives {
			ph[i] = arg(t)
		}
		driver, idCol = "SELECT audit_id AS id FROM audit_terms WHERE term IN ("+strings.Join(ph, ", ")+")", "audit_id"
	case len(terms) > 0:
		driver, idCol = "SELECT audit_id AS id FROM audit_terms WHERE term = "+arg(terms[0]), "audit_id"
		terms = terms[1:]
	}
	// The id range is read once (WITH r, and WITH win for the window) and
	// bounds every term's ids, not only the driving one's: PostgreSQL may
	// merge-join the terms, which reads each along the range it is given.
	var with []string
	var before, since, until string
	if f.BeforeID > 0 {
		before = arg(f.BeforeID)
	}
	if !f.Since.IsZero() || !f.Until.IsZero() {
		slack := arg(int64(auditTimeSlack))
		lo, hi := "0", "9223372036854775807"
		if !f.Since.IsZero() {
			since = arg(f.Since.UnixNano())
			lo = "coalesce(" + auditIDBound(true, since, slack) + ", 9223372036854775807)"
		}
		if !f.Until.IsZero() {
			until = arg(f.Until.UnixNano())
			hi = "coalesce(" + auditIDBound(false, until, slack) + ", 0)"
		}
		with = append(with, "r AS (SELECT "+lo+" AS lo, "+hi+" AS hi)")
	}
	window := false
	idBounds := func(col string) string {
		var c string
		if before != "" {
			c += " AND " + col + " < " + before
		}
		if since != "" || until != "" {
			c += " AND " + col + " >= (SELECT lo FROM r) AND " + col + " <= (SELECT hi FROM r)"
		}
		if window {
			c += " AND " + col + " >= coalesce((SELECT lo FROM win), 0)"
		}
		return c
	}
	if f.Scan > 0 {
		// The window is an id bound, the oldest of its Scan newest ids
		// (read from the index alone), so that the page still stops at
		// f.Limit matches in id order instead of reading all of the window.
		newest := func(n int) string {
			return driver + idBounds(idCol) + " ORDER BY " + idCol + fmt.Sprintf(" DESC LIMIT %d", n)
		}
		with = append(with, "win AS (SELECT min(id) AS lo FROM ("+newest(f.Scan)+") d)")
		nScanned = len(args)
		// One entry past the window says whether anything older is left.
		scanned = "WITH " + strings.Join(with, ", ") + " SELECT (SELECT count(*) FROM (" + newest(f.Scan+1) + ") e), w.lo, a.time" +
			" FROM win w LEFT JOIN audit a ON a.id = w.lo"
		window = true
	}
	driver += idBounds(idCol)
	// The other terms are checked by key before the record is read (the
	// CROSS JOINs keep SQLite in this order): an id that fails them costs
	// an index probe, not a read of its record.
	from := "(" + driver + ") w"
	var where []string
	for i, t := range terms {
		alias := fmt.Sprintf("t%d", i+1)
		from += " CROSS JOIN audit_terms " + alias
		where = append(where, alias+".term = "+arg(t)+idBounds(alias+".audit_id"), alias+".audit_id = w.id")
	}
	from += " CROSS JOIN audit a"
	where = append(where, "a.id = w.id")
	if since != "" {
		where = append(where, "a.time >= "+since)
	}
	if until != "" {
		where = append(where, "a.time < "+until)
	}
	if f.Serial != "" {
		_, bare, prefixed := strings.Cut(f.Serial, ":")
		if !prefixed {
			bare = f.Serial
		}
		// Narrowed by the terms, matched exactly by the caller.
		where = append(where, "a.record LIKE "+arg(`%:`+bare+`"%`))
	}
	if len(with) > 0 {
		query = "WITH " + strings.Join(with, ", ") + " "
	}
	query += "SELECT a.id, a.record FROM " + from + " WHERE " + strings.Join(where, " AND ") + " ORDER BY w.id DESC"
	if f.Limit > 0 {
		query += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	return query, args, scanned, nScanned
}

// rarestAuditTerm is the term of f whose newest f.Scan ids (older than
// f.BeforeID) reach furthest back: the one whose window, driving the
// read, searches most of the log. The fixed order of auditTerms puts
// claims first, and a claim every record has (ref=refs/heads/main) would
// drive a window of the last few hours. Each term costs a read of its
// window's ids in the index alone. Empty when f has fewer than two terms.
func (s *sqlStore) rarestAuditTerm(ctx context.Context, f AuditFilter) (string, error) {
	terms, alternatives := auditTerms(f)
	if len(terms) < 2 || len(alternatives) > 0 || f.Scan <= 0 {
		return "", nil
	}
	q := fmt.Sprintf(`SELECT count(*), coalesce(min(audit_id), 0) FROM (SELECT audit_id FROM audit_terms WHERE term = $1 AND audit_id < $2
		ORDER BY audit_id DESC LIMIT %d) d`, f.Scan)
	before := f.BeforeID
	if before <= 0 {
		before = 1<<63 - 1
	}
	best, bestN, bestFloor := "", int64(0), int64(0)
	for _, t := range terms {
		var n, floor int64
		if err := s.read.QueryRowContext(ctx, q, t, before).Scan(&n, &floor); err != nil {
			return "", err
		}
		// Fewer than a window left: the whole rest of the term is one page.
		if best == "" || (n < int64(f.Scan) && n < bestN) || (bestN == int64(f.Scan) && n == int64(f.Scan) && floor > 0 && floor < bestFloor) {
			best, bestN, bestFloor = t, n, floor
		}
	}
	return best, nil
}

// AuditSummary is what the console's overview shows of a span of the
// audit log, read from audit_minute_totals and audit_minutes.
type AuditSummary struct {
	Since, Until time.Time
	Step         time.Duration
	// Buckets are the span's steps, oldest first, each with its admitted
	// and refused records of the event.
	Buckets []AuditBucket
	// Codes are the refusals by code, Projects the records by project,
	// each the most first.
	Codes             []NamedCount
	Projects          []NamedCount
	Admitted, Refused int64
}

// AuditBucket is one step of an AuditSummary.
type AuditBucket struct {
	Start             time.Time
	Admitted, Refused int64
}

// NamedCount is a count of records under a name (a code, a project).
type NamedCount struct {
	Name string
	N    int64
}

// SummaryFilter selects an AuditSummary.
type SummaryFilter struct {
	Since, Until time.Time
	Step         time.Duration
	// Event is the audit event counted ("join").
	Event string
	// Top bounds Codes and Projects (default 10).
	Top int
}

const nanosPerMinute = int64(time.Minute)

func (s *sqlStore) AuditSummary(ctx context.Context, f SummaryFilter) (*AuditSummary, error) {
	if f.Step < time.Minute {
		f.Step = time.Minute
	}
	if f.Top <= 0 {
		f.Top = 10
	}
	if f.Until.IsZero() {
		f.Until = time.Now()
	}
	step := int64(f.Step / time.Minute)
	first := f.Since.UnixNano() / nanosPerMinute
	first -= first % step
	last := (f.Until.UnixNano() + nanosPerMinute - 1) / nanosPerMinute
	sum := &AuditSummary{Since: time.Unix(0, first*nanosPerMinute).UTC(), Until: f.Until, Step: f.Step}
	for m := first; m < last; m += step {
		sum.Buckets = append(sum.Buckets, AuditBucket{Start: time.Unix(0, m*nanosPerMinute).UTC()})
	}
	err := func() error {
		rows, err := s.read.QueryContext(ctx, `SELECT minute, allowed, sum(n) FROM audit_minute_totals
			WHERE minute >= $1 AND minute < $2 AND event = $3 GROUP BY minute, allowed`, first, last, f.Event)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				minute, n int64
				allowed   bool
			)
			if err := rows.Scan(&minute, &allowed, &n); err != nil {
				return err
			}
			i := int((minute - first) / step)
			if i < 0 || i >= len(sum.Buckets) {
				continue
			}
			if allowed {
				sum.Buckets[i].Admitted += n
				sum.Admitted += n
			} else {
				sum.Buckets[i].Refused += n
				sum.Refused += n
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		top := func(q string) ([]NamedCount, error) {
			rows, err := s.read.QueryContext(ctx, q, first, last, f.Event, f.Top)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			var out []NamedCount
			for rows.Next() {
				var c NamedCount
				if err := rows.Scan(&c.Name, &c.N); err != nil {
					return nil, err
				}
				out = append(out, c)
			}
			return out, rows.Err()
		}
		if sum.Codes, err = top(`SELECT code, sum(n) FROM audit_minute_totals WHERE minute >= $1 AND minute < $2 AND event = $3 AND NOT allowed
			GROUP BY code ORDER BY 2 DESC, 1 LIMIT $4`); err != nil {
			return err
		}
		sum.Projects, err = top(`SELECT project, sum(n) FROM audit_minutes WHERE minute >= $1 AND minute < $2 AND event = $3 AND project <> ''
			GROUP BY project ORDER BY 2 DESC, 1 LIMIT $4`)
		return err
	}()
	if err != nil {
		return nil, s.wrap("summarising the audit log", err)
	}
	return sum, nil
}
