package authority

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
)

// lockSet is this process's copy of the store's locks (package locks):
// those admins set and those the authority set itself, read together with
// the store's locks version. A join, a renewal or an exchange checks its
// subject against the copy without a query and commits only if the
// store's locks and resources versions are still the copy's
// (store.RecordJoinSeen, store.Renewal.Seen): a change committed by any
// process (another replica, mbot lock, rm or apply in local mode) before
// the commit makes it decide again on the current locks.
type lockSet struct {
	set atomic.Pointer[locks.Set]
	mu  sync.Mutex // held while storing a newer set
}

// load returns the current lock set.
func (l *lockSet) load() *locks.Set { return l.set.Load() }

// reload reads the store's locks; a set older than the current one (two
// reloads racing) is dropped.
func (l *lockSet) reload(ctx context.Context, st store.Store) error {
	state, err := st.LockState(ctx)
	if err != nil {
		return err
	}
	next := locks.FromStore(state)
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur := l.set.Load(); cur == nil || next.Generation() > cur.Generation() {
		l.set.Store(next)
	}
	return nil
}

// Locks returns the lock set in effect; its Generation changes with every
// change of the store's locks.
func (a *Authority) Locks() *locks.Set { return a.lockSet.load() }

// changedSince reads what other processes changed and reports whether the
// resources or locks in effect are no longer st and ls: a refusal decided
// on those is decided again (a change read by followChanges in between
// counts too).
func (a *Authority) changedSince(ctx context.Context, st *state, ls *locks.Set) bool {
	a.refreshNow(ctx)
	return a.state.Load() != st || a.Locks() != ls
}

// checkLocks refuses what sub covers a lock of ls for; what names the
// request ("join", "renewal", "exchange").
func checkLocks(ls *locks.Set, sub locks.Subject, what string) error {
	if l, ok := ls.Match(sub, time.Now()); ok {
		return l.Refusal(what)
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
	a.reloadLocksLogged(ctx)
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

// LockRequest asks for a lock (POST PathAdminLocks; the admin lock path
// takes only Reason).
type LockRequest struct {
	// Kind is bot, bot_instance, join_token, role, cert, claim or admin.
	Kind string `json:"kind"`
	// Target is the name, instance ID or serial; for a claim NAME=VALUE.
	Target string `json:"target"`
	Reason string `json:"reason"`
	// Expires is an RFC 3339 time or a duration from now ("2h"); empty
	// for a lock that stays until it is lifted.
	Expires string `json:"expires,omitempty"`
}

// LockAdded is what Lock answers: the lock, and what it cannot stop.
type LockAdded struct {
	Lock  locks.Lock `json:"lock"`
	Notes []string   `json:"notes"`
	// Unrevocable are the unexpired credentials the lock covers that no
	// revocation list reaches, by kind: they stay valid until they expire.
	Unrevocable []Unrevocable `json:"unrevocable"`
}

// Unrevocable is how many unexpired credentials of one kind a lock covers
// that cannot be revoked, and when the last of them expires.
type Unrevocable struct {
	// Kind is "kubeconfig" (a kubernetes output's client certificate:
	// kube-apiserver reads no CRL) or "jwt-svid" (a JWT-SVID has no list).
	Kind         string    `json:"kind"`
	Count        int       `json:"count"`
	LatestExpiry time.Time `json:"latest_expiry"`
}

// unrevocableKinds are the issued-certificate CAs whose credentials no
// revocation list reaches, and what mbot lock calls them.
var unrevocableKinds = []struct{ ca, kind string }{
	{caKubernetesClient + "-ca", "kubeconfig"},
	{jwtIssuedCA, "jwt-svid"},
}

// unrevocable reads the unexpired kubeconfigs and JWT-SVIDs that lock covers.
func (a *Authority) unrevocable(ctx context.Context, lock locks.Lock, now time.Time) ([]Unrevocable, error) {
	one := locks.NewSet(0, []locks.Lock{lock})
	out := []Unrevocable{}
	for _, k := range unrevocableKinds {
		issued, err := a.store.IssuedCertificates(ctx, store.IssuedFilter{ValidAt: now, CA: k.ca})
		if err != nil {
			return nil, fmt.Errorf("reading the %ss issued: %w", k.kind, err)
		}
		u := Unrevocable{Kind: k.kind}
		for _, c := range issued {
			sub := locks.Subject{Bot: c.Bot, Instance: c.BotInstance, JoinToken: c.JoinToken, Roles: c.Roles, Claims: c.Claims,
				Serials: []string{locks.CertSerial(c.CA, c.Serial)}}
			if _, ok := one.Covers(sub, now); ok {
				u.Count++
				if c.NotAfter.After(u.LatestExpiry) {
					u.LatestExpiry = c.NotAfter.UTC()
				}
			}
		}
		if u.Count > 0 {
			out = append(out, u)
		}
	}
	return out, nil
}

// unrevocableNotes say what of the lock's cover stays valid, and until when.
func unrevocableNotes(list []Unrevocable, now time.Time) []string {
	if len(list) == 0 {
		return []string{"no kubeconfigs (kubernetes outputs) or JWT-SVIDs it covers are unexpired; those cannot be revoked (kube-apiserver reads no revocation list, and a JWT-SVID has none), " +
			"so a kubeconfig stops only at its expiry, a JWT-SVID within 1 h, and neither is renewed once locked"}
	}
	var parts []string
	for _, u := range list {
		until := fmt.Sprintf("the last expires at %s (in %s)", u.LatestExpiry.Format(time.RFC3339), u.LatestExpiry.Sub(now).Round(time.Second))
		switch u.Kind {
		case "kubeconfig":
			parts = append(parts, fmt.Sprintf("%d %s (kubernetes outputs) it covers cannot be revoked, since kube-apiserver reads no revocation list: "+
				"they stay valid until they expire and are not renewed; %s", u.Count, plural(u.Count, "kubeconfig", "kubeconfigs"), until))
		default:
			parts = append(parts, fmt.Sprintf("%d %s it covers cannot be revoked (a JWT-SVID has no revocation list): each lives at most 1 h and is not renewed once locked; %s",
				u.Count, plural(u.Count, "JWT-SVID", "JWT-SVIDs"), until))
		}
	}
	return parts
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// maxLockExpiry bounds --expires: a lock meant to last longer stays until
// it is lifted.
const maxLockExpiry = 10 * 366 * 24 * time.Hour

// Lock sets a lock: from the moment it returns, every join, renewal and
// exchange it covers is refused by every process sharing the store (and by
// leaves within a second), until it expires or mbot unlock lifts it.
// actor names who locked it, for the audit log.
func (a *Authority) Lock(ctx context.Context, req LockRequest, actor string) (*LockAdded, error) {
	target, err := a.checkLockTarget(ctx, req.Kind, req.Target)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	l := &store.Lock{Kind: req.Kind, Target: target, Reason: identity.Truncate(req.Reason, 512), Time: now, LockedBy: actor}
	if l.Reason == "" {
		l.Reason = "locked by " + actor
	}
	if req.Expires != "" {
		if l.Expires, err = parseExpiry(req.Expires, now); err != nil {
			return nil, err
		}
	}
	name := req.Kind + "/" + target
	err = a.store.AddLock(ctx, l)
	if errors.Is(err, store.ErrAlreadyLocked) {
		return nil, fmt.Errorf("%s is already locked; nothing changed (mbot get locks shows the lock, mbot unlock %s lifts it)", identity.Printable(name), identity.Printable(name))
	}
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", identity.Printable(name), err)
	}
	a.reloadLocksLogged(ctx)
	lock := locks.Lock{Kind: l.Kind, Target: l.Target, Reason: l.Reason, Since: l.Time, Expires: l.Expires, LockedBy: l.LockedBy}
	claims := map[string]string{"kind": l.Kind, "target": l.Target}
	until := "until unlocked"
	if !l.Expires.IsZero() {
		claims["expires"] = l.Expires.Format(time.RFC3339)
		until = "until " + claims["expires"]
	}
	ev := &store.AuditEvent{Event: l.Kind + ".lock", Allowed: true, Remote: actor, Claims: claims,
		Message: fmt.Sprintf("locked %s %s: %s", name, until, l.Reason)}
	switch l.Kind {
	case locks.KindAdmin:
		claims["admin"] = l.Target
	case locks.KindBot:
		ev.Bot = l.Target
	case locks.KindJoinToken:
		ev.JoinToken = l.Target
	}
	ev.Bound()
	a.auditAdmin(ctx, ev)
	a.log.Warn("locked; what the lock covers is refused", "lock", name, "expires", l.Expires, "by", actor)
	out := &LockAdded{Lock: lock, Unrevocable: []Unrevocable{}}
	if l.Kind != locks.KindAdmin {
		// The lock is set: a failure to read what it cannot revoke is said, not returned.
		var notes []string
		if out.Unrevocable, err = a.unrevocable(ctx, lock, now); err != nil {
			out.Unrevocable = []Unrevocable{}
			notes = []string{"the kubeconfigs and JWT-SVIDs it covers could not be read (" + identity.Truncate(err.Error(), 200) + "); they cannot be revoked, " +
				"stay valid until they expire (a JWT-SVID within 1 h) and are not renewed"}
		} else {
			notes = unrevocableNotes(out.Unrevocable, now)
		}
		out.Notes = append([]string{
			"every join, renewal and exchange it covers is refused from now on, by every replica, and by leaf clusters within a second; " +
				"its unexpired SSH user and X.509 certificates are in the KRL and CRLs (GET /v1/revocations/...), which servers honour once they fetch them"},
			notes...)
	}
	return out, nil
}

// checkLockTarget checks what a lock names and returns its target as
// stored: the bot, join token, role and instance must exist (a typo must
// not lock nothing and say done), a serial is normalised.
func (a *Authority) checkLockTarget(ctx context.Context, kind, target string) (string, error) {
	a.refreshNow(ctx)
	set := a.Resources()
	switch kind {
	case locks.KindBot, locks.KindJoinToken, locks.KindRole:
		if err := identity.CheckName(kind, target); err != nil {
			return "", err
		}
		var ok bool
		switch kind {
		case locks.KindBot:
			_, ok = set.Bots[target]
		case locks.KindJoinToken:
			_, ok = set.JoinTokens[target]
		default:
			_, ok = set.Roles[target]
		}
		if !ok {
			return "", set.NotFound(kind, target)
		}
	case locks.KindAdmin:
		if err := identity.CheckName("admin name", target); err != nil {
			return "", err
		}
	case locks.KindInstance:
		if !validInstanceID(target) {
			return "", fmt.Errorf("%s is not a bot instance ID: an ID is 32 hexadecimal digits, as mbot get bot_instances lists it", identity.Quote(identity.Truncate(target, 64)))
		}
		list, err := a.store.BotInstances(ctx, "")
		if err != nil {
			return "", fmt.Errorf("listing bot instances: %w", err)
		}
		if !slices.ContainsFunc(list, func(in store.BotInstance) bool { return in.ID == target }) {
			return "", fmt.Errorf("there is no bot instance %s (mbot get bot_instances lists them)", target)
		}
	case locks.KindCert:
		return locks.NormalizeSerial(target)
	case locks.KindClaim:
		return checkClaimTarget(target)
	default:
		return "", fmt.Errorf("%s is not a kind of lock; lock one of bot/NAME, bot_instance/ID, join_token/NAME, role/NAME, cert/SERIAL, admin/NAME or --claim NAME=VALUE",
			identity.Quote(identity.Truncate(kind, 40)))
	}
	return target, nil
}

// checkClaimTarget checks a claim lock's NAME=VALUE: a claim name as the
// audit records it, and a value of at most MaxClaimValue printable bytes.
func checkClaimTarget(target string) (string, error) {
	name, value, ok := strings.Cut(target, "=")
	valid := ok && name != "" && len(name) <= store.MaxAuditClaimKey && value != "" && len(value) <= store.MaxAuditClaimValue
	for _, c := range name {
		valid = valid && ('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.')
	}
	if !valid || identity.Printable(value) != value {
		return "", fmt.Errorf("--claim %s is not NAME=VALUE of an identifying claim as mbot audit shows it (for example repository=acme/app); the value is matched exactly",
			identity.Quote(identity.Truncate(target, 80)))
	}
	return target, nil
}

// parseExpiry reads --expires: an RFC 3339 time or a duration from now.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		d, derr := time.ParseDuration(s)
		if derr != nil {
			return time.Time{}, fmt.Errorf("--expires %s is neither a duration (2h, 30m) nor an RFC 3339 time (2026-12-31T18:00:00Z)", identity.Quote(identity.Truncate(s, 64)))
		}
		t = now.Add(d)
	}
	switch {
	case !t.After(now):
		return time.Time{}, fmt.Errorf("--expires %s is not in the future", identity.Quote(identity.Truncate(s, 64)))
	case t.Sub(now) > maxLockExpiry:
		return time.Time{}, fmt.Errorf("--expires %s is more than 10 years away; leave it out for a lock that stays until it is lifted", identity.Quote(identity.Truncate(s, 64)))
	}
	return t.UTC(), nil
}

// LockLifted is what UnlockLock lifted.
type LockLifted struct {
	// Lifted is the admin's lock lifted, if there was one.
	Lifted *locks.Lock `json:"lifted,omitempty"`
	// Instances is set when the authority's locks on a bot or instance
	// were lifted (ending their renewals), JoinToken when a bound_keypair
	// join token's was.
	Instances *Unlocked          `json:"instances,omitempty"`
	JoinToken *JoinTokenUnlocked `json:"join_token,omitempty"`
	// Remaining are the locks that still hold on the same target.
	Remaining []locks.Lock `json:"remaining"`
}

// UnlockLock lifts the lock an admin set on kind/target; where there is
// none, the lock the authority set there itself (a bot's copied instances,
// one instance, a bound_keypair join token), as mbot unlock always did.
// Something that is not locked is refused and left alone.
func (a *Authority) UnlockLock(ctx context.Context, kind, target, actor string) (*LockLifted, error) {
	if kind == locks.KindCert {
		t, err := locks.NormalizeSerial(target)
		if err != nil {
			return nil, err
		}
		target = t
	}
	name := kind + "/" + target
	if !slices.Contains(locks.Kinds, kind) {
		return nil, fmt.Errorf("%s is not a kind of lock (mbot get locks lists them)", identity.Quote(identity.Truncate(kind, 40)))
	}
	out := &LockLifted{Remaining: []locks.Lock{}}
	l, err := a.store.RemoveLock(ctx, kind, target)
	switch {
	case err == nil:
		a.reloadLocksLogged(ctx)
		out.Lifted = &locks.Lock{Kind: l.Kind, Target: l.Target, Reason: l.Reason, Since: l.Time, Expires: l.Expires, LockedBy: l.LockedBy}
		ev := &store.AuditEvent{Event: kind + ".unlock", Allowed: true, Remote: actor, Claims: map[string]string{"kind": kind, "target": target},
			Message: fmt.Sprintf("unlocked %s, locked since %s by %s: %s", name, l.Time.Format(time.RFC3339), l.LockedBy, l.Reason)}
		if kind == locks.KindAdmin {
			ev.Claims["admin"] = target
		}
		ev.Bound()
		a.auditAdmin(ctx, ev)
		a.log.Warn("unlocked", "lock", name, "by", actor)
	case !errors.Is(err, store.ErrNotLocked):
		return nil, fmt.Errorf("unlocking %s: %w", identity.Printable(name), err)
	case kind == locks.KindBot:
		if out.Instances, err = a.Unlock(ctx, target, actor); err != nil {
			return nil, err
		}
	case kind == locks.KindInstance:
		if out.Instances, err = a.UnlockInstance(ctx, target, actor); err != nil {
			return nil, err
		}
	case kind == locks.KindJoinToken:
		if out.JoinToken, err = a.UnlockJoinToken(ctx, target, actor); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s is not locked, so there is nothing to unlock (mbot get locks lists the locks)", identity.Printable(name))
	}
	for _, rest := range a.Locks().List(time.Now()) {
		if rest.Kind == kind && rest.Target == target {
			out.Remaining = append(out.Remaining, rest)
		}
	}
	return out, nil
}

// LockAdmin locks admin (mbot lock --admin): the admin API refuses every
// identity of that name (admin_locked) until UnlockAdmin.
func (a *Authority) LockAdmin(ctx context.Context, admin, reason, actor string) (*locks.Lock, error) {
	added, err := a.Lock(ctx, LockRequest{Kind: locks.KindAdmin, Target: admin, Reason: reason}, actor)
	if err != nil {
		return nil, err
	}
	return &added.Lock, nil
}

// UnlockAdmin lifts the lock on admin: its identities that have not
// expired work again. An admin that is not locked is refused.
func (a *Authority) UnlockAdmin(ctx context.Context, admin, actor string) (*locks.Lock, error) {
	if err := identity.CheckName("admin name", admin); err != nil {
		return nil, err
	}
	lifted, err := a.UnlockLock(ctx, locks.KindAdmin, admin, actor)
	if err != nil {
		return nil, err
	}
	return lifted.Lifted, nil
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
