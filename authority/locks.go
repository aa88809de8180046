package authority

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/mbot-dev/mbot/authority/store"
)

// botLocks is this process's copy of the store's bot locks, so that a join
// checks its bot without a query. A lock this process writes (renew) counts
// from the moment it is committed; locks that other processes sharing the
// store write or lift (another replica, mbot rm in local mode) are read
// again with the resources, at most reloadInterval late.
type botLocks struct {
	byBot atomic.Pointer[map[string]*store.BotLock]

	mu sync.Mutex // held while changing byBot
	// added counts the locks added by this process: a read of the store
	// that ran while one was added may lack it, and is dropped.
	added uint64
}

// lookup returns the lock on bot, or nil if it is not locked.
func (l *botLocks) lookup(bot string) *store.BotLock {
	return (*l.byBot.Load())[bot]
}

// add records a lock this process has just committed to the store.
func (l *botLocks) add(lock *store.BotLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := maps.Clone(*l.byBot.Load())
	if _, ok := next[lock.Bot]; !ok {
		next[lock.Bot] = lock
	}
	l.byBot.Store(&next)
	l.added++
}

// reload replaces the locks with the store's.
func (l *botLocks) reload(ctx context.Context, st *store.Store) error {
	l.mu.Lock()
	seen := l.added
	l.mu.Unlock()
	locks, err := st.BotLocks(ctx)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.added == seen {
		l.byBot.Store(&locks)
	}
	return nil
}
