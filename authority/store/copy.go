package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// copiedTable is one table CopySQLiteToPostgres copies, with how each
// column's SQLite value becomes PostgreSQL's.
type copiedTable struct {
	name    string
	columns []string
	kinds   string // one letter a column: t text, b bytes, i integer, o boolean
}

// copiedTables is everything the SQLite store holds, in an order that
// satisfies no constraint in particular (there are no foreign keys).
var copiedTables = []copiedTable{
	{"cas", []string{"name", "pem"}, "tb"},
	{"resources", []string{"kind", "name", "body", "updated"}, "ttbi"},
	{"used_proofs", []string{"id", "expires"}, "ti"},
	{"audit", []string{"id", "time", "event", "allowed", "bot", "record"}, "iitott"},
	{"bot_generations", []string{"bot", "join_token", "chain", "generation", "last_keys", "updated"}, "tttiti"},
	{"bot_locks", []string{"bot", "time", "join_token", "reason"}, "titt"},
	{"admin_locks", []string{"admin", "time", "reason", "locked_by"}, "titt"},
	{"locks", []string{"kind", "target", "reason", "time", "expires", "locked_by"}, "tttiit"},
	{"unlocked_chains", []string{"chain", "bot", "join_token", "time"}, "ttti"},
	{"bot_instances", []string{"chain", "bot", "join_token", "first_join", "runner", "locked_at", "lock_reason"}, "tttitit"},
	{"keypair_bindings", []string{"join_token", "binding", "public_key", "sequence", "last_keys", "last_remote", "last_time",
		"locked_time", "locked_reason"}, "tttittiit"},
	{"keypair_challenges", []string{"nonce", "join_token", "requester", "expires", "used"}, "tttii"},
	{"leaf_tunnels", []string{"leaf", "connected", "last_seen"}, "toi"},
	{"ca_rotations", []string{"ca", "phase", "grace", "started", "updated", "new_signs_since"}, "ttiiii"},
	{"issued_certificates", []string{"ca", "serial", "not_after", "bot", "bot_instance", "join_token", "audit_id", "record"}, "ttitttit"},
}

// CopyReport counts the rows copied per table.
type CopyReport struct {
	Rows map[string]int64
}

// CopySQLiteToPostgres copies a whole SQLite store (dataDir/mbot.db) into
// the PostgreSQL database at dsn in one transaction: CAs, resources, replay
// records, renewal generations, bot instances, bot and admin locks, ended
// chains, bound_keypair state, leaf tunnels, CA rotations, issued certificates and the audit log (with its record ids). The database must hold no authority yet,
// so that a mistaken second run cannot mix two authorities. The authority
// must be stopped while it runs: joins recorded after the copy would be lost.
// sealCA, if set, rewrites each CA row's material as it is copied (mbot
// authority migrate-store seals the CA keys with it); an error from it
// stops the copy and nothing is written.
func CopySQLiteToPostgres(ctx context.Context, dataDir, dsn string, sealCA func(name string, material []byte) ([]byte, error)) (*CopyReport, error) {
	src, err := OpenSQLite(ctx, dataDir)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dst, err := OpenPostgres(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	from, to := src.(*sqlStore), dst.(*sqlStore)

	tx, err := to.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, to.wrap("starting the copy", err)
	}
	defer tx.Rollback()
	var held int
	if err := tx.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM cas) + (SELECT count(*) FROM resources) + (SELECT count(*) FROM audit)`).Scan(&held); err != nil {
		return nil, to.wrap("checking the destination", err)
	}
	if held > 0 {
		return nil, fmt.Errorf("the PostgreSQL database already holds an authority (%d CAs, resources and audit records); copy into an empty database", held)
	}
	report := &CopyReport{Rows: map[string]int64{}}
	for _, t := range copiedTables {
		var rewrite func(values []any) error
		if t.name == "cas" && sealCA != nil {
			rewrite = func(values []any) (err error) {
				name, _ := values[0].(string)
				material, _ := values[1].([]byte)
				values[1], err = sealCA(name, material)
				return err
			}
		}
		n, err := copyTable(ctx, from.read, tx, t, rewrite)
		if err != nil {
			return nil, fmt.Errorf("copying table %s: %w", t.name, err)
		}
		report.Rows[t.name] = n
	}
	var version int64
	if err := from.read.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'resources_version'`).Scan(&version); err != nil {
		return nil, fmt.Errorf("reading the resources version: %w", err)
	}
	// One more than the source's, so that nothing that read either takes them for the same.
	if _, err := tx.ExecContext(ctx, `UPDATE meta SET value = $1 WHERE key = 'resources_version'`, version+1); err != nil {
		return nil, err
	}
	// The audit ids were copied: new records continue after them.
	if _, err := tx.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('audit', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM audit), false)`); err != nil {
		return nil, fmt.Errorf("moving the audit id sequence: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, to.wrap("committing the copy", err)
	}
	return report, nil
}

func copyTable(ctx context.Context, from *sql.DB, to *sql.Tx, t copiedTable, rewrite func(values []any) error) (int64, error) {
	cols := strings.Join(t.columns, ", ")
	rows, err := from.QueryContext(ctx, `SELECT `+cols+` FROM `+t.name)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	marks := make([]string, len(t.columns))
	for i := range marks {
		marks[i] = fmt.Sprintf("$%d", i+1)
	}
	insert, err := to.PrepareContext(ctx, `INSERT INTO `+t.name+` (`+cols+`) VALUES (`+strings.Join(marks, ", ")+`)`)
	if err != nil {
		return 0, err
	}
	defer insert.Close()
	var n int64
	values := make([]any, len(t.columns))
	ptrs := make([]any, len(t.columns))
	for i := range values {
		ptrs[i] = &values[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		for i, kind := range t.kinds {
			if values[i], err = convertValue(values[i], kind); err != nil {
				return n, fmt.Errorf("column %s: %w", t.columns[i], err)
			}
		}
		if rewrite != nil {
			if err := rewrite(values); err != nil {
				return n, err
			}
		}
		if _, err := insert.ExecContext(ctx, values...); err != nil {
			return n, err
		}
		n++
	}
	return n, rows.Err()
}

// convertValue turns what SQLite returns for a column (its values carry
// their own types: a record written as bytes comes back as bytes) into the
// type of PostgreSQL's column.
func convertValue(v any, kind rune) (any, error) {
	switch kind {
	case 't':
		switch v := v.(type) {
		case string:
			return v, nil
		case []byte:
			return string(v), nil
		}
	case 'b':
		switch v := v.(type) {
		case []byte:
			return v, nil
		case string:
			return []byte(v), nil
		}
	case 'i':
		if v, ok := v.(int64); ok {
			return v, nil
		}
	case 'o':
		switch v := v.(type) {
		case int64:
			return v != 0, nil
		case bool:
			return v, nil
		}
	}
	return nil, fmt.Errorf("unexpected %T value", v)
}
