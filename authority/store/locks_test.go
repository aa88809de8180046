package store_test

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

// testLocks locks and unlocks through one handle and reads the locks from
// another (another process or replica): every change bumps the locks
// version, a second lock of the same target is refused, an expired one is
// replaced, and admin locks of stores before the locks table move into it.
func testLocks(t *testing.T, db *testDB) {
	ctx := t.Context()
	st := db.open(t)
	other := db.open(t)
	now := time.Now().UTC().Truncate(time.Microsecond)

	before, err := other.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lock := &store.Lock{Kind: "claim", Target: "repository=acme/app", Reason: "repository compromised", Time: now,
		Expires: now.Add(time.Hour), LockedBy: "local admin root"}
	if err := st.AddLock(ctx, lock); err != nil {
		t.Fatal(err)
	}
	if err := st.AddLock(ctx, &store.Lock{Kind: "claim", Target: "repository=acme/app", Reason: "again", Time: now}); !errors.Is(err, store.ErrAlreadyLocked) {
		t.Errorf("second lock: %v, want ErrAlreadyLocked", err)
	}
	if err := st.AddLock(ctx, &store.Lock{Kind: "admin", Target: "alice", Reason: "laptop lost", Time: now, LockedBy: "root"}); err != nil {
		t.Fatal(err)
	}
	state, err := other.LockState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(state.Locks) != 2 || state.Locks[0].Kind != "admin" || state.Locks[1] != *lock {
		t.Errorf("LockState from another handle = %+v, want the admin lock and %+v", state.Locks, *lock)
	}
	after, err := other.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Locks != before.Locks+2 || after.Resources != before.Resources || state.Version != after.Locks {
		t.Errorf("versions %+v -> %+v (lock state at %d), want the locks version up by 2", before, after, state.Version)
	}

	// An expired lock is replaced by a new one.
	if err := st.AddLock(ctx, &store.Lock{Kind: "bot", Target: "deployer", Reason: "for a minute", Time: now.Add(-2 * time.Minute),
		Expires: now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddLock(ctx, &store.Lock{Kind: "bot", Target: "deployer", Reason: "again", Time: now}); err != nil {
		t.Errorf("locking again after the lock expired: %v", err)
	}

	lifted, err := other.RemoveLock(ctx, "claim", "repository=acme/app")
	if err != nil || *lifted != *lock {
		t.Fatalf("RemoveLock = %+v, %v; want %+v", lifted, err, lock)
	}
	if _, err := st.RemoveLock(ctx, "claim", "repository=acme/app"); !errors.Is(err, store.ErrNotLocked) {
		t.Errorf("unlocking what is not locked: %v, want ErrNotLocked", err)
	}
	if v, err := st.Versions(ctx); err != nil || v.Locks != after.Locks+3 {
		t.Errorf("versions after two locks and an unlock = %+v, %v; want locks %d", v, err, after.Locks+3)
	}

	// The locks the authority writes itself are in the same state, and
	// bump the same version.
	if err := st.StartChain(ctx, "b", "t", "c", "192.0.2.1:4000"); err != nil {
		t.Fatal(err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: "k"}); err != nil {
		t.Fatal(err)
	}
	v0, _ := st.Versions(ctx)
	var mismatch *store.GenerationMismatch
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: "copy"}); !errors.As(err, &mismatch) {
		t.Fatalf("stale renewal: %v", err)
	}
	state, err = other.LockState(ctx)
	if err != nil || state.Instances["c"] == nil || state.Version != v0.Locks+1 {
		t.Errorf("after an instance lock: %+v, %v (version was %d)", state, err, v0.Locks)
	}
}

// testStaleJoinIsNotRecorded: a join admitted on versions that another
// handle changed since (mbot rm, mbot lock) writes nothing and fails with
// ErrStale; one on the current versions is recorded, a replay still is
// ErrReplay, and joins on both sides of a change in one batch each get
// their own answer.
func testStaleJoinIsNotRecorded(t *testing.T, db *testDB) {
	ctx := t.Context()
	st := db.open(t)
	other := db.open(t)
	exp := time.Now().Add(time.Hour)
	v, err := st.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := store.Seen{Resources: v.Resources, Locks: v.Locks}
	if err := st.RecordJoinSeen(ctx, "jti-1", exp, joinEvent("deployer"), nil, seen); err != nil {
		t.Fatalf("join on the current versions: %v", err)
	}
	if err := st.RecordJoinSeen(ctx, "jti-1", exp, joinEvent("deployer"), nil, seen); !errors.Is(err, store.ErrReplay) {
		t.Errorf("replay on the current versions: %v, want ErrReplay", err)
	}
	for _, change := range []struct {
		what string
		do   func() error
	}{
		{"a lock", func() error {
			return other.AddLock(ctx, &store.Lock{Kind: "bot", Target: "deployer", Time: time.Now()})
		}},
		{"a resource", func() error {
			return other.PutResources(ctx, []store.StoredResource{{Kind: "role", Name: "r", Body: []byte("kind: role\n")}})
		}},
	} {
		if err := change.do(); err != nil {
			t.Fatal(err)
		}
		rows := db.rows(t, "audit")
		if err := st.RecordJoinSeen(ctx, "jti-stale-"+change.what, exp, joinEvent("deployer"), &store.Chain{Bot: "deployer", JoinToken: "t", ID: "c9"}, seen); !errors.Is(err, store.ErrStale) {
			t.Errorf("join decided before %s changed: %v, want ErrStale", change.what, err)
		}
		if n := db.rows(t, "audit"); n != rows {
			t.Errorf("a stale join wrote an audit record (%d rows, were %d)", n, rows)
		}
		if n := db.rows(t, "bot_generations"); n != 0 {
			t.Errorf("a stale join started its chain")
		}
		if v, err = st.Versions(ctx); err != nil {
			t.Fatal(err)
		}
		seen = store.Seen{Resources: v.Resources, Locks: v.Locks}
		if err := st.RecordJoinSeen(ctx, "jti-stale-"+change.what, exp, joinEvent("deployer"), nil, seen); err != nil {
			t.Errorf("the same proof decided again on the current versions: %v (a stale join must not use its proof)", err)
		}
	}

	// Many joins at once, half on old versions: a batch answers each.
	old := seen
	if err := other.AddLock(ctx, &store.Lock{Kind: "role", Target: "r", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	v, _ = st.Versions(ctx)
	cur := store.Seen{Resources: v.Resources, Locks: v.Locks}
	var wg sync.WaitGroup
	errs := make([]error, 40)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := cur
			if i%2 == 1 {
				s = old
			}
			errs[i] = st.RecordJoinSeen(ctx, "batch-"+string(rune('A'+i)), exp, joinEvent("deployer"), nil, s)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if want := i%2 == 1; errors.Is(err, store.ErrStale) != want || (!want && err != nil) {
			t.Errorf("join %d (stale %v): %v", i, want, err)
		}
	}
}

// testStaleRenewalChangesNothing: a renewal decided before a lock changed
// fails with ErrStale and leaves its generation where it was.
func testStaleRenewalChangesNothing(t *testing.T, db *testDB) {
	ctx := t.Context()
	st := db.open(t)
	other := db.open(t)
	if err := st.StartChain(ctx, "b", "t", "c", "192.0.2.1:4000"); err != nil {
		t.Fatal(err)
	}
	v, _ := st.Versions(ctx)
	seen := store.Seen{Resources: v.Resources, Locks: v.Locks, Check: true}
	if err := other.AddLock(ctx, &store.Lock{Kind: "bot", Target: "b", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: "k", Seen: seen}); !errors.Is(err, store.ErrStale) {
		t.Fatalf("stale renewal: %v, want ErrStale", err)
	}
	v, _ = st.Versions(ctx)
	seen = store.Seen{Resources: v.Resources, Locks: v.Locks, Check: true}
	// Generation 1 is still the current one: the stale renewal moved nothing.
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: "k", Seen: seen}); err != nil {
		t.Fatalf("renewal on the current versions: %v", err)
	}
}

// testAuditBySerial: ListAudit with a serial finds the record of the
// certificate with exactly that serial, prefixed or bare.
func testAuditBySerial(t *testing.T, db *testDB) {
	ctx := t.Context()
	st := db.open(t)
	exp := time.Now().Add(time.Hour)
	for i, serials := range [][]string{{"ssh:123", "tls:AB12"}, {"ssh:1234", "tls:AB1"}, {"ssh:9"}} {
		ev := joinEvent("deployer")
		ev.Serials = serials
		if err := st.RecordJoin(ctx, "jti-"+string(rune('a'+i)), exp, ev); err != nil {
			t.Fatal(err)
		}
	}
	for serial, want := range map[string][]string{"ssh:123": {"ssh:123"}, "123": {"ssh:123"}, "tls:AB12": {"tls:AB12"}, "AB1": {"tls:AB1"},
		"tls:123": nil, "12": nil} {
		got, err := st.ListAudit(ctx, store.AuditFilter{Serial: serial})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || (len(want) == 1 && !slices.Contains(got[0].Serials, want[0])) {
			t.Errorf("ListAudit(serial %s) = %+v, want the record with %v", serial, got, want)
		}
	}
}
