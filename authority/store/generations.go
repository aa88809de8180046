package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The generation counter of token joins (Teleport's, for bots that renew
// with their own certificate): every certificate of a renewal chain carries
// its generation, the store keeps the current one per (bot, join token),
// and a renewal must present exactly that one. Presenting an older one means
// two copies of the identity are in use, and the bot is locked. Unlocking
// the bot (mbot unlock) lifts its lock and ends its chains, since either
// holder could be the copy. Removing the bot (mbot rm bot/NAME) removes its
// lock and counters; removing a join token removes its counter
// (DeleteResource).

// ErrUnknownChain is returned for a renewal whose chain the store does not
// know: its join token was removed, or used to join again since.
var ErrUnknownChain = errors.New("no such renewal chain")

// ErrUnlockedChain is returned for a renewal whose chain was ended when an
// admin unlocked its bot.
var ErrUnlockedChain = errors.New("renewal chain ended when its bot was unlocked")

// ErrNotLocked is returned by UnlockBot for a bot that is not locked.
var ErrNotLocked = errors.New("bot is not locked")

// BotLock refuses every join and renewal of a bot.
type BotLock struct {
	Bot       string
	JoinToken string // whose chain gave the copy away
	Reason    string
	Time      time.Time
}

// GenerationMismatch is returned when a renewal presents a generation other
// than the current one. The bot was locked by the same transaction.
type GenerationMismatch struct {
	Presented, Current uint64
	Lock               *BotLock
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
}

// Chain names a renewal chain a token join starts.
type Chain struct {
	Bot, JoinToken string
	// ID is the chain's identifier, on every certificate of the chain.
	ID string
}

// startChainSQL records generation 1 of a new renewal chain ($1 bot, $2
// join token, $3 chain, $4 time), replacing any earlier chain of the same
// bot and join token.
const startChainSQL = `INSERT INTO bot_generations (bot, join_token, chain, generation, last_keys, updated)
	VALUES ($1, $2, $3, 1, '', $4) ON CONFLICT (bot, join_token) DO UPDATE SET chain = excluded.chain,
	generation = 1, last_keys = '', updated = excluded.updated`

// StartChain records generation 1 of a new renewal chain for a token join,
// replacing any earlier chain of the same bot and join token.
func (s *sqlStore) StartChain(ctx context.Context, bot, joinToken, chain string) error {
	_, err := s.write.ExecContext(ctx, startChainSQL, bot, joinToken, chain, time.Now().UnixNano())
	return s.wrap("starting a renewal chain", err)
}

// AdvanceGeneration admits r if it presents the current generation of its
// chain, which then moves to the next one (the generation of the renewed
// certificates), or if it retries the renewal that moved it there. It
// fails with ErrUnknownChain or ErrUnlockedChain, or with a
// *GenerationMismatch after locking the bot.
func (s *sqlStore) AdvanceGeneration(ctx context.Context, r Renewal) error {
	err := s.advanceGeneration(ctx, r)
	var mismatch *GenerationMismatch
	if errors.Is(err, ErrUnknownChain) || errors.Is(err, ErrUnlockedChain) || errors.As(err, &mismatch) {
		return err
	}
	return s.wrap("checking the renewal generation", err)
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
	lock := &BotLock{Bot: r.Bot, JoinToken: r.JoinToken, Time: now.UTC(),
		Reason: fmt.Sprintf("a certificate of generation %d from join token %q was presented for renewal, but that chain is at generation %d",
			r.Generation, r.JoinToken, current)}
	if _, err := tx.ExecContext(ctx, `INSERT INTO bot_locks (bot, time, join_token, reason) VALUES ($1, $2, $3, $4) ON CONFLICT (bot) DO NOTHING`,
		lock.Bot, lock.Time.UnixNano(), lock.JoinToken, lock.Reason); err != nil {
		return err
	}
	if err := s.notifyIn(ctx, tx); err != nil {
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
	rows, err := s.read.QueryContext(ctx, `SELECT bot, time, join_token, reason FROM bot_locks`)
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

// Unlock is what UnlockBot lifted and ended.
type Unlock struct {
	Lock *BotLock
	// JoinTokens are those whose renewal chains of the bot were ended.
	JoinTokens []string
}

// UnlockBot lifts the lock on bot and, in the same transaction, ends every
// renewal chain of the bot: a copy of its identity is in use and the store
// cannot tell the copy from the original, so neither renews again; both
// join again with a new secret. It returns ErrNotLocked, changing nothing,
// if bot is not locked.
func (s *sqlStore) UnlockBot(ctx context.Context, bot string) (*Unlock, error) {
	u, err := s.unlockBot(ctx, bot)
	if errors.Is(err, ErrNotLocked) {
		return nil, err
	}
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
	if lock == nil {
		return nil, ErrNotLocked
	}
	u := &Unlock{Lock: lock}
	rows, err := tx.QueryContext(ctx, `SELECT join_token FROM bot_generations WHERE bot = $1 ORDER BY join_token`, bot)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var tok string
		if err := rows.Scan(&tok); err != nil {
			rows.Close()
			return nil, err
		}
		u.JoinTokens = append(u.JoinTokens, tok)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	// The ended chains are kept so that their renewals are refused as
	// unlocked rather than as unknown.
	if _, err := tx.ExecContext(ctx, `INSERT INTO unlocked_chains (chain, bot, join_token, time)
		SELECT chain, bot, join_token, CAST($1 AS BIGINT) FROM bot_generations WHERE bot = $2 ON CONFLICT (chain) DO NOTHING`,
		time.Now().UnixNano(), bot); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM bot_generations WHERE bot = $1`, bot); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM bot_locks WHERE bot = $1`, bot); err != nil {
		return nil, err
	}
	if err := s.notifyIn(ctx, tx); err != nil {
		return nil, err
	}
	return u, tx.Commit()
}
