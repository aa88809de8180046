package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTrustedClusterBoundKeypair: a self-hosted runner joins the root with
// --join-method bound_keypair (the keypair's proof signs the root join's
// requests) and gets leaf outputs through the relay in the same run. A run
// whose exchange fails after the root admitted the join leaves no output,
// and the next run joins again with the sequence ahead.
func TestTrustedClusterBoundKeypair(t *testing.T) {
	tc := startTrustedClusters(t, nil)
	key := filepath.Join(t.TempDir(), "runner", "key")
	sshKeygen(t, key)
	const token = "runner-eu"
	mustMbot(t, baseEnv(tc.root.home), "tokens", "add", "--bot", "deployer", "--method", "bound_keypair", "--name", token,
		"--public-key", key+".pub", "--config", tc.root.config)
	time.Sleep(300 * time.Millisecond) // the running root reads resources changed by others every 250ms

	// run issues a root and a leaf identity output into a new directory.
	run := func(t *testing.T) (string, result) {
		t.Helper()
		dir := t.TempDir()
		config := filepath.Join(dir, "mbot.yaml")
		writeFile(t, config, fmt.Sprintf("authority: %s\nca_pin: %s\ntoken: %s\nttl: 1h\noutputs:\n  - {type: identity, destination: %s}\n%s",
			tc.root.url, tc.root.pin, token, filepath.Join(dir, "root"), leafIdentityOutput(filepath.Join(dir, "eu"))), 0o600)
		return dir, mbot(t, tc.root.jobEnv(nil), "issue", "--config", config, "--join-method", "bound_keypair", "--keypair-path", key)
	}

	t.Run("join-and-exchange", func(t *testing.T) {
		for i := uint64(1); i <= 2; i++ {
			dir, res := run(t)
			if res.code != 0 {
				t.Fatalf("mbot issue --join-method bound_keypair with a leaf output (run %d): %s\nleaf:\n%s", i, res, tc.leafAuth.logs)
			}
			checkLeafIdentity(t, tc, dir)
			if got := readSummary(t, filepath.Join(dir, "root")); got.Method != "bound_keypair" || got.JoinToken != token {
				t.Errorf("root/identity.json: join method %q token %q, want bound_keypair %s", got.Method, got.JoinToken, token)
			}
			if got := sequenceOf(t, key); got != i {
				t.Errorf("join sequence %d after %d runs, want %d", got, i, i)
			}
			wantLastExchangeFrom(t, tc, "tunnel from ")
		}
		var admitted int
		for _, ev := range auditEvents(t, tc.root, "join") {
			if ev.Allowed && ev.JoinToken == token && ev.Method == "bound_keypair" {
				admitted++
			}
		}
		if admitted != 2 {
			t.Errorf("the root audited %d admitted bound_keypair joins of %s, want 2", admitted, token)
		}
	})

	t.Run("exchange-fails-after-join", func(t *testing.T) {
		tc.proxy.Cut()
		tc.waitConnected(t, false)
		dir, res := run(t)
		wantExchangeRefused(t, res, "leaf_unreachable")
		wantNoOutput(t, dir, "root", "eu")
		tc.proxy.Restore(t)
		tc.waitConnected(t, true)
		// The root admitted the failed run's join, whose identity was
		// never written: the next run's sequence follows it.
		dir, res = run(t)
		if res.code != 0 {
			t.Fatalf("mbot issue after a run whose exchange failed: %s", res)
		}
		checkLeafIdentity(t, tc, dir)
		if got := sequenceOf(t, key); got != 4 {
			t.Errorf("join sequence %d after four runs, want 4", got)
		}
		if strings.Contains(tc.rootAuth.logs.String(), "join_token_locked") {
			t.Error("the root locked the join token of a runner whose exchange failed")
		}
	})
}
