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

// lockTables is this process's copy of the store's locks on bot instances,
// bots and admins, so that a join, a renewal or an admin request checks its
// name without a query. A lock this process writes (renew, LockAdmin) or lifts (Unlock,
// UnlockAdmin) counts from the moment it is committed; locks that other
// processes sharing the store write or lift (another replica, mbot rm,
// mbot lock or mbot unlock in local mode) are read again with the
// resources, at most reloadInterval late.
type lockTables struct {
	bots      atomic.Pointer[map[string]*store.BotLock]
	instances atomic.Pointer[map[string]*store.InstanceLock]
	admins    atomic.Pointer[map[string]*store.AdminLock]

	mu sync.Mutex // held while changing bots or admins
	// changes counts the locks added or lifted by this process: a read of
	// the store that ran while one was may lack it, and is dropped.
	changes uint64
}

// lookup returns the lock on bot, or nil if it is not locked.
func (l *lockTables) lookup(bot string) *store.BotLock {
	return (*l.bots.Load())[bot]
}

// lookupInstance returns the lock on instance, or nil if it is not locked.
func (l *lockTables) lookupInstance(instance string) *store.InstanceLock {
	return (*l.instances.Load())[instance]
}

// lookupAdmin returns the lock on admin, or nil if it is not locked.
func (l *lockTables) lookupAdmin(admin string) *store.AdminLock {
	return (*l.admins.Load())[admin]
}

// addInstance records an instance lock this process has just committed to
// the store.
func (l *lockTables) addInstance(lock *store.InstanceLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := (*l.instances.Load())[lock.Instance]; !ok {
		setLock(&l.instances, lock.Instance, lock)
	}
	l.changes++
}

// removeUnlocked records that this process has just lifted what u lists.
func (l *lockTables) removeUnlocked(bot string, u *store.Unlock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if u.Lock != nil {
		setLock(&l.bots, bot, nil)
	}
	for _, in := range u.Instances {
		setLock(&l.instances, in.Instance, nil)
	}
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
	instances, err := st.InstanceLocks(ctx)
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
		l.instances.Store(&instances)
		l.admins.Store(&admins)
	}
	return nil
}

// Unlocked is what Unlock or UnlockInstance lifted, as the admin API
// answers it.
type Unlocked struct {
	Bot string `json:"bot"`
	// Instances are the instance locks lifted (their IDs, runners and
	// reasons), by first join.
	Instances []UnlockedInstance `json:"instances"`
	// BotLock is set when a bot-wide lock, written by an authority before
	// instance-scoped locks, was lifted with every renewal of the bot.
	BotLock *UnlockedBotLock `json:"bot_lock,omitempty"`
	// EndedJoinTokens are the join tokens whose identities of the bot no
	// longer renew: their holders join again with a new secret.
	EndedJoinTokens []string `json:"ended_join_tokens"`
}

// UnlockedInstance is one lifted instance lock.
type UnlockedInstance struct {
	ID          string    `json:"id"`
	JoinToken   string    `json:"join_token"`
	FirstJoin   time.Time `json:"first_join,omitzero"`
	Runner      string    `json:"runner,omitempty"`
	LockedSince time.Time `json:"locked_since"`
	Reason      string    `json:"reason"`
}

// UnlockedBotLock is a lifted bot-wide lock.
type UnlockedBotLock struct {
	LockedSince time.Time `json:"locked_since"`
	Reason      string    `json:"reason"`
	// LockedBy is the join token whose identity was copied.
	LockedBy string `json:"locked_by_join_token"`
}

// Unlock lifts every lock on bot, at once for this process: the locks of
// its instances whose identity was copied, ending those instances'
// renewals (the copy cannot be told from the original), and a bot-wide
// lock from an earlier authority, ending every renewal of the bot. Its
// instances that were not locked keep renewing. actor names who unlocked
// it, for the audit log. A bot with nothing locked is refused and left
// alone, so that a mistaken unlock ends no renewals.
func (a *Authority) Unlock(ctx context.Context, bot, actor string) (*Unlocked, error) {
	a.refreshNow(ctx)
	set := a.Resources()
	if _, ok := set.Bots[bot]; !ok {
		return nil, set.NotFound(resources.KindBot, bot)
	}
	u, err := a.store.UnlockBot(ctx, bot)
	if errors.Is(err, store.ErrNotLocked) {
		return nil, fmt.Errorf("bot %q has no locked instance, so there is nothing to unlock; its identities keep renewing (mbot get bot_instances %s lists them)", bot, bot)
	}
	if err != nil {
		return nil, fmt.Errorf("unlocking bot %q: %w", bot, err)
	}
	return a.recordUnlock(ctx, "bot.unlock", bot, u, actor), nil
}

// UnlockInstance lifts the lock on one bot instance (its ID, as mbot get
// bot_instances lists it) and ends its renewals; the bot's other instances
// are untouched. An instance that is not locked is refused and left alone.
func (a *Authority) UnlockInstance(ctx context.Context, id, actor string) (*Unlocked, error) {
	if !validInstanceID(id) {
		return nil, fmt.Errorf("%s is not a bot instance ID: an ID is 32 hexadecimal digits, as mbot get bot_instances lists it", identity.Quote(identity.Truncate(id, 64)))
	}
	u, err := a.store.UnlockInstance(ctx, id)
	switch {
	case errors.Is(err, store.ErrUnknownInstance):
		return nil, fmt.Errorf("there is no bot instance %s (mbot get bot_instances lists them); it may have been unlocked already, or its bot or join token removed", id)
	case errors.Is(err, store.ErrNotLocked):
		return nil, fmt.Errorf("bot instance %s is not locked, so there is nothing to unlock; it keeps renewing", id)
	case err != nil:
		return nil, fmt.Errorf("unlocking bot instance %s: %w", id, err)
	}
	return a.recordUnlock(ctx, "bot_instance.unlock", u.Instances[0].Bot, u, actor), nil
}

// validInstanceID reports whether id has the shape of a renewal chain ID
// (newLineage), so that nothing else reaches the store or the audit log.
func validInstanceID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// recordUnlock applies what the store lifted to this process's locks,
// audits and logs it, and returns it as the admin API answers it.
func (a *Authority) recordUnlock(ctx context.Context, event, bot string, u *store.Unlock, actor string) *Unlocked {
	a.locks.removeUnlocked(bot, u)
	out := &Unlocked{Bot: bot, Instances: []UnlockedInstance{}, EndedJoinTokens: nonNil(u.JoinTokens)}
	var what []string
	if u.Lock != nil {
		out.BotLock = &UnlockedBotLock{LockedSince: u.Lock.Time, Reason: u.Lock.Reason, LockedBy: u.Lock.JoinToken}
		what = append(what, fmt.Sprintf("bot-wide lock since %s: %s", u.Lock.Time.Format(time.RFC3339), u.Lock.Reason))
	}
	for _, l := range u.Instances {
		out.Instances = append(out.Instances, UnlockedInstance{ID: l.Instance, JoinToken: l.JoinToken, FirstJoin: l.FirstJoin,
			Runner: l.Runner, LockedSince: l.Time, Reason: l.Reason})
		what = append(what, fmt.Sprintf("instance %s (%s) locked since %s: %s", l.Instance, runnerOf(l), l.Time.Format(time.RFC3339), l.Reason))
	}
	ended := strings.Join(out.EndedJoinTokens, ", ")
	if ended == "" {
		ended = "none"
	}
	ev := &store.AuditEvent{Event: event, Allowed: true, Bot: bot, Remote: actor,
		Message: fmt.Sprintf("unlocked bot %s: %s; renewals ended for join tokens: %s", bot, strings.Join(what, "; "), ended)}
	if len(u.Instances) == 1 {
		ev.JoinToken = u.Instances[0].JoinToken
		ev.Claims = map[string]string{"instance": u.Instances[0].Instance}
	}
	a.auditAdmin(ctx, ev)
	a.log.Warn("unlocked a bot's locked instances; their identities from before no longer renew", "bot", bot, "by", actor,
		"instances", len(u.Instances), "ended_join_tokens", out.EndedJoinTokens)
	return out
}

// runnerOf says which runner an instance is, for messages and the audit log.
func runnerOf(l *store.InstanceLock) string {
	if l.FirstJoin.IsZero() {
		return "runner unknown: joined before instances were recorded"
	}
	r := "first joined " + l.FirstJoin.Format(time.RFC3339)
	if l.Runner != "" {
		r += " from " + l.Runner
	}
	return r
}

// BotInstances lists the instances of bot (of every bot for ""): each
// token-joined runner's renewal chain, with its last renewal and state.
func (a *Authority) BotInstances(ctx context.Context, bot string) ([]store.BotInstance, error) {
	if bot != "" {
		if err := identity.CheckName("bot", bot); err != nil {
			return nil, err
		}
	}
	list, err := a.store.BotInstances(ctx, bot)
	if err != nil {
		return nil, fmt.Errorf("listing bot instances: %w", err)
	}
	return list, nil
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

// JoinTokenUnlocked is what UnlockJoinToken lifted, as the admin API answers it.
type JoinTokenUnlocked struct {
	JoinToken   string    `json:"join_token"`
	LockedSince time.Time `json:"locked_since"`
	Reason      string    `json:"reason"`
}

// UnlockJoinToken lifts the lock on a bound_keypair join token whose key
// was used from two places. The key and join sequence stay: the holder
// with the current sequence joins again, and one with an older sequence
// locks the token again. Binding a new key (mbot tokens add --rotate) is
// the way to shut a copy out; this is for a copy that is known to be gone.
func (a *Authority) UnlockJoinToken(ctx context.Context, name, actor string) (*JoinTokenUnlocked, error) {
	a.refreshNow(ctx)
	set := a.Resources()
	if _, ok := set.JoinTokens[name]; !ok {
		return nil, set.NotFound(resources.KindJoinToken, name)
	}
	lock, err := a.store.UnlockKeypair(ctx, name)
	if errors.Is(err, store.ErrNotLocked) {
		return nil, fmt.Errorf("join token %q is not locked, so there is nothing to unlock", name)
	}
	if err != nil {
		return nil, fmt.Errorf("unlocking join token %q: %w", name, err)
	}
	out := &JoinTokenUnlocked{JoinToken: name, LockedSince: lock.Time, Reason: lock.Reason}
	a.auditAdmin(ctx, &store.AuditEvent{Event: "join_token.unlock", Allowed: true, JoinToken: name, Remote: actor,
		Message: fmt.Sprintf("unlocked join token %s, locked since %s: %s", name, lock.Time.Format(time.RFC3339), lock.Reason)})
	a.log.Warn("unlocked a join token whose key was used from two places", "join_token", name, "by", actor)
	return out, nil
}
