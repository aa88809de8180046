package trust

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
)

// TestRootsRefresh: a root's CA bundle is fetched on first use and again
// once RefreshInterval has passed, so that a new root CA is trusted; a
// failed refresh keeps the last good bundle.
func TestRootsRefresh(t *testing.T) {
	first, second := newTestRoot(t, "acme"), newTestRoot(t, "acme")
	current := first
	var fetchErr error
	fetches := 0
	now := time.Now()
	// The pins of the fetch: the configured one, then the announced CAs'.
	wantPins := "sha256:pin"
	rs := NewRoots(func(_ context.Context, url, pin string) (*identity.ClusterCAResponse, error) {
		fetches++
		if url != "https://root.example:8443" || pin != wantPins {
			t.Errorf("fetched %s pinned to %s, want %s", url, pin, wantPins)
		}
		if fetchErr != nil {
			return nil, fetchErr
		}
		return &identity.ClusterCAResponse{ClusterName: "acme",
			TLSCA: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: current.cert.Raw}))}, nil
	}, func() time.Time { return now })
	tc := &resources.TrustedCluster{Metadata: resources.Metadata{Name: "acme-root"},
		Spec: resources.TrustedClusterSpec{Enabled: true, Root: resources.TrustedRoot{URL: "https://root.example:8443", CAPin: "sha256:pin"}}}
	r := rs.Get(tc)
	chain, key := first.botCert(t, "acme", "deployer", []string{"deploy"}, now.Add(time.Hour))
	verify := func() error {
		pool, cluster, err := rs.Bundle(context.Background(), r)
		if err != nil {
			return err
		}
		req, err := identity.NewExchange(&identity.ExchangePayload{Cluster: "leaf", Time: now}, chain, key)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = Verify(req, VerifyOptions{Roots: pool, RootCluster: cluster, LeafCluster: "leaf", Now: now})
		return err
	}
	if err := verify(); err != nil || fetches != 1 {
		t.Fatalf("first exchange: %v after %d fetches", err, fetches)
	}
	wantPins = "sha256:pin," + pinOf(first.cert)
	if got := r.Pins(); got != wantPins {
		t.Errorf("pins after the first fetch: %s, want %s", got, wantPins)
	}
	// The root's CA changes (rotation): the old bundle serves until the refresh.
	current = second
	chain, key = second.botCert(t, "acme", "deployer", []string{"deploy"}, now.Add(time.Hour))
	if err := verify(); err == nil || fetches != 1 {
		t.Fatalf("before the refresh: %v after %d fetches", err, fetches)
	}
	// An unknown CA refetches at most once per MinRefetch.
	if rs.RefreshIfOlder(context.Background(), r) || fetches != 1 {
		t.Errorf("refetched %d times within MinRefetch of the last fetch", fetches-1)
	}
	now = now.Add(MinRefetch)
	if !rs.RefreshIfOlder(context.Background(), r) || fetches != 2 {
		t.Fatalf("no refetch after MinRefetch (%d fetches)", fetches)
	}
	if err := verify(); err != nil || fetches != 2 {
		t.Fatalf("after the refetch: %v after %d fetches", err, fetches)
	}
	wantPins = "sha256:pin," + pinOf(second.cert)
	now = now.Add(RefreshInterval + time.Second)
	if err := verify(); err != nil || fetches != 3 {
		t.Fatalf("after the refresh: %v after %d fetches", err, fetches)
	}
	// The root is unreachable: the last good bundle stays.
	fetchErr = errors.New("connection refused")
	now = now.Add(RefreshInterval + time.Second)
	if err := verify(); err != nil {
		t.Fatalf("with the root unreachable: %v", err)
	}
	// A changed url or pin starts over.
	tc.Spec.Root.CAPin = "sha256:other"
	if rs.Get(tc) == r {
		t.Error("a trusted cluster whose pin changed kept its fetched root")
	}
}

// TestLockView: a bot the root locked is refused; a lock list older than
// MaxLockAge refuses every bot.
func TestLockView(t *testing.T) {
	now := time.Now()
	rs := NewRoots(nil, func() time.Time { return now })
	r := rs.Get(&resources.TrustedCluster{Metadata: resources.Metadata{Name: "acme-root"}})
	var refusal *identity.Error
	if err := rs.CheckNotLocked(r, locks.Subject{Bot: "deployer"}); !errors.As(err, &refusal) || refusal.Code != identity.CodeRootUnavailable || !strings.Contains(refusal.Message, "never") {
		t.Fatalf("before any push: %v, want root_unavailable", err)
	}
	rs.SetLocks(r, &identity.LockView{Locked: map[string]string{"thief": "a stale generation was presented"}})
	if err := rs.CheckNotLocked(r, locks.Subject{Bot: "deployer"}); err != nil {
		t.Fatalf("an unlocked bot: %v", err)
	}
	if err := rs.CheckNotLocked(r, locks.Subject{Bot: "thief"}); !errors.As(err, &refusal) || refusal.Code != identity.CodeBotLocked || !strings.Contains(refusal.Message, "stale generation") {
		t.Fatalf("a locked bot: %v, want bot_locked", err)
	}
	now = now.Add(MaxLockAge + time.Second)
	if err := rs.CheckNotLocked(r, locks.Subject{Bot: "deployer"}); !errors.As(err, &refusal) || refusal.Code != identity.CodeRootUnavailable {
		t.Fatalf("with a stale lock list: %v, want root_unavailable", err)
	}
}

func pinOf(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}
