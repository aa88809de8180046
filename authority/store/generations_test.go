package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/mbot-dev/mbot/authority/store"
)

// TestGenerationCounter walks a renewal chain the way a daemon and a thief
// would: each renewal must present the current generation; a retry with
// the same keys is served again; an older generation locks the bot.
func testGenerationCounter(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	const bot, tok, chain = "jenkins", "jenkins-1", "c1"
	renewal := func(gen uint64, keys string) store.Renewal {
		return store.Renewal{Bot: bot, JoinToken: tok, Chain: chain, Generation: gen, Keys: keys}
	}
	if err := st.AdvanceGeneration(ctx, renewal(1, "k1")); !errors.Is(err, store.ErrUnknownChain) {
		t.Fatalf("renewal before any token join: %v, want ErrUnknownChain", err)
	}
	if err := st.StartChain(ctx, bot, tok, chain, "192.0.2.1:4000"); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name    string
		r       store.Renewal
		wantErr string // "" admitted, "unknown", "mismatch"
	}{
		{"first renewal", renewal(1, "k2"), ""},
		{"retry after a lost answer", renewal(1, "k2"), ""},
		{"next renewal", renewal(2, "k3"), ""},
		{"other chain", store.Renewal{Bot: bot, JoinToken: tok, Chain: "c0", Generation: 3, Keys: "k4"}, "unknown"},
		{"generation from the future", renewal(7, "k4"), "mismatch"},
	}
	for _, s := range steps {
		err := st.AdvanceGeneration(ctx, s.r)
		var mismatch *store.GenerationMismatch
		switch s.wantErr {
		case "":
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		case "unknown":
			if !errors.Is(err, store.ErrUnknownChain) {
				t.Fatalf("%s: %v, want ErrUnknownChain", s.name, err)
			}
		case "mismatch":
			if !errors.As(err, &mismatch) || mismatch.Presented != s.r.Generation || mismatch.Current != 3 {
				t.Fatalf("%s: %v, want a mismatch of generation %d against 3", s.name, err, s.r.Generation)
			}
		}
	}
	if lock, err := st.BotLock(ctx, bot); err != nil || lock != nil {
		t.Errorf("BotLock after a mismatch = %v, %v; want none: the instance is locked, not the bot", lock, err)
	}
	all, err := st.InstanceLocks(ctx)
	lock := all[chain]
	if err != nil || len(all) != 1 || lock == nil {
		t.Fatalf("InstanceLocks = %v, %v; want only the lock of %s", all, err, chain)
	}
	if lock.Bot != bot || lock.JoinToken != tok || lock.Runner != "192.0.2.1:4000" || lock.FirstJoin.IsZero() ||
		!strings.Contains(lock.Reason, "generation 7") || lock.Time.IsZero() {
		t.Errorf("lock = %+v", lock)
	}
}

// TestStaleGenerationLocks is the stolen copy: the daemon renewed from
// generation 1, then the copy of generation 1 asks with keys of its own.
func testStaleGenerationLocks(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	if err := st.StartChain(ctx, "b", "t", "c", "192.0.2.1:4000"); err != nil {
		t.Fatal(err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: "daemon"}); err != nil {
		t.Fatal(err)
	}
	err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: "thief", Remote: "198.51.100.7:5000"})
	var mismatch *store.GenerationMismatch
	if !errors.As(err, &mismatch) || mismatch.Current != 2 || mismatch.Lock.Instance != "c" || mismatch.Lock.Bot != "b" ||
		!strings.Contains(mismatch.Lock.Reason, "198.51.100.7:5000") {
		t.Fatalf("stale generation: %v, want a mismatch that locks instance c", err)
	}
	// Once locked, the instance is refused whatever it presents: the copy
	// and the original alike.
	for _, r := range []store.Renewal{
		{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: ""},
		{Bot: "b", JoinToken: "t", Chain: "c", Generation: 2, Keys: "daemon2"},
	} {
		var locked *store.InstanceLockedError
		if err := st.AdvanceGeneration(ctx, r); !errors.As(err, &locked) || locked.Lock.Reason != mismatch.Lock.Reason {
			t.Errorf("renewal of generation %d of a locked instance: %v, want the first lock", r.Generation, err)
		}
	}
}

// TestInstanceLockIsScoped is issue 14 item 7: a copy of one runner's
// identity locks that runner's instance only; another instance of the
// same bot keeps renewing, and unlocking the instance ends its chain only.
func testInstanceLockIsScoped(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	for _, c := range [][4]string{{"b", "t1", "c1", "192.0.2.1:4000"}, {"b", "t2", "c2", "192.0.2.2:4000"}} {
		if err := st.StartChain(ctx, c[0], c[1], c[2], c[3]); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"c1", "c2"} {
		if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t" + c[1:], Chain: c, Generation: 1, Keys: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t1", Chain: "c1", Generation: 1, Keys: "copy"}); err == nil {
		t.Fatal("a stale generation was admitted")
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t2", Chain: "c2", Generation: 2, Keys: "k2"}); err != nil {
		t.Fatalf("the other instance of the bot: %v, want it to keep renewing", err)
	}
	list, err := st.BotInstances(ctx, "b")
	if err != nil || len(list) != 2 {
		t.Fatalf("BotInstances = %+v, %v", list, err)
	}
	if list[0].ID != "c1" || list[0].State != "locked" || list[0].Runner != "192.0.2.1:4000" || list[0].Generation != 2 ||
		list[0].FirstJoin.IsZero() || list[0].LastRenewal.IsZero() {
		t.Errorf("instance c1 = %+v, want locked at generation 2", list[0])
	}
	if list[1].ID != "c2" || list[1].State != "active" || list[1].Generation != 3 || list[1].JoinToken != "t2" {
		t.Errorf("instance c2 = %+v, want active at generation 3", list[1])
	}
	if other, err := st.BotInstances(ctx, "other"); err != nil || len(other) != 0 {
		t.Errorf("instances of another bot = %+v, %v", other, err)
	}

	if _, err := st.UnlockInstance(ctx, "c2"); !errors.Is(err, store.ErrNotLocked) {
		t.Errorf("unlocking an instance that is not locked: %v, want ErrNotLocked", err)
	}
	if _, err := st.UnlockInstance(ctx, "nope"); !errors.Is(err, store.ErrUnknownInstance) {
		t.Errorf("unlocking an unknown instance: %v, want ErrUnknownInstance", err)
	}
	u, err := st.UnlockInstance(ctx, "c1")
	if err != nil || len(u.Instances) != 1 || u.Instances[0].Instance != "c1" || u.Lock != nil || strings.Join(u.JoinTokens, ",") != "t1" {
		t.Fatalf("UnlockInstance = %+v, %v", u, err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t1", Chain: "c1", Generation: 2, Keys: "k3"}); !errors.Is(err, store.ErrUnlockedChain) {
		t.Errorf("renewal of the unlocked instance: %v, want ErrUnlockedChain", err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t2", Chain: "c2", Generation: 3, Keys: "k4"}); err != nil {
		t.Errorf("the other instance after the unlock: %v", err)
	}
	if locks, err := st.InstanceLocks(ctx); err != nil || len(locks) != 0 {
		t.Errorf("InstanceLocks after the unlock = %v, %v; want none", locks, err)
	}
}

// TestConcurrentRenewalsOfOneGeneration: of two holders of generation 1
// with different keys, exactly one wins and the other locks the bot.
func testConcurrentRenewalsOfOneGeneration(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	if err := st.StartChain(ctx, "b", "t", "c", "192.0.2.1:4000"); err != nil {
		t.Fatal(err)
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			errs[i] = st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: string(rune('a' + i))})
		})
	}
	wg.Wait()
	var won, lost int
	for _, err := range errs {
		var mismatch *store.GenerationMismatch
		switch {
		case err == nil:
			won++
		case errors.As(err, &mismatch):
			lost++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if won != 1 || lost != 1 {
		t.Errorf("%d renewals admitted and %d refused, want one of each: %v", won, lost, errs)
	}
}

// TestRemovingResourcesClearsRenewalState: removing a bot lifts its lock
// and ends its chains; removing a join token ends that token's chain.
func testRemovingResourcesClearsRenewalState(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	if err := st.PutResources(ctx, []store.StoredResource{
		{Kind: "bot", Name: "b", Body: []byte("bot")},
		{Kind: "join_token", Name: "t1", Body: []byte("t1")},
		{Kind: "join_token", Name: "t2", Body: []byte("t2")},
	}); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"t1", "t2"} {
		if err := st.StartChain(ctx, "b", tok, "c-"+tok, "192.0.2.1:4000"); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.DeleteResource(ctx, "join_token", "t1"); err != nil {
		t.Fatal(err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t1", Chain: "c-t1", Generation: 1, Keys: "k"}); !errors.Is(err, store.ErrUnknownChain) {
		t.Errorf("renewal of a removed join token's chain: %v, want ErrUnknownChain", err)
	}
	// Lock the bot through t2, then remove the bot.
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t2", Chain: "c-t2", Generation: 5, Keys: "k"}); err == nil {
		t.Fatal("a generation that was never issued was admitted")
	}
	if locks, _ := st.InstanceLocks(ctx); locks["c-t2"] == nil {
		t.Fatal("the instance is not locked")
	}
	if err := st.DeleteResource(ctx, "bot", "b"); err != nil {
		t.Fatal(err)
	}
	if locks, err := st.InstanceLocks(ctx); err != nil || len(locks) != 0 {
		t.Errorf("locks after removing the bot = %v, %v; want none", locks, err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t2", Chain: "c-t2", Generation: 1, Keys: "k"}); !errors.Is(err, store.ErrUnknownChain) {
		t.Errorf("renewal of a removed bot's chain: %v, want ErrUnknownChain", err)
	}
}

// TestUnlockBot: unlocking a bot lifts the locks of its instances and ends
// their chains, whose renewals are then refused as unlocked; its instances
// that were not locked keep renewing; a new join starts a new chain; other
// bots are untouched; a bot that is not locked is refused.
func testUnlockBot(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	if err := st.PutResources(ctx, []store.StoredResource{{Kind: "bot", Name: "b", Body: []byte("bot")}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][3]string{{"b", "t1", "c1"}, {"b", "t2", "c2"}, {"other", "o1", "co"}} {
		if err := st.StartChain(ctx, c[0], c[1], c[2], "192.0.2.1:4000"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.UnlockBot(ctx, "b"); !errors.Is(err, store.ErrNotLocked) {
		t.Fatalf("unlocking a bot that is not locked: %v, want ErrNotLocked", err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t1", Chain: "c1", Generation: 1, Keys: "k"}); err != nil {
		t.Fatalf("a refused unlock ended a chain: %v", err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t2", Chain: "c2", Generation: 4, Keys: "k"}); err == nil {
		t.Fatal("a generation that was never issued was admitted")
	}

	u, err := st.UnlockBot(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if u.Lock != nil || len(u.Instances) != 1 || u.Instances[0].Instance != "c2" || u.Instances[0].JoinToken != "t2" ||
		!strings.Contains(u.Instances[0].Reason, "generation 4") || strings.Join(u.JoinTokens, ",") != "t2" {
		t.Errorf("UnlockBot = %+v, want the lock of instance c2 and its chain", u)
	}
	if locks, err := st.InstanceLocks(ctx); err != nil || len(locks) != 0 {
		t.Errorf("locks after unlocking = %v, %v; want none", locks, err)
	}
	for _, r := range []store.Renewal{
		{Bot: "b", JoinToken: "t2", Chain: "c2", Generation: 1, Keys: "daemon"}, // the current generation
		{Bot: "b", JoinToken: "t2", Chain: "c2", Generation: 1, Keys: "thief"},
	} {
		if err := st.AdvanceGeneration(ctx, r); !errors.Is(err, store.ErrUnlockedChain) {
			t.Errorf("renewal of generation %d of ended chain %s: %v, want ErrUnlockedChain", r.Generation, r.Chain, err)
		}
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t1", Chain: "c1", Generation: 2, Keys: "daemon"}); err != nil {
		t.Errorf("the instance that was not locked: %v, want it to keep renewing", err)
	}
	if locks, _ := st.InstanceLocks(ctx); len(locks) != 0 {
		t.Errorf("a renewal of an ended chain locked again: %+v", locks)
	}
	if _, err := st.UnlockBot(ctx, "b"); !errors.Is(err, store.ErrNotLocked) {
		t.Errorf("unlocking twice: %v, want ErrNotLocked", err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "other", JoinToken: "o1", Chain: "co", Generation: 1, Keys: "k"}); err != nil {
		t.Errorf("renewal of another bot's chain: %v", err)
	}

	// A join with a new secret starts a new chain, which renews.
	if err := st.StartChain(ctx, "b", "t3", "c3", "192.0.2.1:4000"); err != nil {
		t.Fatal(err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t3", Chain: "c3", Generation: 1, Keys: "k"}); err != nil {
		t.Errorf("renewal of a chain started after the unlock: %v", err)
	}

	// Removing the bot forgets its ended chains too.
	if err := st.DeleteResource(ctx, "bot", "b"); err != nil {
		t.Fatal(err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t2", Chain: "c2", Generation: 2, Keys: "k"}); !errors.Is(err, store.ErrUnknownChain) {
		t.Errorf("renewal of an ended chain of a removed bot: %v, want ErrUnknownChain", err)
	}
}

// TestRenewalStateSurvivesReopen: a restarted authority keeps counters and locks.
func testRenewalStateSurvivesReopen(t *testing.T, db *testDB) {
	ctx := context.Background()
	st := db.open(t)
	if err := st.StartChain(ctx, "b", "t", "c", "192.0.2.1:4000"); err != nil {
		t.Fatal(err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2 := db.open(t)
	defer st2.Close()
	if err := st2.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 2, Keys: "k2"}); err != nil {
		t.Errorf("renewal of generation 2 after reopening: %v", err)
	}
	if err := st2.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: "x"}); err == nil {
		t.Error("generation 1 admitted after reopening")
	}
	if locks, _ := st2.InstanceLocks(ctx); locks["c"] == nil {
		t.Error("no lock after a stale generation")
	}
}
