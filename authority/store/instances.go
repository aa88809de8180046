package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// A bot instance is one renewal chain: the runner that joined with a token
// and has renewed with its certificate since. A copy of one instance's
// identity locks that instance only (Teleport's instance-scoped locks), so
// the bot's other runners keep renewing. bot_instances holds what the chain
// counter (bot_generations) does not: when and from where the instance
// first joined, and its lock. Its SQL uses $N placeholders and portable
// upserts, as the PostgreSQL engine needs.

// InstanceLock refuses every renewal of one bot instance.
type InstanceLock struct {
	// Instance is the instance's ID: its renewal chain.
	Instance  string
	Bot       string
	JoinToken string
	// FirstJoin and Runner say which runner the instance is: when and from
	// which address it joined with its token. Zero and "" for a chain
	// started before instances were recorded.
	FirstJoin time.Time
	Runner    string
	Reason    string
	Time      time.Time
}

// InstanceLockedError is returned by AdvanceGeneration for a renewal of a
// locked instance.
type InstanceLockedError struct{ Lock *InstanceLock }

func (e *InstanceLockedError) Error() string { return e.Lock.Reason }

// BotInstance is one renewal chain as mbot get bot_instances lists it.
type BotInstance struct {
	ID        string    `json:"id" yaml:"id"`
	Bot       string    `json:"bot" yaml:"bot"`
	JoinToken string    `json:"join_token" yaml:"join_token"`
	FirstJoin time.Time `json:"first_join,omitzero" yaml:"first_join,omitempty"`
	Runner    string    `json:"runner,omitempty" yaml:"runner,omitempty"`
	// LastRenewal is zero until the instance renews once.
	LastRenewal time.Time `json:"last_renewal,omitzero" yaml:"last_renewal,omitempty"`
	Generation  uint64    `json:"generation" yaml:"generation"`
	// LockedSince and LockReason are set for a locked instance.
	LockedSince time.Time `json:"locked_since,omitzero" yaml:"locked_since,omitempty"`
	LockReason  string    `json:"lock_reason,omitempty" yaml:"lock_reason,omitempty"`
	// State is "locked" or "active".
	State string `json:"state" yaml:"state"`
}

// ErrUnknownInstance is returned by UnlockInstance for an ID that is no
// current instance.
var ErrUnknownInstance = errors.New("no such bot instance")

// StartChain records generation 1 of a new renewal chain for a token join,
// replacing any earlier chain of the same bot and join token, and the
// instance it starts: first joined now from runner (the remote address).
func (s *sqlStore) StartChain(ctx context.Context, bot, joinToken, chain, runner string) error {
	err := func() error {
		tx, err := s.write.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := startChain(ctx, tx, Chain{Bot: bot, JoinToken: joinToken, ID: chain, Runner: runner}, time.Now().UnixNano()); err != nil {
			return err
		}
		return tx.Commit()
	}()
	return s.wrap("starting a renewal chain", err)
}

// startChain records generation 1 of chain c in tx at now (Unix
// nanoseconds) and the instance it starts; the instance of the chain it
// replaces can no longer renew and is forgotten.
func startChain(ctx context.Context, tx *sql.Tx, c Chain, now int64) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO bot_generations (bot, join_token, chain, generation, last_keys, updated)
		VALUES ($1, $2, $3, 1, '', $4) ON CONFLICT (bot, join_token) DO UPDATE SET chain = excluded.chain,
		generation = 1, last_keys = '', updated = excluded.updated`, c.Bot, c.JoinToken, c.ID, now); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM bot_instances WHERE bot = $1 AND join_token = $2 AND chain <> $3`, c.Bot, c.JoinToken, c.ID); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO bot_instances (chain, bot, join_token, first_join, runner, locked_at, lock_reason)
		VALUES ($1, $2, $3, $4, $5, 0, '') ON CONFLICT (chain) DO NOTHING`, c.ID, c.Bot, c.JoinToken, now, c.Runner)
	return err
}

// lockInstance locks r's instance in tx (keeping an earlier lock and its
// reason) and returns the lock in force.
func lockInstance(ctx context.Context, tx *sql.Tx, r Renewal, current uint64, now time.Time) (*InstanceLock, error) {
	reason := fmt.Sprintf("a certificate of generation %d of bot instance %s (join token %q) was presented for renewal", r.Generation, r.Chain, r.JoinToken)
	if r.Remote != "" {
		reason += " from " + r.Remote
	}
	reason += fmt.Sprintf(", but that instance is at generation %d", current)
	if _, err := tx.ExecContext(ctx, `INSERT INTO bot_instances (chain, bot, join_token, first_join, runner, locked_at, lock_reason)
		VALUES ($1, $2, $3, 0, '', $4, $5) ON CONFLICT (chain) DO UPDATE SET locked_at = excluded.locked_at,
		lock_reason = excluded.lock_reason WHERE bot_instances.locked_at = 0`,
		r.Chain, r.Bot, r.JoinToken, now.UnixNano(), reason); err != nil {
		return nil, err
	}
	lock, err := instanceLock(ctx, tx, r.Chain)
	if err == nil && lock == nil {
		err = fmt.Errorf("bot instance %s: lock not recorded", r.Chain)
	}
	return lock, err
}

type queryRower interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

// instanceLock returns the lock on instance chain, or nil if it is not locked.
func instanceLock(ctx context.Context, db queryRower, chain string) (*InstanceLock, error) {
	l := InstanceLock{Instance: chain}
	var first, at int64
	err := db.QueryRowContext(ctx, `SELECT bot, join_token, first_join, runner, locked_at, lock_reason FROM bot_instances
		WHERE chain = $1 AND locked_at > 0`, chain).Scan(&l.Bot, &l.JoinToken, &first, &l.Runner, &at, &l.Reason)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	l.FirstJoin, l.Time = unixTime(first), unixTime(at)
	return &l, nil
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// InstanceLocks returns every instance lock by instance ID.
func (s *sqlStore) InstanceLocks(ctx context.Context) (map[string]*InstanceLock, error) {
	locks, err := s.instanceLocks(ctx)
	return locks, s.wrap("reading instance locks", err)
}

func (s *sqlStore) instanceLocks(ctx context.Context) (map[string]*InstanceLock, error) {
	return instanceLocksIn(ctx, s.read)
}

func instanceLocksIn(ctx context.Context, db querier) (map[string]*InstanceLock, error) {
	rows, err := db.QueryContext(ctx, `SELECT chain, bot, join_token, first_join, runner, locked_at, lock_reason
		FROM bot_instances WHERE locked_at > 0`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	locks := map[string]*InstanceLock{}
	for rows.Next() {
		var (
			l         InstanceLock
			first, at int64
		)
		if err := rows.Scan(&l.Instance, &l.Bot, &l.JoinToken, &first, &l.Runner, &at, &l.Reason); err != nil {
			return nil, err
		}
		l.FirstJoin, l.Time = unixTime(first), unixTime(at)
		locks[l.Instance] = &l
	}
	return locks, rows.Err()
}

// BotInstances lists the current instances of bot (of every bot for ""),
// by bot and first join.
func (s *sqlStore) BotInstances(ctx context.Context, bot string) ([]BotInstance, error) {
	out, err := s.botInstances(ctx, bot)
	return out, s.wrap("listing bot instances", err)
}

func (s *sqlStore) botInstances(ctx context.Context, bot string) ([]BotInstance, error) {
	const query = `SELECT g.chain, g.bot, g.join_token, g.generation, g.updated,
		COALESCE(i.first_join, 0), COALESCE(i.runner, ''), COALESCE(i.locked_at, 0), COALESCE(i.lock_reason, '')
		FROM bot_generations g LEFT JOIN bot_instances i ON i.chain = g.chain`
	const order = ` ORDER BY g.bot, COALESCE(i.first_join, 0), g.chain`
	var (
		rows *sql.Rows
		err  error
	)
	if bot == "" {
		rows, err = s.read.QueryContext(ctx, query+order)
	} else {
		rows, err = s.read.QueryContext(ctx, query+` WHERE g.bot = $1`+order, bot)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []BotInstance{}
	for rows.Next() {
		var (
			in                       BotInstance
			updated, first, lockedAt int64
		)
		if err := rows.Scan(&in.ID, &in.Bot, &in.JoinToken, &in.Generation, &updated, &first, &in.Runner, &lockedAt, &in.LockReason); err != nil {
			return nil, err
		}
		in.FirstJoin, in.LockedSince = unixTime(first), unixTime(lockedAt)
		in.State = "active"
		if lockedAt != 0 {
			in.State = "locked"
		}
		if in.Generation > 1 {
			in.LastRenewal = unixTime(updated)
		}
		out = append(out, in)
	}
	return out, rows.Err()
}

// endChain ends renewal chain in tx: its renewals are refused as unlocked
// from now on, whoever presents them.
func endChain(ctx context.Context, tx *sql.Tx, chain string, now time.Time) error {
	// The ended chain is kept so that its renewals are refused as unlocked
	// rather than as unknown.
	if _, err := tx.ExecContext(ctx, `INSERT INTO unlocked_chains (chain, bot, join_token, time)
		SELECT chain, bot, join_token, CAST($1 AS BIGINT) FROM bot_generations WHERE chain = $2 ON CONFLICT (chain) DO NOTHING`,
		now.UnixNano(), chain); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM bot_generations WHERE chain = $1`, chain); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM bot_instances WHERE chain = $1`, chain)
	return err
}

// UnlockInstance lifts the lock on instance id and, in the same
// transaction, ends its renewal chain: the copy cannot be told from the
// original, so neither renews again; the runner joins again with a new
// secret. The bot's other instances are untouched. It returns ErrNotLocked
// for an instance that is not locked and ErrUnknownInstance for an ID that
// is no current instance, changing nothing.
func (s *sqlStore) UnlockInstance(ctx context.Context, id string) (*Unlock, error) {
	u, err := s.unlockInstance(ctx, id)
	return u, s.wrap("unlocking bot instance "+id, err)
}

func (s *sqlStore) unlockInstance(ctx context.Context, id string) (*Unlock, error) {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	lock, err := instanceLock(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	if lock == nil {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM bot_generations WHERE chain = $1`, id).Scan(&n); err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, ErrUnknownInstance
		}
		return nil, ErrNotLocked
	}
	if err := endChain(ctx, tx, id, time.Now()); err != nil {
		return nil, err
	}
	if err := s.locksChanged(ctx, tx); err != nil {
		return nil, err
	}
	return &Unlock{Instances: []*InstanceLock{lock}, JoinTokens: []string{lock.JoinToken}}, tx.Commit()
}

// lockedInstances returns the locked instances of bot in tx, by first join.
func lockedInstances(ctx context.Context, tx *sql.Tx, bot string) ([]*InstanceLock, error) {
	rows, err := tx.QueryContext(ctx, `SELECT chain, join_token, first_join, runner, locked_at, lock_reason
		FROM bot_instances WHERE bot = $1 AND locked_at > 0 ORDER BY first_join, chain`, bot)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var locks []*InstanceLock
	for rows.Next() {
		l := InstanceLock{Bot: bot}
		var first, at int64
		if err := rows.Scan(&l.Instance, &l.JoinToken, &first, &l.Runner, &at, &l.Reason); err != nil {
			return nil, err
		}
		l.FirstJoin, l.Time = unixTime(first), unixTime(at)
		locks = append(locks, &l)
	}
	return locks, rows.Err()
}
