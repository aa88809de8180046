// Package store keeps the authority's state: CA material, resources, the
// proofs already used (for replay refusal) and the audit log. The embedded
// default is SQLite (modernc.org/sqlite, pure Go) under data_dir.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// ErrNotFound is returned when a CA or resource does not exist.
var ErrNotFound = errors.New("not found")

// ErrReplay is returned when a proof was already used.
var ErrReplay = errors.New("proof already used")

// AuditEvent is one record of the audit log. It never holds a token, key or
// certificate body: only names, identifying claims and serial numbers, each
// within the bounds of bound.go.
type AuditEvent struct {
	ID        int64             `json:"id"`
	Time      time.Time         `json:"time"`
	Event     string            `json:"event"` // join, sign, resource
	Allowed   bool              `json:"allowed"`
	Code      string            `json:"code,omitempty"`
	Message   string            `json:"message,omitempty"`
	Bot       string            `json:"bot,omitempty"`
	JoinToken string            `json:"join_token,omitempty"`
	Method    string            `json:"method,omitempty"`
	Claims    map[string]string `json:"claims,omitempty"`
	// ClaimsUnverified marks claims read from a refused proof whose
	// signature, issuer or lifetime did not verify: who presented it, not
	// who it proves.
	ClaimsUnverified bool     `json:"claims_unverified,omitempty"`
	Roles            []string `json:"roles,omitempty"`
	// Outputs says, per output, its type and what it was granted.
	Outputs  []string  `json:"outputs,omitempty"`
	Serials  []string  `json:"serials,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	Remote   string    `json:"remote,omitempty"`
	// TruncatedBytes is how much Bound cut from values the caller chose.
	TruncatedBytes int `json:"truncated_bytes,omitempty"`
}

// StoredResource is a resource document as kept in the store.
type StoredResource struct {
	Kind, Name string
	Body       []byte
}

// AuditFilter narrows ListAudit.
type AuditFilter struct {
	Since      time.Time
	Bot        string
	DeniedOnly bool
	Limit      int
}

// Store is the authority's persistent state.
type Store struct {
	write *sql.DB // one connection: SQLite has one writer at a time anyway
	read  *sql.DB
	// useProof and addAudit are prepared once: SQLite parses a statement
	// in about the time it takes to run it.
	useProof, addAudit *sql.Stmt
	// writes feeds the group committer (see commit.go).
	writes chan *pendingWrite
	done   chan struct{}
}

const schema = `
CREATE TABLE IF NOT EXISTS cas (name TEXT PRIMARY KEY, pem BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('resources_version', 0);
CREATE TABLE IF NOT EXISTS resources (kind TEXT NOT NULL, name TEXT NOT NULL, body BLOB NOT NULL,
	updated INTEGER NOT NULL, PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS used_proofs (id TEXT PRIMARY KEY, expires INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS used_proofs_expires ON used_proofs (expires);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL,
	event TEXT NOT NULL, allowed INTEGER NOT NULL, bot TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE TABLE IF NOT EXISTS bot_generations (bot TEXT NOT NULL, join_token TEXT NOT NULL, chain TEXT NOT NULL,
	generation INTEGER NOT NULL, last_keys TEXT NOT NULL, updated INTEGER NOT NULL,
	PRIMARY KEY (bot, join_token)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bot_locks (bot TEXT PRIMARY KEY, time INTEGER NOT NULL, join_token TEXT NOT NULL,
	reason TEXT NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS bot_removed AFTER DELETE ON resources WHEN old.kind = 'bot' BEGIN
	DELETE FROM bot_locks WHERE bot = old.name;
	DELETE FROM bot_generations WHERE bot = old.name;
END;
CREATE TRIGGER IF NOT EXISTS join_token_removed AFTER DELETE ON resources WHEN old.kind = 'join_token' BEGIN
	DELETE FROM bot_generations WHERE join_token = old.name;
END;
CREATE TABLE IF NOT EXISTS admin_locks (admin TEXT PRIMARY KEY, time INTEGER NOT NULL, reason TEXT NOT NULL,
	locked_by TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unlocked_chains (chain TEXT PRIMARY KEY, bot TEXT NOT NULL, join_token TEXT NOT NULL,
	time INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS bot_removed_unlocked_chains AFTER DELETE ON resources WHEN old.kind = 'bot' BEGIN
	DELETE FROM unlocked_chains WHERE bot = old.name;
END;
CREATE TABLE IF NOT EXISTS keypair_bindings (join_token TEXT PRIMARY KEY, binding TEXT NOT NULL, public_key TEXT NOT NULL,
	sequence INTEGER NOT NULL, last_keys TEXT NOT NULL, last_remote TEXT NOT NULL, last_time INTEGER NOT NULL,
	locked_time INTEGER NOT NULL, locked_reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keypair_challenges (nonce TEXT PRIMARY KEY, join_token TEXT NOT NULL, requester TEXT NOT NULL,
	expires INTEGER NOT NULL, used INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS keypair_challenges_token ON keypair_challenges (join_token, requester, expires);
CREATE TRIGGER IF NOT EXISTS join_token_removed_keypair AFTER DELETE ON resources WHEN old.kind = 'join_token' BEGIN
	DELETE FROM keypair_bindings WHERE join_token = old.name;
	DELETE FROM keypair_challenges WHERE join_token = old.name;
END;
CREATE TABLE IF NOT EXISTS leaf_tunnels (leaf TEXT PRIMARY KEY, connected INTEGER NOT NULL, last_seen INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS join_token_removed_unlocked_chains AFTER DELETE ON resources WHEN old.kind = 'join_token' BEGIN
	DELETE FROM unlocked_chains WHERE join_token = old.name;
END;
CREATE TABLE IF NOT EXISTS bot_instances (chain TEXT PRIMARY KEY, bot TEXT NOT NULL, join_token TEXT NOT NULL,
	first_join INTEGER NOT NULL, runner TEXT NOT NULL, locked_at INTEGER NOT NULL, lock_reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS bot_instances_bot ON bot_instances (bot, join_token);
CREATE INDEX IF NOT EXISTS bot_generations_chain ON bot_generations (chain);
CREATE TRIGGER IF NOT EXISTS bot_removed_instances AFTER DELETE ON resources WHEN old.kind = 'bot' BEGIN
	DELETE FROM bot_instances WHERE bot = old.name;
END;
CREATE TRIGGER IF NOT EXISTS join_token_removed_instances AFTER DELETE ON resources WHEN old.kind = 'join_token' BEGIN
	DELETE FROM bot_instances WHERE join_token = old.name;
END;
`

// FileName is the store's database file in data_dir.
const FileName = "mbot.db"

// OpenSQLite opens (creating if needed) the database at dataDir/mbot.db.
func OpenSQLite(ctx context.Context, dataDir string) (*Store, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data_dir %s: %w", dataDir, err)
	}
	path := filepath.Join(dataDir, FileName)
	// Create the database 0600 before SQLite opens it: SQLite gives the -wal
	// and -shm files, which hold recent writes (CA keys among them), the mode
	// of the database file.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	f.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, err
	}
	// WAL lets readers run beside the writer; synchronous=NORMAL keeps each
	// commit durable against a process crash without an fsync per join.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)"
	write, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	write.SetMaxOpenConns(1)
	if _, err := write.ExecContext(ctx, schema+caRotationsSchema); err != nil {
		write.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	read, err := sql.Open("sqlite", dsn+"&_pragma=query_only(1)")
	if err != nil {
		write.Close()
		return nil, err
	}
	read.SetMaxOpenConns(4)
	st := &Store{write: write, read: read, writes: make(chan *pendingWrite, 1024), done: make(chan struct{})}
	if st.useProof, err = write.PrepareContext(ctx, `INSERT INTO used_proofs (id, expires) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`); err == nil {
		st.addAudit, err = write.PrepareContext(ctx, `INSERT INTO audit (time, event, allowed, bot, record) VALUES (?, ?, ?, ?, ?)`)
	}
	if err != nil {
		read.Close()
		write.Close()
		return nil, err
	}
	go st.commitLoop()
	return st, nil
}

// Close releases the database.
func (s *Store) Close() error {
	close(s.writes)
	<-s.done
	return errors.Join(s.read.Close(), s.write.Close())
}

// CA returns the PEM material stored under name, or ErrNotFound.
func (s *Store) CA(ctx context.Context, name string) ([]byte, error) {
	var pem []byte
	err := s.read.QueryRowContext(ctx, `SELECT pem FROM cas WHERE name = ?`, name).Scan(&pem)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return pem, err
}

// CreateCA stores pem under name unless a CA of that name exists, and
// returns whichever is stored, so that concurrent first starts agree.
func (s *Store) CreateCA(ctx context.Context, name string, pem []byte) ([]byte, error) {
	if _, err := s.write.ExecContext(ctx, `INSERT INTO cas (name, pem) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`, name, pem); err != nil {
		return nil, err
	}
	var stored []byte
	err := s.write.QueryRowContext(ctx, `SELECT pem FROM cas WHERE name = ?`, name).Scan(&stored)
	return stored, err
}

// PutResources creates or replaces resources in one transaction.
func (s *Store) PutResources(ctx context.Context, rs []StoredResource) error {
	return s.changeResources(ctx, func(tx *sql.Tx) error {
		now := time.Now().UnixNano()
		for _, r := range rs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO resources (kind, name, body, updated) VALUES (?, ?, ?, ?)
				ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body, updated = excluded.updated`,
				r.Kind, r.Name, r.Body, now); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteResource removes a resource, or returns ErrNotFound.
func (s *Store) DeleteResource(ctx context.Context, kind, name string) error {
	return s.changeResources(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM resources WHERE kind = ? AND name = ?`, kind, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// changeResources runs change and bumps the resources version in one
// transaction, so that every authority process sharing the store notices.
func (s *Store) changeResources(ctx context.Context, change func(*sql.Tx) error) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := change(tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE meta SET value = value + 1 WHERE key = 'resources_version'`); err != nil {
		return err
	}
	return tx.Commit()
}

// ResourcesVersion changes whenever a resource is put or deleted, by any process.
func (s *Store) ResourcesVersion(ctx context.Context) (int64, error) {
	var v int64
	err := s.read.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'resources_version'`).Scan(&v)
	return v, err
}

// Resources lists every stored resource.
func (s *Store) Resources(ctx context.Context) ([]StoredResource, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT kind, name, body FROM resources ORDER BY kind, name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []StoredResource
	for rows.Next() {
		var r StoredResource
		if err := rows.Scan(&r.Kind, &r.Name, &r.Body); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// RecordJoin marks the proof proofID as used until expires and appends ev to
// the audit log, atomically. If the proof was already used it returns
// ErrReplay and records nothing; the caller records the refusal.
func (s *Store) RecordJoin(ctx context.Context, proofID string, expires time.Time, ev *AuditEvent) error {
	return s.commit(ctx, &pendingWrite{proofID: proofID, expires: expires, event: ev})
}

// Audit appends ev to the audit log.
func (s *Store) Audit(ctx context.Context, ev *AuditEvent) error {
	return s.commit(ctx, &pendingWrite{event: ev})
}

func insertAudit(ctx context.Context, stmt *sql.Stmt, ev *AuditEvent) error {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	record, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = stmt.ExecContext(ctx, ev.Time.UnixNano(), ev.Event, ev.Allowed, ev.Bot, record)
	return err
}

// ListAudit returns audit events, newest first.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error) {
	var (
		where []string
		args  []any
	)
	if !f.Since.IsZero() {
		where, args = append(where, "time >= ?"), append(args, f.Since.UnixNano())
	}
	if f.Bot != "" {
		where, args = append(where, "bot = ?"), append(args, f.Bot)
	}
	if f.DeniedOnly {
		where = append(where, "allowed = 0")
	}
	q := `SELECT id, record FROM audit`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AuditEvent
	for rows.Next() {
		var (
			id     int64
			record []byte
			ev     AuditEvent
		)
		if err := rows.Scan(&id, &record); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(record, &ev); err != nil {
			return nil, err
		}
		ev.ID = id
		out = append(out, ev)
	}
	return out, rows.Err()
}

// PruneProofs forgets used proofs that have expired: an expired proof is
// refused for its expiry anyway, so its replay record is no longer needed.
func (s *Store) PruneProofs(ctx context.Context, now time.Time) error {
	_, err := s.write.ExecContext(ctx, `DELETE FROM used_proofs WHERE expires < ?`, now.Unix())
	return err
}

// PruneAudit deletes audit records older than before.
func (s *Store) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.write.ExecContext(ctx, `DELETE FROM audit WHERE time < ?`, before.UnixNano())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Ping checks that the store answers a query, for readiness (/readyz).
func (s *Store) Ping(ctx context.Context) error {
	var one int
	return s.read.QueryRowContext(ctx, `SELECT 1`).Scan(&one)
}

// Pools returns the store's connection pools by name, for their
// statistics (mbot's go_sql_* metrics).
func (s *Store) Pools() map[string]*sql.DB {
	return map[string]*sql.DB{"write": s.write, "read": s.read}
}
