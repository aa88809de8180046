//go:build linux

package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// TestPostgresNotifiesChanges: a change of resources or locks committed
// through one replica signals Changes on another (LISTEN/NOTIFY), so that
// it reloads at once instead of at its next poll.
func TestPostgresNotifiesChanges(t *testing.T) {
	pg := testservers.StartPostgresForStore(t)
	dsn := pg.CreateDatabase(t, "notify")
	ctx := context.Background()
	a, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	changes := b.Changes()
	if changes == nil {
		t.Fatal("a PostgreSQL store has no Changes channel")
	}
	<-changes // the listener's first connection signals once: what happened before it is unknown
	changes2 := a.Changes()
	<-changes2
	for _, c := range []struct {
		what   string
		change func() error
	}{
		{"put a resource", func() error {
			return a.PutResources(ctx, []store.StoredResource{{Kind: "bot", Name: "deployer", Body: []byte("kind: bot\n")}})
		}},
		{"lock an admin", func() error {
			return a.AddLock(ctx, &store.Lock{Kind: "admin", Target: "alice", Time: time.Now(), Reason: "laptop lost", LockedBy: "root"})
		}},
		{"unlock an admin", func() error { _, err := a.RemoveLock(ctx, "admin", "alice"); return err }},
		{"remove a resource", func() error { return a.DeleteResource(ctx, "bot", "deployer") }},
		{"lock a bot instance", func() error {
			if err := a.StartChain(ctx, "b", "t", "c", "192.0.2.1:4000"); err != nil {
				return err
			}
			if err := a.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: "k"}); err != nil {
				return err
			}
			var mismatch *store.GenerationMismatch
			if err := a.AdvanceGeneration(ctx, store.Renewal{Bot: "b", JoinToken: "t", Chain: "c", Generation: 1, Keys: "copy"}); !errors.As(err, &mismatch) {
				return fmt.Errorf("stale generation: %v, want a mismatch", err)
			}
			return nil
		}},
		{"unlock a bot instance", func() error { _, err := a.UnlockInstance(ctx, "c"); return err }},
		{"start a CA rotation", func() error {
			now := time.Now()
			return a.StartCARotation(ctx, store.CARotation{CA: "tls", Phase: "init", Grace: time.Hour, Started: now, Updated: now}, []byte("next"))
		}},
		{"take a CA rotation step", func() error {
			now := time.Now()
			return a.SetCARotationPhase(ctx, "init", store.CARotation{CA: "tls", Phase: "update_clients", Updated: now, NewSignsSince: now})
		}},
		{"lock a bound_keypair join token", func() error {
			j := store.KeypairJoin{JoinToken: "kp", Binding: "key:a", PublicKey: "a", NewPublicKey: "a", Keys: "k0"}
			if err := a.AdvanceKeypair(ctx, j); err != nil {
				return err
			}
			j.Presented, j.Keys = 1, "k1"
			if err := a.AdvanceKeypair(ctx, j); err != nil {
				return err
			}
			var mismatch *store.KeypairMismatch
			j.Presented, j.Keys = 0, "copy"
			if err := a.AdvanceKeypair(ctx, j); !errors.As(err, &mismatch) {
				return fmt.Errorf("stale sequence: %v, want a mismatch", err)
			}
			return nil
		}},
		{"unlock a bound_keypair join token", func() error { _, err := a.UnlockKeypair(ctx, "kp"); return err }},
	} {
		if err := c.change(); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		select {
		case <-changes:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s through one replica: the other was not notified", c.what)
		}
	}
}

// TestPostgresUnavailable cuts the connection between the store and
// PostgreSQL: calls fail with ErrUnavailable (the authority answers 503
// store_unavailable), and once PostgreSQL is reachable again the same
// store works without being reopened, its listener included.
func TestPostgresUnavailable(t *testing.T) {
	pg := testservers.StartPostgresForStore(t)
	pg.CreateDatabase(t, "unavailable")
	proxy := testservers.StartTCPProxy(t, fmt.Sprintf("%s:%d", pg.Host, pg.Port))
	ctx := context.Background()
	st, err := store.OpenPostgres(ctx, fmt.Sprintf("postgres://%s@%s/unavailable?sslmode=disable", pg.Superuser, proxy.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	<-st.Changes()
	if err := st.RecordJoin(ctx, "jti-1", time.Now().Add(time.Hour), joinEvent("deployer")); err != nil {
		t.Fatal(err)
	}

	proxy.Cut()
	for i := range 3 {
		err := st.RecordJoin(ctx, fmt.Sprintf("jti-down-%d", i), time.Now().Add(time.Hour), joinEvent("deployer"))
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("RecordJoin with PostgreSQL unreachable: %v, want ErrUnavailable", err)
		}
	}
	if err := st.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Ping with PostgreSQL unreachable: %v, want ErrUnavailable", err)
	}
	if _, err := st.BotLocks(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("BotLocks with PostgreSQL unreachable: %v, want ErrUnavailable", err)
	}

	proxy.Restore(t)
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("Ping once PostgreSQL is back: %v", err)
	}
	if err := st.RecordJoin(ctx, "jti-2", time.Now().Add(time.Hour), joinEvent("deployer")); err != nil {
		t.Errorf("RecordJoin once PostgreSQL is back: %v", err)
	}
	if err := st.RecordJoin(ctx, "jti-1", time.Now().Add(time.Hour), joinEvent("deployer")); !errors.Is(err, store.ErrReplay) {
		t.Errorf("a proof used before the outage: %v, want ErrReplay", err)
	}
	select {
	case <-st.Changes(): // the listener reconnected
	case <-time.After(30 * time.Second):
		t.Error("the listener did not reconnect once PostgreSQL was back")
	}
}
