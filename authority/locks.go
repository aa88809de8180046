package authority

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
)

// botLocks is this process's copy of the store's bot locks, so that a join
// checks its bot without a query. A lock this process writes (renew) or
// lifts (Unlock) counts from the moment it is committed; locks that other
// processes sharing the store write or lift (another replica, mbot rm or
// mbot unlock in local mode) are read again with the resources, at most
// reloadInterval late.
type botLocks struct {
	byBot atomic.Pointer[map[string]*store.BotLock]

	mu sync.Mutex // held while changing byBot
	// changes counts the locks added or lifted by this process: a read of
	// the store that ran while one was may lack it, and is dropped.
	changes uint64
}

// lookup returns the lock on bot, or nil if it is not locked.
func (l *botLocks) lookup(bot string) *store.BotLock {
	return (*l.byBot.Load())[bot]
}

// add records a lock this process has just committed to the store.
func (l *botLocks) add(lock *store.BotLock) {
	l.change(func(next map[string]*store.BotLock) {
		if _, ok := next[lock.Bot]; !ok {
			next[lock.Bot] = lock
		}
	})
}

// remove records that this process has just lifted the lock on bot.
func (l *botLocks) remove(bot string) {
	l.change(func(next map[string]*store.BotLock) { delete(next, bot) })
}

func (l *botLocks) change(edit func(map[string]*store.BotLock)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := maps.Clone(*l.byBot.Load())
	edit(next)
	l.byBot.Store(&next)
	l.changes++
}

// reload replaces the locks with the store's.
func (l *botLocks) reload(ctx context.Context, st *store.Store) error {
	l.mu.Lock()
	seen := l.changes
	l.mu.Unlock()
	locks, err := st.BotLocks(ctx)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changes == seen {
		l.byBot.Store(&locks)
	}
	return nil
}

// Unlocked is what Unlock lifted, as the admin API answers it.
type Unlocked struct {
	Bot         string    `json:"bot"`
	LockedSince time.Time `json:"locked_since"`
	Reason      string    `json:"reason"`
	// LockedBy is the join token whose identity was copied.
	LockedBy string `json:"locked_by_join_token"`
	// EndedJoinTokens are the join tokens whose identities of the bot no
	// longer renew: their holders join again with a new secret.
	EndedJoinTokens []string `json:"ended_join_tokens"`
}

// Unlock lifts the lock on bot, at once for this process, and ends the
// renewals of every identity of the bot: the lock means a copy of one is in
// use, and the copy cannot be told from the original. actor names who
// unlocked it, for the audit log. A bot that is not locked is refused and
// left alone, so that a mistaken unlock ends no renewals.
func (a *Authority) Unlock(ctx context.Context, bot, actor string) (*Unlocked, error) {
	a.refreshNow(ctx)
	set := a.Resources()
	if _, ok := set.Bots[bot]; !ok {
		return nil, set.NotFound(resources.KindBot, bot)
	}
	u, err := a.store.UnlockBot(ctx, bot)
	if errors.Is(err, store.ErrNotLocked) {
		return nil, fmt.Errorf("bot %q is not locked, so there is nothing to unlock; its identities keep renewing", bot)
	}
	if err != nil {
		return nil, fmt.Errorf("unlocking bot %q: %w", bot, err)
	}
	a.locks.remove(bot)
	out := &Unlocked{Bot: bot, LockedSince: u.Lock.Time, Reason: u.Lock.Reason, LockedBy: u.Lock.JoinToken, EndedJoinTokens: nonNil(u.JoinTokens)}
	ended := strings.Join(out.EndedJoinTokens, ", ")
	if ended == "" {
		ended = "none"
	}
	a.auditAdmin(ctx, &store.AuditEvent{Event: "bot.unlock", Allowed: true, Bot: bot, JoinToken: u.Lock.JoinToken, Remote: actor,
		Message: fmt.Sprintf("unlocked bot %s, locked since %s: %s; renewals ended for join tokens: %s",
			bot, u.Lock.Time.Format(time.RFC3339), u.Lock.Reason, ended)})
	a.log.Warn("unlocked a bot; its identities from before no longer renew", "bot", bot, "by", actor, "ended_join_tokens", out.EndedJoinTokens)
	return out, nil
}
