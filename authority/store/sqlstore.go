package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// sqlStore is the Store both engines share: the same SQL, with $N
// placeholders (SQLite reads them as numbered parameters) and portable
// clauses (ON CONFLICT, RETURNING). What differs is in engine.
type sqlStore struct {
	engine engine
	write  *sql.DB
	read   *sql.DB
	// useProof, addAudit and addIssued are prepared once: SQLite parses a
	// statement in about the time it takes to run it.
	useProof, addAudit, addIssued *sql.Stmt
	// writes feeds the group committers (see commit.go).
	writes    chan *pendingWrite
	committed sync.WaitGroup
	// changes, stopListening and listening belong to the engine's
	// notification listener, if it has one.
	changes       chan struct{}
	stopListening context.CancelFunc
	listening     sync.WaitGroup
	closeOnce     sync.Once
	closeErr      error
}

// engine is what one database engine adds to the shared SQL.
type engine struct {
	name string
	// committers is how many transactions of joins may commit at once:
	// SQLite has one writer, PostgreSQL commits several side by side.
	committers int
	// forUpdate is appended to a SELECT whose rows the transaction goes on
	// to change: PostgreSQL needs the row lock, SQLite's single writer
	// serialises the transaction anyway and has no such clause.
	forUpdate string
	// notify, if set, is run inside a transaction that changes resources or
	// locks, so that the other replicas learn of the change at its commit.
	notify string
	// unavailable reports whether err means the database cannot be reached.
	unavailable func(error) bool
	// retry reports whether a batch of joins that failed with err (a
	// deadlock or serialisation failure) may run again at once.
	retry func(error) bool
	// writeBatch, if set, writes a batch of joins in one transaction in
	// the engine's own way (PostgreSQL: one pipelined round trip) instead
	// of a statement at a time; it reports replays in results.
	writeBatch func(s *sqlStore, batch []*pendingWrite, results []error) error
	// scrub, if set, removes replaced and deleted rows from the disk after
	// CA keys were replaced (SQLite: VACUUM). PostgreSQL has none that may
	// run beside the replicas' work: operators run VACUUM FULL (see
	// docs/high-availability.md).
	scrub func(ctx context.Context, db *sql.DB) error
}

func newSQLStore(ctx context.Context, e engine, write, read *sql.DB) (*sqlStore, error) {
	s := &sqlStore{engine: e, write: write, read: read, writes: make(chan *pendingWrite, 1024)}
	var err error
	if s.useProof, err = write.PrepareContext(ctx, `INSERT INTO used_proofs (id, expires) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`); err == nil {
		s.addAudit, err = write.PrepareContext(ctx, `INSERT INTO audit (time, event, allowed, bot, record) VALUES ($1, $2, $3, $4, $5) RETURNING id`)
	}
	if err == nil {
		s.addIssued, err = write.PrepareContext(ctx, insertIssuedSQL)
	}
	if err != nil {
		return nil, s.wrap("preparing statements", err)
	}
	for range e.committers {
		s.committed.Add(1)
		go s.commitLoop()
	}
	return s, nil
}

func (s *sqlStore) Engine() string { return s.engine.name }

// wrap says what failed and marks an unreachable database with ErrUnavailable.
func (s *sqlStore) wrap(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrReplay), errors.Is(err, ErrUnavailable), isAnswer(err):
		return err
	case s.engine.unavailable != nil && s.engine.unavailable(err):
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// isAnswer reports whether err is the store's answer to the request
// (a refusal its caller acts on), not a failure to describe.
func isAnswer(err error) bool {
	var (
		mismatch *GenerationMismatch
		locked   *InstanceLockedError
		keypair  *KeypairMismatch
	)
	for _, answer := range []error{ErrNotLocked, ErrUnknownChain, ErrUnlockedChain, ErrUnknownInstance, ErrAlreadyLocked,
		ErrConflict, ErrChallengeUsed} {
		if errors.Is(err, answer) {
			return true
		}
	}
	return errors.As(err, &mismatch) || errors.As(err, &locked) || errors.As(err, &keypair)
}

// Pools returns the store's connection pools by name, for their
// statistics (mbot's go_sql_* metrics).
func (s *sqlStore) Pools() map[string]*sql.DB {
	if s.read == s.write {
		return map[string]*sql.DB{s.engine.name: s.write}
	}
	return map[string]*sql.DB{"write": s.write, "read": s.read}
}

// Ping reports whether the database answers a query.
func (s *sqlStore) Ping(ctx context.Context) error {
	var one int
	return s.wrap("pinging the store", s.read.QueryRowContext(ctx, `SELECT 1`).Scan(&one))
}

func (s *sqlStore) Changes() <-chan struct{} { return s.changes }

// Close finishes the pending writes and releases the database.
func (s *sqlStore) Close() error {
	s.closeOnce.Do(func() {
		close(s.writes)
		s.committed.Wait()
		if s.stopListening != nil {
			s.stopListening()
			s.listening.Wait()
		}
		s.closeErr = s.write.Close()
		if s.read != s.write {
			s.closeErr = errors.Join(s.closeErr, s.read.Close())
		}
	})
	return s.closeErr
}

// signalChange wakes Changes' reader without waiting for it.
func (s *sqlStore) signalChange() {
	select {
	case s.changes <- struct{}{}:
	default:
	}
}

// notifyIn tells the other replicas, at tx's commit, that resources or locks changed.
func (s *sqlStore) notifyIn(ctx context.Context, tx *sql.Tx) error {
	if s.engine.notify == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, s.engine.notify)
	return err
}

func (s *sqlStore) CA(ctx context.Context, name string) ([]byte, error) {
	var pem []byte
	err := s.read.QueryRowContext(ctx, `SELECT pem FROM cas WHERE name = $1`, name).Scan(&pem)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return pem, s.wrap("reading CA "+name, err)
}

func (s *sqlStore) CreateCA(ctx context.Context, name string, pem []byte) ([]byte, error) {
	if _, err := s.write.ExecContext(ctx, `INSERT INTO cas (name, pem) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, name, pem); err != nil {
		return nil, s.wrap("storing CA "+name, err)
	}
	var stored []byte
	err := s.write.QueryRowContext(ctx, `SELECT pem FROM cas WHERE name = $1`, name).Scan(&stored)
	return stored, s.wrap("reading CA "+name, err)
}

func (s *sqlStore) PutResources(ctx context.Context, rs []StoredResource) error {
	return s.changeResources(ctx, func(tx *sql.Tx) error {
		now := time.Now().UnixNano()
		for _, r := range rs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO resources (kind, name, body, updated) VALUES ($1, $2, $3, $4)
				ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body, updated = excluded.updated`,
				r.Kind, r.Name, r.Body, now); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *sqlStore) DeleteResource(ctx context.Context, kind, name string) error {
	return s.changeResources(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM resources WHERE kind = $1 AND name = $2`, kind, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		// What the bot or join token's renewals left behind goes with it
		// (SQLite stores made before these deletes also have triggers).
		var cleanup []string
		switch kind {
		case "bot":
			cleanup = []string{`DELETE FROM bot_locks WHERE bot = $1`, `DELETE FROM bot_generations WHERE bot = $1`,
				`DELETE FROM unlocked_chains WHERE bot = $1`, `DELETE FROM bot_instances WHERE bot = $1`}
		case "join_token":
			cleanup = []string{`DELETE FROM bot_generations WHERE join_token = $1`, `DELETE FROM unlocked_chains WHERE join_token = $1`,
				`DELETE FROM bot_instances WHERE join_token = $1`, `DELETE FROM keypair_bindings WHERE join_token = $1`,
				`DELETE FROM keypair_challenges WHERE join_token = $1`}
		}
		for _, q := range cleanup {
			if _, err := tx.ExecContext(ctx, q, name); err != nil {
				return err
			}
		}
		return nil
	})
}

// changeResources runs change and bumps the resources version in one
// transaction, so that every authority process sharing the store notices.
func (s *sqlStore) changeResources(ctx context.Context, change func(*sql.Tx) error) error {
	err := func() error {
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
		if err := s.notifyIn(ctx, tx); err != nil {
			return err
		}
		return tx.Commit()
	}()
	return s.wrap("changing resources", err)
}

func (s *sqlStore) ResourcesVersion(ctx context.Context) (int64, error) {
	var v int64
	err := s.read.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'resources_version'`).Scan(&v)
	return v, s.wrap("reading the resources version", err)
}

func (s *sqlStore) Resources(ctx context.Context) ([]StoredResource, error) {
	out, err := func() ([]StoredResource, error) {
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
	}()
	return out, s.wrap("reading resources", err)
}

func (s *sqlStore) RecordJoin(ctx context.Context, proofID string, expires time.Time, ev *AuditEvent) error {
	return s.commit(ctx, &pendingWrite{proofID: proofID, expires: expires, event: ev})
}

func (s *sqlStore) RecordJoinStartingChain(ctx context.Context, proofID string, expires time.Time, ev *AuditEvent, c Chain) error {
	return s.commit(ctx, &pendingWrite{proofID: proofID, expires: expires, event: ev, chain: &c})
}

func (s *sqlStore) RecordJoinSeen(ctx context.Context, proofID string, expires time.Time, ev *AuditEvent, c *Chain, seen Seen) error {
	seen.Check = true
	return s.commit(ctx, &pendingWrite{proofID: proofID, expires: expires, event: ev, chain: c, seen: seen})
}

func (s *sqlStore) Audit(ctx context.Context, ev *AuditEvent) error {
	return s.commit(ctx, &pendingWrite{event: ev})
}

// insertAudit appends w's event to the audit log (addAudit and addIssued
// are the prepared statements in the write's transaction), and records the
// certificates issued with it under its id.
func insertAudit(ctx context.Context, addAudit, addIssued *sql.Stmt, w *pendingWrite) error {
	ev := w.event
	var id int64
	if err := addAudit.QueryRowContext(ctx, ev.Time.UnixNano(), ev.Event, ev.Allowed, ev.Bot, w.record).Scan(&id); err != nil {
		return err
	}
	return insertIssued(ctx, addIssued, ev, w.issued, id)
}

// auditRecord is ev as the audit table's record column holds it.
func auditRecord(ev *AuditEvent) (string, error) {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	record, err := json.Marshal(ev)
	return string(record), err
}

func (s *sqlStore) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error) {
	f.Scan = 0
	scan, err := s.ScanAudit(ctx, f)
	if err != nil {
		return nil, err
	}
	return scan.Records, nil
}

func (s *sqlStore) ScanAudit(ctx context.Context, f AuditFilter) (*AuditScan, error) {
	_, bare, prefixed := strings.Cut(f.Serial, ":")
	if f.Serial != "" {
		if !prefixed {
			bare = f.Serial
		}
		if strings.Trim(bare, "0123456789ABCDEF") != "" {
			return nil, fmt.Errorf("serial %q is not a normalised serial", f.Serial)
		}
	}
	if f.Scan < 0 {
		return nil, fmt.Errorf("scan %d is negative", f.Scan)
	}
	drive, err := s.rarestAuditTerm(ctx, f)
	if err != nil {
		return nil, s.wrap("reading the audit log", err)
	}
	q, args, scanned, nScanned := s.listAuditQuery(f, drive)
	out := &AuditScan{}
	err = func() error {
		rows, err := s.read.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id     int64
				record []byte
				ev     AuditEvent
			)
			if err := rows.Scan(&id, &record); err != nil {
				return err
			}
			if err := json.Unmarshal(record, &ev); err != nil {
				return err
			}
			ev.ID = id
			if f.Serial != "" && !slices.ContainsFunc(ev.Serials, func(s string) bool {
				_, b, _ := strings.Cut(s, ":")
				return s == f.Serial || (!prefixed && b == f.Serial)
			}) {
				continue
			}
			out.Records = append(out.Records, ev)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if scanned == "" || (f.Limit > 0 && len(out.Records) >= f.Limit) {
			return nil
		}
		// A short page: is anything left past its window, and where did it end?
		var (
			n        int64
			oldest   sql.NullInt64
			oldestAt sql.NullInt64
		)
		if err := s.read.QueryRowContext(ctx, scanned, args[:nScanned]...).Scan(&n, &oldest, &oldestAt); err != nil {
			return err
		}
		if n > int64(f.Scan) && oldest.Valid {
			out.ScannedTo = &AuditMark{ID: oldest.Int64, Time: time.Unix(0, oldestAt.Int64).UTC()}
		}
		return nil
	}()
	if err != nil {
		return nil, s.wrap("reading the audit log", err)
	}
	return out, nil
}

// PruneProofs forgets used proofs that have expired: an expired proof is
// refused for its expiry anyway, so its replay record is no longer needed.
func (s *sqlStore) PruneProofs(ctx context.Context, now time.Time) error {
	_, err := s.write.ExecContext(ctx, `DELETE FROM used_proofs WHERE expires < $1`, now.Unix())
	return s.wrap("pruning used proofs", err)
}

// PruneAudit deletes the records older than before with their terms and
// per-minute counts (audit_index.go).
func (s *sqlStore) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	n, err := func() (int64, error) {
		tx, err := s.write.BeginTx(ctx, nil)
		if err != nil {
			return 0, err
		}
		defer tx.Rollback()
		pruneTerms := sqlitePruneTerms()
		if s.engine.name == "postgres" {
			pruneTerms = pgPruneTerms()
		}
		if _, err := tx.ExecContext(ctx, pruneTerms, before.UnixNano()); err != nil {
			return 0, err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM audit WHERE time < $1`, before.UnixNano())
		if err != nil {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM audit_minutes WHERE minute < $1`, before.UnixNano()/nanosPerMinute); err != nil {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM audit_minute_totals WHERE minute < $1`, before.UnixNano()/nanosPerMinute); err != nil {
			return 0, err
		}
		n, _ := res.RowsAffected()
		return n, tx.Commit()
	}()
	return n, s.wrap("pruning the audit log", err)
}
