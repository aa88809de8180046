package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

// testReplayAcrossHandles posts each proof to two handles on one database
// (two replicas) at the same instant: exactly one of each pair is admitted
// and audited, the other is a replay.
func testReplayAcrossHandles(t *testing.T, db *testDB) {
	replicas := []store.Store{db.open(t), db.open(t)}
	ctx := context.Background()
	const proofs = 50
	errs := make([][2]error, proofs)
	var wg sync.WaitGroup
	for p := range proofs {
		start := make(chan struct{})
		for r, st := range replicas {
			wg.Go(func() {
				<-start
				errs[p][r] = st.RecordJoin(ctx, fmt.Sprintf("jti-%d", p), time.Now().Add(time.Hour), joinEvent("deployer"))
			})
		}
		close(start)
	}
	wg.Wait()
	for p, pair := range errs {
		admitted := 0
		for _, err := range pair {
			switch {
			case err == nil:
				admitted++
			case !errors.Is(err, store.ErrReplay):
				t.Errorf("proof %d: %v", p, err)
			}
		}
		if admitted != 1 {
			t.Errorf("proof %d admitted %d times across replicas: %v", p, admitted, pair)
		}
	}
	if n := db.rows(t, "audit"); n != proofs {
		t.Errorf("audit holds %d records, want one per proof (%d)", n, proofs)
	}
}

// testGenerationAcrossHandles renews one generation through two replicas at
// once, with different keys (two copies of the identity): one is admitted
// and the other locks the instance (not the bot), whichever replica each
// reached.
func testGenerationAcrossHandles(t *testing.T, db *testDB) {
	replicas := []store.Store{db.open(t), db.open(t)}
	ctx := context.Background()
	for round := range 10 {
		bot := fmt.Sprintf("b%d", round)
		if err := replicas[0].StartChain(ctx, bot, "t", "c"+bot, "192.0.2.1:4000"); err != nil {
			t.Fatal(err)
		}
		errs := make([]error, 2)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, st := range replicas {
			wg.Go(func() {
				<-start
				errs[i] = st.AdvanceGeneration(ctx, store.Renewal{Bot: bot, JoinToken: "t", Chain: "c" + bot, Generation: 1, Keys: fmt.Sprint("k", i)})
			})
		}
		close(start)
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
				t.Errorf("round %d: %v", round, err)
			}
		}
		if won != 1 || lost != 1 {
			t.Errorf("round %d: %d renewals admitted and %d refused, want one of each: %v", round, won, lost, errs)
		}
		for i, st := range replicas {
			if locks, err := st.InstanceLocks(ctx); err != nil || locks["c"+bot] == nil {
				t.Errorf("round %d: replica %d sees no lock on instance c%s (%v)", round, i, bot, err)
			}
			if lock, err := st.BotLock(ctx, bot); err != nil || lock != nil {
				t.Errorf("round %d: replica %d: bot %s is locked (%v, %v); want only its instance", round, i, bot, lock, err)
			}
		}
	}
}

func testPing(t *testing.T, db *testDB) {
	st := db.open(t)
	if err := st.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if e := st.Engine(); e != "sqlite" && e != "postgres" {
		t.Errorf("Engine() = %q", e)
	}
}

// testRecordJoinStartingChain: a token join records its proof, audit record
// and renewal chain together; a replay of its proof starts no chain, so the
// chain of the join that was admitted keeps renewing.
func testRecordJoinStartingChain(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	if err := st.RecordJoinStartingChain(ctx, "secret-1", exp, joinEvent("b"), store.Chain{Bot: "b", JoinToken: "t", ID: "first", Runner: "192.0.2.1:4000"}); err != nil {
		t.Fatal(err)
	}
	err := db.open(t).RecordJoinStartingChain(ctx, "secret-1", exp, joinEvent("b"), store.Chain{Bot: "b", JoinToken: "t", ID: "replayed", Runner: "198.51.100.7:5000"})
	if !errors.Is(err, store.ErrReplay) {
		t.Fatalf("replayed token join: %v, want ErrReplay", err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "first", Generation: 1, Keys: "k"}); err != nil {
		t.Errorf("renewing the admitted join's chain after a replay: %v", err)
	}
	if err := st.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "replayed", Generation: 1, Keys: "k"}); !errors.Is(err, store.ErrUnknownChain) {
		t.Errorf("renewing the replay's chain: %v, want ErrUnknownChain", err)
	}
	if n := db.rows(t, "audit"); n != 1 {
		t.Errorf("audit holds %d records, want the admitted join's", n)
	}
	list, err := st.BotInstances(ctx, "b")
	if err != nil || len(list) != 1 || list[0].ID != "first" || list[0].Runner != "192.0.2.1:4000" || list[0].FirstJoin.IsZero() {
		t.Errorf("BotInstances = %+v, %v; want the admitted join's instance, with its runner", list, err)
	}
	// A second token join of the bot and token replaces the instance.
	if err := st.RecordJoinStartingChain(ctx, "secret-2", exp, joinEvent("b"), store.Chain{Bot: "b", JoinToken: "t", ID: "second", Runner: "192.0.2.2:4000"}); err != nil {
		t.Fatal(err)
	}
	if list, err := st.BotInstances(ctx, "b"); err != nil || len(list) != 1 || list[0].ID != "second" || list[0].Runner != "192.0.2.2:4000" {
		t.Errorf("BotInstances after a new join = %+v, %v; want only the new instance", list, err)
	}
	if n := db.rows(t, "bot_instances"); n != 1 {
		t.Errorf("bot_instances holds %d rows, want 1", n)
	}
}

// testInstanceLockAcrossHandles: an instance locked through one replica is
// refused on the other, whose other instances keep renewing; unlocking it
// through the other replica ends its chain everywhere.
func testInstanceLockAcrossHandles(t *testing.T, db *testDB) {
	a, b := db.open(t), db.open(t)
	ctx := context.Background()
	for _, c := range [][3]string{{"t1", "c1", "192.0.2.1:4000"}, {"t2", "c2", "192.0.2.2:4000"}} {
		if err := a.StartChain(ctx, "bot", c[0], c[1], c[2]); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.AdvanceGeneration(ctx, store.Renewal{Bot: "bot", JoinToken: "t1", Chain: "c1", Generation: 1, Keys: "k"}); err != nil {
		t.Fatal(err)
	}
	var mismatch *store.GenerationMismatch
	if err := a.AdvanceGeneration(ctx, store.Renewal{Bot: "bot", JoinToken: "t1", Chain: "c1", Generation: 1, Keys: "copy"}); !errors.As(err, &mismatch) {
		t.Fatalf("stale generation: %v, want a mismatch", err)
	}
	var locked *store.InstanceLockedError
	if err := b.AdvanceGeneration(ctx, store.Renewal{Bot: "bot", JoinToken: "t1", Chain: "c1", Generation: 2, Keys: "k2"}); !errors.As(err, &locked) ||
		locked.Lock.Instance != "c1" || locked.Lock.Runner != "192.0.2.1:4000" {
		t.Errorf("renewal of the locked instance on the other replica: %v, want InstanceLockedError naming c1 and its runner", err)
	}
	if err := b.AdvanceGeneration(ctx, store.Renewal{Bot: "bot", JoinToken: "t2", Chain: "c2", Generation: 1, Keys: "k"}); err != nil {
		t.Errorf("the bot's other instance on the other replica: %v", err)
	}
	if locks, err := b.InstanceLocks(ctx); err != nil || len(locks) != 1 || locks["c1"] == nil {
		t.Errorf("InstanceLocks on the other replica = %v, %v", locks, err)
	}
	u, err := b.UnlockBot(ctx, "bot")
	if err != nil || u.Lock != nil || len(u.Instances) != 1 || u.Instances[0].Instance != "c1" {
		t.Fatalf("UnlockBot on the other replica = %+v, %v; want the instance lock of c1 lifted", u, err)
	}
	if err := a.AdvanceGeneration(ctx, store.Renewal{Bot: "bot", JoinToken: "t1", Chain: "c1", Generation: 2, Keys: "k3"}); !errors.Is(err, store.ErrUnlockedChain) {
		t.Errorf("renewal of the unlocked instance: %v, want ErrUnlockedChain", err)
	}
	if err := a.AdvanceGeneration(ctx, store.Renewal{Bot: "bot", JoinToken: "t2", Chain: "c2", Generation: 2, Keys: "k2"}); err != nil {
		t.Errorf("the other instance after the unlock: %v", err)
	}
	if _, err := a.UnlockBot(ctx, "bot"); !errors.Is(err, store.ErrNotLocked) {
		t.Errorf("unlocking a bot with nothing locked: %v, want ErrNotLocked", err)
	}
}

// testLeafTunnels: a leaf's tunnel recorded through one replica is listed
// by the other, and a later record replaces it.
func testLeafTunnels(t *testing.T, db *testDB) {
	a, b := db.open(t), db.open(t)
	ctx := context.Background()
	if got, err := b.LeafTunnels(ctx); err != nil || len(got) != 0 {
		t.Fatalf("LeafTunnels before any = %v, %v", got, err)
	}
	seen := time.Unix(1_800_000_000, 123).UTC()
	if err := a.RecordLeafTunnel(ctx, "leaf-1", store.LeafTunnel{Connected: true, LastSeen: seen}); err != nil {
		t.Fatal(err)
	}
	if err := a.RecordLeafTunnel(ctx, "leaf-2", store.LeafTunnel{Connected: true, LastSeen: seen}); err != nil {
		t.Fatal(err)
	}
	if err := a.RecordLeafTunnel(ctx, "leaf-1", store.LeafTunnel{Connected: false, LastSeen: seen.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	got, err := b.LeafTunnels(ctx)
	want := map[string]store.LeafTunnel{"leaf-1": {Connected: false, LastSeen: seen.Add(time.Minute)}, "leaf-2": {Connected: true, LastSeen: seen}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("LeafTunnels = %+v, %v; want %+v", got, err, want)
	}
}
