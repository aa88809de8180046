package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mbot-dev/mbot/authority/store"
)

// TestGenerationCounter walks a renewal chain the way a daemon and a thief
// would: each renewal must present the current generation; a retry with
// the same keys is served again; an older generation locks the bot.
func TestGenerationCounter(t *testing.T) {
	st, _ := open(t)
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
func TestStaleGenerationLocks(t *testing.T) {
	st, _ := open(t)
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
func TestConcurrentRenewalsOfOneGeneration(t *testing.T) {
	st, _ := open(t)
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
func TestRemovingResourcesClearsRenewalState(t *testing.T) {
	st, _ := open(t)
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

// TestRenewalStateSurvivesReopen: a restarted authority keeps counters and locks.
func TestRenewalStateSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	st, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.StartChain(ctx, "b", "t", "c"); err != nil {
		t.Fatal(err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
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
