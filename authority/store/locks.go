package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// Locks are kept in one table whatever they lock (mbot lock KIND/NAME,
// mbot lock --claim, mbot lock --admin), beside the locks the authority
// writes itself when it sees a copied identity (bot_instances, bot_locks,
// keypair_bindings). Every change to any of them bumps locks_version in the
// same transaction, so that a join, a renewal or an exchange committed
// after it can tell that its view of the locks is stale (Seen).

// locksSchema is the same on both engines (BIGINT is SQLite's INTEGER).
// admin_locks, where admin locks were kept before, is emptied into it.
const locksSchema = `
CREATE TABLE IF NOT EXISTS locks (kind TEXT NOT NULL, target TEXT NOT NULL, reason TEXT NOT NULL, time BIGINT NOT NULL,
	expires BIGINT NOT NULL, locked_by TEXT NOT NULL, PRIMARY KEY (kind, target));`

// ErrAlreadyLocked is returned by AddLock for a target that is locked.
var ErrAlreadyLocked = errors.New("already locked")

// ErrStale is returned by RecordJoin, RecordJoinStartingChain and
// AdvanceGeneration when resources or locks changed since the versions the
// caller decided on (Seen): nothing was written; the caller reads them
// again and decides again.
var ErrStale = errors.New("resources or locks changed since they were read")

// Lock is a lock an admin set. Kind is bot, bot_instance, join_token, role,
// cert, claim or admin; Target the name, instance ID, serial or, for a
// claim, "name=value".
type Lock struct {
	Kind   string    `json:"kind"`
	Target string    `json:"target"`
	Reason string    `json:"reason"`
	Time   time.Time `json:"locked_since"`
	// Expires is when the lock stops counting; zero for never.
	Expires time.Time `json:"expires,omitzero"`
	// LockedBy names who locked it, as the audit log does.
	LockedBy string `json:"locked_by"`
}

// Seen is the versions of resources and locks a decision was made on. The
// zero value checks nothing (writes that decide on neither).
type Seen struct {
	Resources, Locks int64
	Check            bool
}

// Versions is the store's resources and locks versions, read together.
type Versions struct {
	Resources, Locks int64
}

// LockState is every lock the store holds, as of Version (the locks
// version read before them: a change committed after it bumps it again).
type LockState struct {
	Version   int64
	Locks     []Lock
	Bots      map[string]*BotLock
	Instances map[string]*InstanceLock
	// JoinTokens are the bound_keypair join tokens locked for a copied key.
	JoinTokens map[string]*KeypairLock
}

// AddLock stores l, or returns ErrAlreadyLocked, changing nothing, if its
// target is locked (an expired lock is replaced).
func (s *sqlStore) AddLock(ctx context.Context, l *Lock) error {
	err := func() error {
		tx, err := s.write.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		res, err := tx.ExecContext(ctx, `INSERT INTO locks (kind, target, reason, time, expires, locked_by) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (kind, target) DO UPDATE SET reason = excluded.reason, time = excluded.time, expires = excluded.expires,
			locked_by = excluded.locked_by WHERE locks.expires > 0 AND locks.expires <= $4`,
			l.Kind, l.Target, l.Reason, l.Time.UnixNano(), unixNano(l.Expires), l.LockedBy)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(ErrAlreadyLocked, err)
		}
		if err := s.locksChanged(ctx, tx); err != nil {
			return err
		}
		return tx.Commit()
	}()
	if errors.Is(err, ErrAlreadyLocked) {
		return err
	}
	return s.wrap("locking "+l.Kind+"/"+l.Target, err)
}

// RemoveLock lifts the lock on kind/target and returns it, or returns
// ErrNotLocked if there is none (an expired one is removed all the same).
func (s *sqlStore) RemoveLock(ctx context.Context, kind, target string) (*Lock, error) {
	l, err := func() (*Lock, error) {
		tx, err := s.write.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		defer tx.Rollback()
		l := Lock{Kind: kind, Target: target}
		var at, expires int64
		// DELETE ... RETURNING: of two concurrent unlocks, one gets the lock.
		err = tx.QueryRowContext(ctx, `DELETE FROM locks WHERE kind = $1 AND target = $2 RETURNING reason, time, expires, locked_by`,
			kind, target).Scan(&l.Reason, &at, &expires, &l.LockedBy)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotLocked
		}
		if err != nil {
			return nil, err
		}
		l.Time, l.Expires = unixTime(at), unixTime(expires)
		if err := s.locksChanged(ctx, tx); err != nil {
			return nil, err
		}
		return &l, tx.Commit()
	}()
	if errors.Is(err, ErrNotLocked) {
		return nil, err
	}
	return l, s.wrap("unlocking "+kind+"/"+target, err)
}

// LockState reads every lock in one read transaction.
func (s *sqlStore) LockState(ctx context.Context) (*LockState, error) {
	st, err := s.lockState(ctx)
	return st, s.wrap("reading locks", err)
}

func (s *sqlStore) lockState(ctx context.Context) (*LockState, error) {
	tx, err := s.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	st := &LockState{Bots: map[string]*BotLock{}, Instances: map[string]*InstanceLock{}, JoinTokens: map[string]*KeypairLock{}}
	if err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'locks_version'`).Scan(&st.Version); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT kind, target, reason, time, expires, locked_by FROM locks ORDER BY kind, target`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var (
			l           Lock
			at, expires int64
		)
		if err := rows.Scan(&l.Kind, &l.Target, &l.Reason, &at, &expires, &l.LockedBy); err != nil {
			rows.Close()
			return nil, err
		}
		l.Time, l.Expires = unixTime(at), unixTime(expires)
		st.Locks = append(st.Locks, l)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	if st.Bots, err = botLocksIn(ctx, tx); err != nil {
		return nil, err
	}
	if st.Instances, err = instanceLocksIn(ctx, tx); err != nil {
		return nil, err
	}
	rows, err = tx.QueryContext(ctx, `SELECT join_token, locked_time, locked_reason FROM keypair_bindings WHERE locked_time > 0`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var (
			name string
			l    KeypairLock
			at   int64
		)
		if err := rows.Scan(&name, &at, &l.Reason); err != nil {
			rows.Close()
			return nil, err
		}
		l.Time = unixTime(at)
		st.JoinTokens[name] = &l
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	return st, nil
}

// Versions reads the resources and locks versions in one query.
func (s *sqlStore) Versions(ctx context.Context) (Versions, error) {
	var v Versions
	err := s.read.QueryRowContext(ctx, versionsQuery).Scan(&v.Resources, &v.Locks)
	return v, s.wrap("reading the store's versions", err)
}

const versionsQuery = `SELECT (SELECT value FROM meta WHERE key = 'resources_version'), (SELECT value FROM meta WHERE key = 'locks_version')`

// locksChanged bumps the locks version in tx and tells the other replicas
// at its commit.
func (s *sqlStore) locksChanged(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `UPDATE meta SET value = value + 1 WHERE key = 'locks_version'`); err != nil {
		return err
	}
	return s.notifyIn(ctx, tx)
}

// checkSeen returns ErrStale if the versions in tx are not seen's.
func checkSeen(ctx context.Context, tx *sql.Tx, seen Seen) error {
	if !seen.Check {
		return nil
	}
	var v Versions
	if err := tx.QueryRowContext(ctx, versionsQuery).Scan(&v.Resources, &v.Locks); err != nil {
		return err
	}
	if v.Resources != seen.Resources || v.Locks != seen.Locks {
		return ErrStale
	}
	return nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
