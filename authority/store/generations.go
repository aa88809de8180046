package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// The generation counter of token joins (Teleport's, for bots that renew
// with their own certificate): every certificate of a renewal chain carries
// its generation, the store keeps the current one per (bot, join token),
// and a renewal must present exactly that one. Presenting an older one means
// two copies of the instance's identity are in use, and the instance (its
// chain, see instances.go) is locked; the bot's other instances keep
// renewing. Unlocking the instance (mbot unlock) lifts its lock and ends its
// chain, since either holder could be the copy. A bot-wide lock (bot_locks)
// is what authorities before instance locks wrote; it is still honoured and
// lifted by unlocking the bot. Removing the bot (mbot rm bot/NAME) removes its
// lock and counters; removing a join token removes its counter
// (DeleteResource).

// ErrUnknownChain is returned for a renewal whose chain the store does not
// know: its join token was removed, or used to join again since.
var ErrUnknownChain = errors.New("no such renewal chain")

// ErrUnlockedChain is returned for a renewal whose chain was ended when an
// admin unlocked its bot.
var ErrUnlockedChain = errors.New("renewal chain ended when its bot was unlocked")

// ErrNotLocked is returned by UnlockBot and UnlockInstance for a bot or
// instance that is not locked.
var ErrNotLocked = errors.New("not locked")

// BotLock refuses every join and renewal of a bot: the lock of authorities
// before instance-scoped locks.
type BotLock struct {
	Bot       string
	JoinToken string // whose chain gave the copy away
	Reason    string
	Time      time.Time
}

// GenerationMismatch is returned when a renewal presents a generation other
// than the current one. The instance was locked by the same transaction.
type GenerationMismatch struct {
	Presented, Current uint64
	Lock               *InstanceLock
}

func (e *GenerationMismatch) Error() string { return e.Lock.Reason }

// Renewal is one renewal attempt as the store checks it.
type Renewal struct {
	Bot, JoinToken, Chain string
	// Generation is the one on the presented certificate.
	Generation uint64
	// Keys fingerprints the public keys the renewal asks certificates for.
	// A retry with the same keys of a renewal that was committed but whose
	// answer never reached the client is served again instead of locking:
	// only the holder of those private keys can use what it gets.
	Keys string
	// Remote is the address the renewal came from, for the lock's reason.
	Remote string
	// Seen is the resources and locks the renewal was admitted on: if
	// either changed since, it fails with ErrStale and changes nothing.
	Seen Seen
}

// Chain names a renewal chain a token join starts.
type Chain struct {
	Bot, JoinToken string
	// ID is the chain's identifier, on every certificate of the chain.
	ID string
	// Runner is the address the join came from: the instance's runner.
	Runner string
}

// AdvanceGeneration admits r if it presents the current generation of its
// chain, which then moves to the next one (the generation of the renewed
// certificates), or if it retries the renewal that moved it there. It
// fails with ErrUnknownChain or ErrUnlockedChain, with an
// *InstanceLockedError if its instance is locked, or with a
// *GenerationMismatch after locking the instance.
func (s *sqlStore) AdvanceGeneration(ctx context.Context, r Renewal) error {
	return s.wrap("checking the renewal generation", s.advanceGeneration(ctx, r))
}

func (s *sqlStore) advanceGeneration(ctx context.Context, r Renewal) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var (
		chain, lastKeys string
		current         uint64
	)
	err = tx.QueryRowContext(ctx, `SELECT chain, generation, last_keys FROM bot_generations WHERE bot = $1 AND join_token = $2`+s.engine.forUpdate,
		r.Bot, r.JoinToken).Scan(&chain, &current, &lastKeys)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && chain != r.Chain) {
		var unlocked int
		err := tx.QueryRowContext(ctx, `SELECT count(*) FROM unlocked_chains WHERE chain = $1 AND bot = $2`, r.Chain, r.Bot).Scan(&unlocked)
		switch {
		case err != nil:
			return err
		case unlocked > 0:
			return ErrUnlockedChain
		}
		return ErrUnknownChain
	}
	if err != nil {
		return err
	}
	// A lock written by another process sharing the store counts at once.
	if lock, err := instanceLock(ctx, tx, r.Chain); err != nil {
		return err
	} else if lock != nil {
		return &InstanceLockedError{Lock: lock}
	}
	if err := checkSeen(ctx, tx, r.Seen); err != nil {
		return err
	}
	now := time.Now()
	switch {
	case r.Generation == current:
		if _, err := tx.ExecContext(ctx, `UPDATE bot_generations SET generation = $1, last_keys = $2, updated = $3 WHERE bot = $4 AND join_token = $5`,
			current+1, r.Keys, now.UnixNano(), r.Bot, r.JoinToken); err != nil {
			return err
		}
		return tx.Commit()
	case r.Generation+1 == current && r.Keys != "" && r.Keys == lastKeys:
		return nil
	}
	lock, err := lockInstance(ctx, tx, r, current, now)
	if err != nil {
		return err
	}
	if err := s.locksChanged(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return &GenerationMismatch{Presented: r.Generation, Current: current, Lock: lock}
}

// BotLock returns the lock on bot, or nil if it is not locked.
func (s *sqlStore) BotLock(ctx context.Context, bot string) (*BotLock, error) {
	l, err := botLock(ctx, s.read, bot, "")
	return l, s.wrap("reading the lock of bot "+bot, err)
}

func botLock(ctx context.Context, db interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, bot, suffix string) (*BotLock, error) {
	l := BotLock{Bot: bot}
	var at int64
	err := db.QueryRowContext(ctx, `SELECT time, join_token, reason FROM bot_locks WHERE bot = $1`+suffix, bot).Scan(&at, &l.JoinToken, &l.Reason)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	l.Time = time.Unix(0, at).UTC()
	return &l, nil
}

// BotLocks returns every bot lock by bot name. Locked bots are few: a lock
// stays until an admin unlocks or removes the bot.
func (s *sqlStore) BotLocks(ctx context.Context) (map[string]*BotLock, error) {
	locks, err := s.botLocks(ctx)
	return locks, s.wrap("reading bot locks", err)
}

func (s *sqlStore) botLocks(ctx context.Context) (map[string]*BotLock, error) {
	return botLocksIn(ctx, s.read)
}

type querier interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}

func botLocksIn(ctx context.Context, db querier) (map[string]*BotLock, error) {
	rows, err := db.QueryContext(ctx, `SELECT bot, time, join_token, reason FROM bot_locks`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	locks := map[string]*BotLock{}
	for rows.Next() {
		var (
			l  BotLock
			at int64
		)
		if err := rows.Scan(&l.Bot, &at, &l.JoinToken, &l.Reason); err != nil {
			return nil, err
		}
		l.Time = time.Unix(0, at).UTC()
		locks[l.Bot] = &l
	}
	return locks, rows.Err()
}

// Unlock is what UnlockBot or UnlockInstance lifted and ended.
type Unlock struct {
	// Lock is the bot-wide lock UnlockBot lifted, if there was one.
	Lock *BotLock
	// Instances are the instance locks lifted, by first join.
	Instances []*InstanceLock
	// JoinTokens are those whose renewal chains of the bot were ended.
	JoinTokens []string
}

// UnlockBot lifts every lock on bot and, in the same transaction, ends the
// renewal chains they cover: a locked instance's chain (the copy cannot be
// told from the original, so neither renews again; the runner joins again
// with a new secret), and for a bot-wide lock every chain of the bot. The
// bot's instances that are not locked keep renewing. It returns
// ErrNotLocked, changing nothing, if nothing of bot is locked.
func (s *sqlStore) UnlockBot(ctx context.Context, bot string) (*Unlock, error) {
	u, err := s.unlockBot(ctx, bot)
	return u, s.wrap("unlocking bot "+bot, err)
}

func (s *sqlStore) unlockBot(ctx context.Context, bot string) (*Unlock, error) {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	lock, err := botLock(ctx, tx, bot, s.engine.forUpdate)
	if err != nil {
		return nil, err
	}
	instances, err := lockedInstances(ctx, tx, bot)
	if err != nil {
		return nil, err
	}
	if lock == nil && len(instances) == 0 {
		return nil, ErrNotLocked
	}
	u := &Unlock{Lock: lock, Instances: instances}
	var chains []string
	if lock != nil {
		rows, err := tx.QueryContext(ctx, `SELECT chain, join_token FROM bot_generations WHERE bot = $1 ORDER BY join_token`, bot)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var chain, tok string
			if err := rows.Scan(&chain, &tok); err != nil {
				rows.Close()
				return nil, err
			}
			chains, u.JoinTokens = append(chains, chain), append(u.JoinTokens, tok)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM bot_locks WHERE bot = $1`, bot); err != nil {
			return nil, err
		}
	} else {
		for _, l := range instances {
			chains, u.JoinTokens = append(chains, l.Instance), append(u.JoinTokens, l.JoinToken)
		}
	}
	now := time.Now()
	for _, chain := range chains {
		if err := endChain(ctx, tx, chain, now); err != nil {
			return nil, err
		}
	}
	// Locks on instances whose chain was already gone go too.
	if _, err := tx.ExecContext(ctx, `DELETE FROM bot_instances WHERE bot = $1 AND locked_at > 0`, bot); err != nil {
		return nil, err
	}
	if err := s.locksChanged(ctx, tx); err != nil {
		return nil, err
	}
	return u, tx.Commit()
}
