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
// two copies of the identity are in use, and the bot is locked. Removing
// the bot (mbot rm bot/NAME) removes its lock and counters; removing a join
// token removes its counter (triggers in the schema).

// ErrUnknownChain is returned for a renewal whose chain the store does not
// know: its join token was removed, or used to join again since.
var ErrUnknownChain = errors.New("no such renewal chain")

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

// StartChain records generation 1 of a new renewal chain for a token join,
// replacing any earlier chain of the same bot and join token.
func (s *Store) StartChain(ctx context.Context, bot, joinToken, chain string) error {
	_, err := s.write.ExecContext(ctx, `INSERT INTO bot_generations (bot, join_token, chain, generation, last_keys, updated)
		VALUES (?, ?, ?, 1, '', ?) ON CONFLICT (bot, join_token) DO UPDATE SET chain = excluded.chain,
		generation = 1, last_keys = '', updated = excluded.updated`, bot, joinToken, chain, time.Now().UnixNano())
	return err
}

// AdvanceGeneration admits r if it presents the current generation of its
// chain, which then moves to the next one (the generation of the renewed
// certificates), or if it retries the renewal that moved it there. It
// fails with ErrUnknownChain, or with a *GenerationMismatch after locking the bot.
func (s *Store) AdvanceGeneration(ctx context.Context, r Renewal) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var (
		chain, lastKeys string
		current         uint64
	)
	err = tx.QueryRowContext(ctx, `SELECT chain, generation, last_keys FROM bot_generations WHERE bot = ? AND join_token = ?`,
		r.Bot, r.JoinToken).Scan(&chain, &current, &lastKeys)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && chain != r.Chain) {
		return ErrUnknownChain
	}
	if err != nil {
		return err
	}
	now := time.Now()
	switch {
	case r.Generation == current:
		if _, err := tx.ExecContext(ctx, `UPDATE bot_generations SET generation = ?, last_keys = ?, updated = ? WHERE bot = ? AND join_token = ?`,
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
	if _, err := tx.ExecContext(ctx, `INSERT INTO bot_locks (bot, time, join_token, reason) VALUES (?, ?, ?, ?) ON CONFLICT (bot) DO NOTHING`,
		lock.Bot, lock.Time.UnixNano(), lock.JoinToken, lock.Reason); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return &GenerationMismatch{Presented: r.Generation, Current: current, Lock: lock}
}

// BotLock returns the lock on bot, or nil if it is not locked.
func (s *Store) BotLock(ctx context.Context, bot string) (*BotLock, error) {
	l := BotLock{Bot: bot}
	var at int64
	err := s.read.QueryRowContext(ctx, `SELECT time, join_token, reason FROM bot_locks WHERE bot = ?`, bot).Scan(&at, &l.JoinToken, &l.Reason)
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
// stays until an admin removes the bot.
func (s *Store) BotLocks(ctx context.Context) (map[string]*BotLock, error) {
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
