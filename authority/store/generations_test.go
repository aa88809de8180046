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
	if err := st.StartChain(ctx, bot, tok, chain); err != nil {
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
	lock, err := st.BotLock(ctx, bot)
	if err != nil || lock == nil {
		t.Fatalf("BotLock after a mismatch = %v, %v; want a lock", lock, err)
	}
	if lock.JoinToken != tok || !strings.Contains(lock.Reason, "generation 7") || lock.Time.IsZero() {
		t.Errorf("lock = %+v", lock)
	}
	if other, err := st.BotLock(ctx, "other-bot"); err != nil || other != nil {
		t.Errorf("BotLock of another bot = %v, %v; want none", other, err)
	}
	all, err := st.BotLocks(ctx)
	if err != nil || len(all) != 1 || *all[bot] != *lock {
		t.Errorf("BotLocks = %v, %v; want only %+v", all, err, lock)
	}
}

// TestStaleGenerationLocks is the stolen copy: the daemon renewed from
// generation 1, then the copy of generation 1 asks with keys of its own.
func testStaleGenerationLocks(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	if err := st.StartChain(ctx, "b", "t", "c"); err != nil {
		t.Fatal(err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: "daemon"}); err != nil {
		t.Fatal(err)
	}
	for _, keys := range []string{"thief", ""} {
		err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: keys})
		var mismatch *store.GenerationMismatch
		if !errors.As(err, &mismatch) || mismatch.Current != 2 || mismatch.Lock.Bot != "b" {
			t.Errorf("stale generation with keys %q: %v, want a mismatch that locks b", keys, err)
		}
	}
	if lock, _ := st.BotLock(ctx, "b"); lock == nil {
		t.Fatal("the bot is not locked")
	}
}

// TestConcurrentRenewalsOfOneGeneration: of two holders of generation 1
// with different keys, exactly one wins and the other locks the bot.
func testConcurrentRenewalsOfOneGeneration(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	if err := st.StartChain(ctx, "b", "t", "c"); err != nil {
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
		if err := st.StartChain(ctx, "b", tok, "c-"+tok); err != nil {
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
	if lock, _ := st.BotLock(ctx, "b"); lock == nil {
		t.Fatal("the bot is not locked")
	}
	if err := st.DeleteResource(ctx, "bot", "b"); err != nil {
		t.Fatal(err)
	}
	if lock, err := st.BotLock(ctx, "b"); err != nil || lock != nil {
		t.Errorf("lock after removing the bot = %v, %v; want none", lock, err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t2", Chain: "c-t2", Generation: 1, Keys: "k"}); !errors.Is(err, store.ErrUnknownChain) {
		t.Errorf("renewal of a removed bot's chain: %v, want ErrUnknownChain", err)
	}
}

// TestUnlockBot: unlocking lifts the lock and ends every chain of the bot,
// whose renewals are then refused as unlocked; a new join starts a new
// chain; other bots are untouched; a bot that is not locked is refused.
func testUnlockBot(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	if err := st.PutResources(ctx, []store.StoredResource{{Kind: "bot", Name: "b", Body: []byte("bot")}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][3]string{{"b", "t1", "c1"}, {"b", "t2", "c2"}, {"other", "o1", "co"}} {
		if err := st.StartChain(ctx, c[0], c[1], c[2]); err != nil {
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
	if u.Lock == nil || u.Lock.Bot != "b" || u.Lock.JoinToken != "t2" || !strings.Contains(u.Lock.Reason, "generation 4") ||
		strings.Join(u.JoinTokens, ",") != "t1,t2" {
		t.Errorf("UnlockBot = %+v (lock %+v), want the lock from t2 and the chains of t1 and t2", u, u.Lock)
	}
	if lock, err := st.BotLock(ctx, "b"); err != nil || lock != nil {
		t.Errorf("lock after unlocking = %v, %v; want none", lock, err)
	}
	for _, r := range []store.Renewal{
		{Bot: "b", JoinToken: "t1", Chain: "c1", Generation: 2, Keys: "daemon"}, // the current generation
		{Bot: "b", JoinToken: "t1", Chain: "c1", Generation: 1, Keys: "k"},      // the retry of the last renewal
		{Bot: "b", JoinToken: "t2", Chain: "c2", Generation: 1, Keys: "thief"},
	} {
		if err := st.AdvanceGeneration(ctx, r); !errors.Is(err, store.ErrUnlockedChain) {
			t.Errorf("renewal of generation %d of ended chain %s: %v, want ErrUnlockedChain", r.Generation, r.Chain, err)
		}
	}
	if lock, _ := st.BotLock(ctx, "b"); lock != nil {
		t.Errorf("a renewal of an ended chain locked the bot again: %+v", lock)
	}
	if _, err := st.UnlockBot(ctx, "b"); !errors.Is(err, store.ErrNotLocked) {
		t.Errorf("unlocking twice: %v, want ErrNotLocked", err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "other", JoinToken: "o1", Chain: "co", Generation: 1, Keys: "k"}); err != nil {
		t.Errorf("renewal of another bot's chain: %v", err)
	}

	// A join with a new secret starts a new chain, which renews.
	if err := st.StartChain(ctx, "b", "t3", "c3"); err != nil {
		t.Fatal(err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t3", Chain: "c3", Generation: 1, Keys: "k"}); err != nil {
		t.Errorf("renewal of a chain started after the unlock: %v", err)
	}

	// Removing the bot forgets its ended chains too.
	if err := st.DeleteResource(ctx, "bot", "b"); err != nil {
		t.Fatal(err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t1", Chain: "c1", Generation: 2, Keys: "k"}); !errors.Is(err, store.ErrUnknownChain) {
		t.Errorf("renewal of an ended chain of a removed bot: %v, want ErrUnknownChain", err)
	}
}

// TestRenewalStateSurvivesReopen: a restarted authority keeps counters and locks.
func testRenewalStateSurvivesReopen(t *testing.T, db *testDB) {
	ctx := context.Background()
	st := db.open(t)
	if err := st.StartChain(ctx, "b", "t", "c"); err != nil {
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
	if lock, _ := st2.BotLock(ctx, "b"); lock == nil {
		t.Error("no lock after a stale generation")
	}
}
