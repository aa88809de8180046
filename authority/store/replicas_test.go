package store_test

import (
	"context"
	"errors"
	"fmt"
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
// and the other locks the bot, whichever replica each reached.
func testGenerationAcrossHandles(t *testing.T, db *testDB) {
	replicas := []store.Store{db.open(t), db.open(t)}
	ctx := context.Background()
	for round := range 10 {
		bot := fmt.Sprintf("b%d", round)
		if err := replicas[0].StartChain(ctx, bot, "t", "c"+bot); err != nil {
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
			if lock, err := st.BotLock(ctx, bot); err != nil || lock == nil {
				t.Errorf("round %d: replica %d sees no lock on %s (%v)", round, i, bot, err)
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
	if err := st.RecordJoinStartingChain(ctx, "secret-1", exp, joinEvent("b"), store.Chain{Bot: "b", JoinToken: "t", ID: "first"}); err != nil {
		t.Fatal(err)
	}
	err := db.open(t).RecordJoinStartingChain(ctx, "secret-1", exp, joinEvent("b"), store.Chain{Bot: "b", JoinToken: "t", ID: "replayed"})
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
}
