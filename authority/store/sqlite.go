package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// The SQLite schema predates versioned migrations: every statement is
// idempotent and runs at each start.
const sqliteSchema = `
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
` + locksSchema + `
INSERT OR IGNORE INTO meta (key, value) VALUES ('locks_version', 0);
INSERT OR IGNORE INTO locks (kind, target, reason, time, expires, locked_by)
	SELECT 'admin', admin, reason, time, 0, locked_by FROM admin_locks;
DELETE FROM admin_locks;
`

// FileName is the store's database file in data_dir.
const FileName = "mbot.db"

// OpenSQLite opens (creating if needed) the database at dataDir/mbot.db.
func OpenSQLite(ctx context.Context, dataDir string) (Store, error) {
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
	// temp_store=MEMORY keeps statement journals off disk: the audit
	// insert's index trigger needs one, and in a temporary file it cost a
	// write(2) per page touched, a third of the committer's CPU.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)&_pragma=temp_store(MEMORY)"
	// Write transactions take the write lock at BEGIN (immediate): one that
	// read before writing (AdvanceGeneration) would otherwise fail with
	// SQLITE_BUSY_SNAPSHOT when another process sharing data_dir wrote between.
	write, err := sql.Open("sqlite", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	write.SetMaxOpenConns(1) // one connection: SQLite has one writer at a time anyway
	if _, err := write.ExecContext(ctx, sqliteSchema+caRotationsSchema+issuedSchema+sqliteAuditIndexSchema); err != nil {
		write.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := indexSQLiteAudit(ctx, write); err != nil {
		write.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	read, err := sql.Open("sqlite", dsn+"&_pragma=query_only(1)")
	if err != nil {
		write.Close()
		return nil, err
	}
	read.SetMaxOpenConns(4)
	st, err := newSQLStore(ctx, engine{name: "sqlite", committers: 1, scrub: scrubSQLite}, write, read)
	if err != nil {
		read.Close()
		write.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return st, nil
}
