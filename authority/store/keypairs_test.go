package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

// TestKeypairSequence walks a bound_keypair join token's sequence the way a
// runner and a thief would.
func TestKeypairSequence(t *testing.T) {
	st, _ := open(t)
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

func TestKeypairChallenges(t *testing.T) {
	st, _ := open(t)
	ctx := context.Background()
	now := time.Now()
	if err := st.AddKeypairChallenge(ctx, "t", "192.0.2.1", "n1", now.Add(time.Minute), 2); err != nil {
		t.Fatal(err)
	}
	if err := st.AddKeypairChallenge(ctx, "t", "192.0.2.1", "n2", now.Add(time.Minute), 2); err != nil {
		t.Fatal(err)
	}
	if err := st.AddKeypairChallenge(ctx, "t", "192.0.2.1", "n3", now.Add(time.Minute), 2); !errors.Is(err, store.ErrTooManyChallenges) {
		t.Fatalf("a third outstanding challenge: %v; want ErrTooManyChallenges", err)
	}
	// Another address still gets its own.
	if err := st.AddKeypairChallenge(ctx, "t", "198.51.100.7", "n4", now.Add(time.Minute), 2); err != nil {
		t.Fatalf("a challenge for another address: %v", err)
	}
	if err := st.UseKeypairChallenge(ctx, "other", "n1", now); !errors.Is(err, store.ErrChallengeUnknown) {
		t.Errorf("a challenge answered for another join token: %v; want ErrChallengeUnknown", err)
	}
	if err := st.UseKeypairChallenge(ctx, "t", "n1", now); err != nil {
		t.Fatal(err)
	}
	if err := st.UseKeypairChallenge(ctx, "t", "n1", now); !errors.Is(err, store.ErrChallengeUsed) {
		t.Errorf("a challenge answered twice: %v; want ErrChallengeUsed", err)
	}
	if err := st.UseKeypairChallenge(ctx, "t", "n2", now.Add(2*time.Minute)); !errors.Is(err, store.ErrChallengeExpired) {
		t.Errorf("an expired challenge: %v; want ErrChallengeExpired", err)
	}
	if err := st.PruneKeypairChallenges(ctx, now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := st.UseKeypairChallenge(ctx, "t", "n2", now); !errors.Is(err, store.ErrChallengeUnknown) {
		t.Errorf("a pruned challenge: %v; want ErrChallengeUnknown", err)
	}
}
