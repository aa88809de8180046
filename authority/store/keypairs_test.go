package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

// testKeypairSequence walks a bound_keypair join token's sequence the way a
// runner and a thief would.
func testKeypairSequence(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	const tok, binding, key = "runner-1", "key:SHA256:a", "ssh-ed25519 AAAA-a"
	join := func(seq uint64, keys, remote string) store.KeypairJoin {
		return store.KeypairJoin{JoinToken: tok, Binding: binding, Presented: seq, PublicKey: key, NewPublicKey: key, Keys: keys, Remote: remote}
	}
	if b, err := st.KeypairBinding(ctx, tok); err != nil || b != nil {
		t.Fatalf("binding before any join: %+v, %v; want none", b, err)
	}
	if err := st.AdvanceKeypair(ctx, join(0, "k0", "192.0.2.1:1")); err != nil {
		t.Fatalf("first join: %v", err)
	}
	if err := st.AdvanceKeypair(ctx, join(1, "k1", "192.0.2.1:2")); err != nil {
		t.Fatalf("join at 1: %v", err)
	}
	// A retry with the same keys of the join whose answer was lost.
	if err := st.AdvanceKeypair(ctx, join(1, "k1", "192.0.2.1:2")); err != nil {
		t.Fatalf("retry of the join at 1: %v", err)
	}
	// Ahead: the runner counted a join that never arrived.
	if err := st.AdvanceKeypair(ctx, join(3, "k3", "192.0.2.1:3")); err != nil {
		t.Fatalf("join one ahead: %v", err)
	}
	b, err := st.KeypairBinding(ctx, tok)
	if err != nil || b.Sequence != 4 {
		t.Fatalf("sequence %+v, %v; want 4", b, err)
	}
	var mismatch *store.KeypairMismatch
	// A stale sequence: a copy. The token locks, naming both joins.
	err = st.AdvanceKeypair(ctx, join(2, "kx", "198.51.100.7:9"))
	if !errors.As(err, &mismatch) || mismatch.Lock == nil {
		t.Fatalf("stale join: %v; want a lock", err)
	}
	for _, want := range []string{"198.51.100.7:9", "192.0.2.1:3", "sequence 2", "sequence 4"} {
		if !strings.Contains(mismatch.Lock.Reason, want) {
			t.Errorf("lock reason %q does not mention %q", mismatch.Lock.Reason, want)
		}
	}
	if err := st.AdvanceKeypair(ctx, join(4, "k4", "192.0.2.1:5")); !errors.As(err, &mismatch) || mismatch.Lock == nil {
		t.Fatalf("the original holder after the lock: %v; want the lock", err)
	}
	if _, err := st.UnlockKeypair(ctx, tok); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if _, err := st.UnlockKeypair(ctx, tok); !errors.Is(err, store.ErrNotLocked) {
		t.Fatalf("second unlock: %v; want ErrNotLocked", err)
	}
	if err := st.AdvanceKeypair(ctx, join(4, "k4", "192.0.2.1:5")); err != nil {
		t.Fatalf("the current holder after the unlock: %v", err)
	}
	// A new binding (the admin rotated) starts over, whatever the old state.
	if err := st.AdvanceKeypair(ctx, store.KeypairJoin{JoinToken: tok, Binding: "key:SHA256:b", PublicKey: "b", NewPublicKey: "b", Keys: "kb"}); err != nil {
		t.Fatalf("first join of a new binding: %v", err)
	}
	if b, _ := st.KeypairBinding(ctx, tok); b.Sequence != 1 || b.PublicKey != "b" || b.Lock != nil {
		t.Errorf("after a new binding: %+v", b)
	}
}

// testKeypairChallenges: a challenge is recorded answered once, for every
// handle, until it is pruned after it expired.
func testKeypairChallenges(t *testing.T, db *testDB) {
	st := db.open(t)
	ctx := context.Background()
	now := time.Now()
	if err := st.UseKeypairChallenge(ctx, "t", "192.0.2.1", "n1", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := st.UseKeypairChallenge(ctx, "t", "198.51.100.7", "n1", now.Add(time.Minute)); !errors.Is(err, store.ErrChallengeUsed) {
		t.Errorf("a challenge answered twice: %v; want ErrChallengeUsed", err)
	}
	if err := st.UseKeypairChallenge(ctx, "t", "192.0.2.1", "n2", now.Add(time.Minute)); err != nil {
		t.Fatalf("another challenge: %v", err)
	}
	if err := st.PruneKeypairChallenges(ctx, now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := st.UseKeypairChallenge(ctx, "t", "192.0.2.1", "n1", now.Add(3*time.Minute)); err != nil {
		t.Errorf("a pruned challenge recorded again: %v", err)
	}
}

// testKeypairRaces: two replicas (handles) answering one challenge at once
// admit it once; two first joins of one token at once, and two joins
// presenting the same sequence with different keys, admit one and lock the
// token for the other, as SQLite's single writer does.
func testKeypairRaces(t *testing.T, db *testDB) {
	ctx := context.Background()
	a, b := db.open(t), db.open(t)
	handles := []store.Store{a, b}
	for round := range 20 {
		nonce := fmt.Sprintf("n%d", round)
		errs := race(handles, func(st store.Store) error {
			return st.UseKeypairChallenge(ctx, "t", "192.0.2.1", nonce, time.Now().Add(time.Minute))
		})
		if ok, used := count(errs, nil), count(errs, store.ErrChallengeUsed); ok != 1 || used != 1 {
			t.Fatalf("round %d: one challenge answered on two handles at once: %v; want one admitted, one ErrChallengeUsed", round, errs)
		}
	}
	for round := range 10 {
		tok := fmt.Sprintf("first-%d", round)
		errs := race(handles, func(st store.Store) error {
			keys := fmt.Sprintf("%p", st)
			return st.AdvanceKeypair(ctx, store.KeypairJoin{JoinToken: tok, Binding: "key:a", PublicKey: "a", NewPublicKey: "a", Keys: keys})
		})
		assertOneAdmittedOneLocked(t, ctx, a, tok, errs)

		tok = fmt.Sprintf("next-%d", round)
		if err := a.AdvanceKeypair(ctx, store.KeypairJoin{JoinToken: tok, Binding: "key:a", PublicKey: "a", NewPublicKey: "a", Keys: "k0"}); err != nil {
			t.Fatal(err)
		}
		errs = race(handles, func(st store.Store) error {
			keys := fmt.Sprintf("%p", st)
			return st.AdvanceKeypair(ctx, store.KeypairJoin{JoinToken: tok, Binding: "key:a", Presented: 1, PublicKey: "a", NewPublicKey: "a", Keys: keys})
		})
		assertOneAdmittedOneLocked(t, ctx, a, tok, errs)
	}
}

func assertOneAdmittedOneLocked(t *testing.T, ctx context.Context, st store.Store, tok string, errs []error) {
	t.Helper()
	var mismatch *store.KeypairMismatch
	if count(errs, nil) != 1 || !(errors.As(errs[0], &mismatch) || errors.As(errs[1], &mismatch)) {
		t.Fatalf("join token %s: two joins of one sequence at once: %v; want one admitted, one KeypairMismatch", tok, errs)
	}
	if b, err := st.KeypairBinding(ctx, tok); err != nil || b == nil || b.Lock == nil {
		t.Fatalf("join token %s after the race: %+v, %v; want it locked", tok, b, err)
	}
}

// race runs f on every handle at once and returns their errors.
func race(handles []store.Store, f func(store.Store) error) []error {
	errs := make([]error, len(handles))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, st := range handles {
		wg.Go(func() {
			<-start
			errs[i] = f(st)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// count is how many of errs are target (nil counts nil errors).
func count(errs []error, target error) int {
	n := 0
	for _, err := range errs {
		if target == nil && err == nil || target != nil && errors.Is(err, target) {
			n++
		}
	}
	return n
}
