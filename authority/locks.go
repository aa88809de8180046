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
	"github.com/mbot-dev/mbot/identity"
)

// lockTables is this process's copy of the store's locks on bots and on
// admins, so that a join or an admin request checks its name without a
// query. A lock this process writes (renew, LockAdmin) or lifts (Unlock,
// UnlockAdmin) counts from the moment it is committed; locks that other
// processes sharing the store write or lift (another replica, mbot rm,
// mbot lock or mbot unlock in local mode) are read again with the
// resources, at most reloadInterval late.
type lockTables struct {
	bots   atomic.Pointer[map[string]*store.BotLock]
	admins atomic.Pointer[map[string]*store.AdminLock]

	mu sync.Mutex // held while changing bots or admins
	// changes counts the locks added or lifted by this process: a read of
	// the store that ran while one was may lack it, and is dropped.
	changes uint64
}

// lookup returns the lock on bot, or nil if it is not locked.
func (l *lockTables) lookup(bot string) *store.BotLock {
	return (*l.bots.Load())[bot]
}

// lookupAdmin returns the lock on admin, or nil if it is not locked.
func (l *lockTables) lookupAdmin(admin string) *store.AdminLock {
	return (*l.admins.Load())[admin]
}

// add records a bot lock this process has just committed to the store.
func (l *lockTables) add(lock *store.BotLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := (*l.bots.Load())[lock.Bot]; !ok {
		setLock(&l.bots, lock.Bot, lock)
	}
	l.changes++
}

// remove records that this process has just lifted the lock on bot.
func (l *lockTables) remove(bot string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	setLock(&l.bots, bot, nil)
	l.changes++
}

// setAdmin records that this process has just locked (lock) or unlocked
// (nil) admin.
func (l *lockTables) setAdmin(admin string, lock *store.AdminLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	setLock(&l.admins, admin, lock)
	l.changes++
}

// setLock replaces the map in p by a copy with name set to lock, or
// without name for a nil lock.
func setLock[L any](p *atomic.Pointer[map[string]*L], name string, lock *L) {
	next := maps.Clone(*p.Load())
	if lock == nil {
		delete(next, name)
	} else {
		next[name] = lock
	}
	p.Store(&next)
}

// reload replaces the locks with the store's.
func (l *lockTables) reload(ctx context.Context, st store.Store) error {
	l.mu.Lock()
	seen := l.changes
	l.mu.Unlock()
	bots, err := st.BotLocks(ctx)
	if err != nil {
		return err
	}
	admins, err := st.AdminLocks(ctx)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changes == seen {
		l.bots.Store(&bots)
		l.admins.Store(&admins)
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

// LockAdmin locks admin: from now on the admin API refuses every identity
// of that name (admin_locked), at once in this process and within
// reloadInterval in the others sharing the store, until UnlockAdmin. It is
// how a copied or lost admin identity is revoked before it expires. actor
// names who locked it, for the audit log.
func (a *Authority) LockAdmin(ctx context.Context, admin, reason, actor string) (*store.AdminLock, error) {
	if err := identity.CheckName("admin name", admin); err != nil {
		return nil, err
	}
	if reason == "" {
		reason = "locked by " + actor
	}
	lock := &store.AdminLock{Admin: admin, Time: time.Now().UTC(), Reason: identity.Truncate(reason, 512), LockedBy: actor}
	err := a.store.LockAdmin(ctx, lock)
	if errors.Is(err, store.ErrAlreadyLocked) {
		return nil, fmt.Errorf("admin %q is already locked; nothing changed (mbot unlock --admin %s lifts the lock)", admin, admin)
	}
	if err != nil {
		return nil, fmt.Errorf("locking admin %q: %w", admin, err)
	}
	a.locks.setAdmin(admin, lock)
	a.auditAdmin(ctx, &store.AuditEvent{Event: "admin.lock", Allowed: true, Remote: actor, Claims: map[string]string{"admin": admin},
		Message: fmt.Sprintf("locked admin %s: %s", admin, lock.Reason)})
	a.log.Warn("locked an admin; the admin API refuses its identities", "admin", admin, "by", actor)
	return lock, nil
}

// UnlockAdmin lifts the lock on admin: its identities that have not
// expired work again. An admin that is not locked is refused.
func (a *Authority) UnlockAdmin(ctx context.Context, admin, actor string) (*store.AdminLock, error) {
	if err := identity.CheckName("admin name", admin); err != nil {
		return nil, err
	}
	lock, err := a.store.UnlockAdmin(ctx, admin)
	if errors.Is(err, store.ErrNotLocked) {
		return nil, fmt.Errorf("admin %q is not locked, so there is nothing to unlock", admin)
	}
	if err != nil {
		return nil, fmt.Errorf("unlocking admin %q: %w", admin, err)
	}
	a.locks.setAdmin(admin, nil)
	a.auditAdmin(ctx, &store.AuditEvent{Event: "admin.unlock", Allowed: true, Remote: actor, Claims: map[string]string{"admin": admin},
		Message: fmt.Sprintf("unlocked admin %s, locked since %s: %s", admin, lock.Time.Format(time.RFC3339), lock.Reason)})
	a.log.Warn("unlocked an admin", "admin", admin, "by", actor)
	return lock, nil
}
