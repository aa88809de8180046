package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The join sequence of bound_keypair join tokens, modelled on the
// generation counter of token joins (generations.go): the store keeps, per
// join token, the public key it is bound to now and a sequence that every
// join must present and that each admitted join advances. The runner keeps
// its sequence beside its private key; a join that presents an older one
// comes from a second holder of the key, and the join token is locked.
//
// The row also remembers the admin's binding (the public key or the hash of
// the registration secret in the join token's spec) that it started from:
// when the admin binds another key or issues a new secret, the row starts
// over, lock included.

// ErrChallengeUsed refuses a challenge answered before.
var ErrChallengeUsed = errors.New("challenge already used")

// KeypairBinding is the state of one bound_keypair join token.
type KeypairBinding struct {
	JoinToken string
	// Binding is the admin's binding this state started from.
	Binding string
	// PublicKey is the key joins must be signed with, in authorized_keys form.
	PublicKey string
	// Sequence is the one the next join must present.
	Sequence uint64
	// LastKeys, LastRemote and LastTime describe the join that advanced
	// the sequence last: a retry of it is recognised, and a lock names it.
	LastKeys, LastRemote string
	LastTime             time.Time
	Lock                 *KeypairLock
}

// KeypairLock refuses every join with a join token.
type KeypairLock struct {
	Time   time.Time
	Reason string
}

// KeypairJoin is one admitted join as AdvanceKeypair checks it.
type KeypairJoin struct {
	JoinToken, Binding string
	// Presented is the sequence the runner presented.
	Presented uint64
	// PublicKey signed the join; NewPublicKey is bound from now on (the
	// same key, a rotated one, or the first key of a registration).
	PublicKey, NewPublicKey string
	// Keys fingerprints the output keys certified (a retry of a join whose
	// answer was lost presents the same ones).
	Keys   string
	Remote string
}

// KeypairMismatch is a join whose sequence is older than the current one,
// or whose key is not the current one: a copy of the key. The store locked
// the join token for it.
type KeypairMismatch struct {
	Current *KeypairBinding
	Lock    *KeypairLock
}

func (e *KeypairMismatch) Error() string { return e.Lock.Reason }

// UseKeypairChallenge records that the challenge nonce of joinToken was
// answered, by requester, until expires: the authority issues challenges
// without storing them (verify/bound_keypair.go) and records each only
// once its signature verified. Each is answered once: the second answer,
// on any replica, gets ErrChallengeUsed.
func (s *sqlStore) UseKeypairChallenge(ctx context.Context, joinToken, requester, nonce string, expires time.Time) error {
	return s.wrap("answering a keypair challenge", s.useKeypairChallenge(ctx, joinToken, requester, nonce, expires))
}

func (s *sqlStore) useKeypairChallenge(ctx context.Context, joinToken, requester, nonce string, expires time.Time) error {
	res, err := s.write.ExecContext(ctx, `INSERT INTO keypair_challenges (nonce, join_token, requester, expires, used) VALUES ($1, $2, $3, $4, 1)
ON CONFLICT (nonce) DO NOTHING`, nonce, joinToken, requester, expires.UnixNano())
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return ErrChallengeUsed
	}
	return nil
}

// PruneKeypairChallenges forgets challenges that expired before before.
func (s *sqlStore) PruneKeypairChallenges(ctx context.Context, before time.Time) error {
	_, err := s.write.ExecContext(ctx, `DELETE FROM keypair_challenges WHERE expires < $1`, before.UnixNano())
	return s.wrap("pruning keypair challenges", err)
}

// KeypairBinding returns the state of joinToken, or nil if none joined yet.
func (s *sqlStore) KeypairBinding(ctx context.Context, joinToken string) (*KeypairBinding, error) {
	b, err := keypairBinding(ctx, s.read, joinToken, "")
	return b, s.wrap("reading the keypair binding of join token "+joinToken, err)
}

// keypairBinding reads joinToken's state; suffix is appended to the
// SELECT (the engine's FOR UPDATE, in a transaction that changes it).
func keypairBinding(ctx context.Context, db queryRower, joinToken, suffix string) (*KeypairBinding, error) {
	b := KeypairBinding{JoinToken: joinToken}
	var (
		last, locked int64
		reason       string
	)
	err := db.QueryRowContext(ctx, `SELECT binding, public_key, sequence, last_keys, last_remote, last_time, locked_time, locked_reason
		FROM keypair_bindings WHERE join_token = $1`+suffix, joinToken).
		Scan(&b.Binding, &b.PublicKey, &b.Sequence, &b.LastKeys, &b.LastRemote, &last, &locked, &reason)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	b.LastTime = time.Unix(0, last).UTC()
	if locked != 0 {
		b.Lock = &KeypairLock{Time: time.Unix(0, locked).UTC(), Reason: reason}
	}
	return &b, nil
}

// AdvanceKeypair admits j if it presents the current sequence and key of
// its join token (or starts the token's state, when none is kept for the
// admin's current binding), binds j.NewPublicKey and moves the sequence on.
// A retry of the join that moved it, with the same output keys, is admitted
// again. It fails with a *KeypairMismatch, after locking the join token,
// when the sequence presented is older than the store's or the key another.
func (s *sqlStore) AdvanceKeypair(ctx context.Context, j KeypairJoin) error {
	return s.wrap("advancing the join sequence of join token "+j.JoinToken, s.advanceKeypair(ctx, j))
}

func (s *sqlStore) advanceKeypair(ctx context.Context, j KeypairJoin) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// On PostgreSQL the row lock (and, for a first join, the conditional
	// insert below) serialises joins of one token as SQLite's single
	// writer does: of two first joins racing, one starts the state and the
	// other is judged against it.
	cur, err := keypairBinding(ctx, tx, j.JoinToken, s.engine.forUpdate)
	if err != nil {
		return err
	}
	now := time.Now()
	if cur == nil {
		// The first join since the token was made.
		res, err := tx.ExecContext(ctx, `INSERT INTO keypair_bindings (join_token, binding, public_key, sequence, last_keys,
			last_remote, last_time, locked_time, locked_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, '')
			ON CONFLICT (join_token) DO NOTHING`,
			j.JoinToken, j.Binding, j.NewPublicKey, j.Presented+1, j.Keys, j.Remote, now.UnixNano())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			return tx.Commit()
		}
		// Another join started it first (PostgreSQL waited for its commit).
		if cur, err = keypairBinding(ctx, tx, j.JoinToken, s.engine.forUpdate); err != nil {
			return err
		} else if cur == nil {
			return fmt.Errorf("join token %s: keypair state not recorded", j.JoinToken)
		}
	}
	if cur.Binding != j.Binding {
		// The first join since the admin bound another key or secret; the
		// row is locked, so a racing join waits and is judged against this one.
		res, err := tx.ExecContext(ctx, `UPDATE keypair_bindings SET binding = $1, public_key = $2, sequence = $3, last_keys = $4,
			last_remote = $5, last_time = $6, locked_time = 0, locked_reason = '' WHERE join_token = $7 AND binding = $8`,
			j.Binding, j.NewPublicKey, j.Presented+1, j.Keys, j.Remote, now.UnixNano(), j.JoinToken, cur.Binding)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return errors.Join(fmt.Errorf("join token %s: the keypair binding changed meanwhile: %w", j.JoinToken, ErrConflict), err)
		}
		return tx.Commit()
	}
	if cur.Lock != nil {
		return &KeypairMismatch{Current: cur, Lock: cur.Lock}
	}
	switch {
	case j.Presented >= cur.Sequence && j.PublicKey == cur.PublicKey:
		// Ahead: the runner counts a join whose answer it lost as
		// admitted, and that join may never have arrived. A copy is still
		// caught: the sequence moves past whatever one holder presents, so
		// the other holder's next join presents an older one.
		res, err := tx.ExecContext(ctx, `UPDATE keypair_bindings SET public_key = $1, sequence = $2, last_keys = $3, last_remote = $4,
			last_time = $5 WHERE join_token = $6 AND sequence = $7 AND locked_time = 0`,
			j.NewPublicKey, j.Presented+1, j.Keys, j.Remote, now.UnixNano(), j.JoinToken, cur.Sequence)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return tx.Commit()
		}
	case j.Presented+1 == cur.Sequence && j.Keys != "" && j.Keys == cur.LastKeys && j.NewPublicKey == cur.PublicKey:
		return nil
	}
	lock := &KeypairLock{Time: now.UTC(), Reason: fmt.Sprintf(
		"a join from %s at %s presented sequence %d, but the join from %s at %s had already moved the token to sequence %d: two holders of the key are joining",
		j.Remote, now.UTC().Format(time.RFC3339), j.Presented, cur.LastRemote, cur.LastTime.Format(time.RFC3339), cur.Sequence)}
	if _, err := tx.ExecContext(ctx, `UPDATE keypair_bindings SET locked_time = $1, locked_reason = $2 WHERE join_token = $3 AND locked_time = 0`,
		lock.Time.UnixNano(), lock.Reason, j.JoinToken); err != nil {
		return err
	}
	if err := s.locksChanged(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return &KeypairMismatch{Current: cur, Lock: lock}
}

// UnlockKeypair lifts the lock on joinToken and keeps its key and sequence:
// the holder with the current sequence joins again, and a holder with an
// older one locks the token again. It returns ErrNotLocked, changing
// nothing, if the token is not locked.
func (s *sqlStore) UnlockKeypair(ctx context.Context, joinToken string) (*KeypairLock, error) {
	l, err := s.unlockKeypair(ctx, joinToken)
	return l, s.wrap("unlocking join token "+joinToken, err)
}

func (s *sqlStore) unlockKeypair(ctx context.Context, joinToken string) (*KeypairLock, error) {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	cur, err := keypairBinding(ctx, tx, joinToken, s.engine.forUpdate)
	if err != nil {
		return nil, err
	}
	if cur == nil || cur.Lock == nil {
		return nil, ErrNotLocked
	}
	if _, err := tx.ExecContext(ctx, `UPDATE keypair_bindings SET locked_time = 0, locked_reason = '' WHERE join_token = $1`, joinToken); err != nil {
		return nil, err
	}
	if err := s.locksChanged(ctx, tx); err != nil {
		return nil, err
	}
	return cur.Lock, tx.Commit()
}
