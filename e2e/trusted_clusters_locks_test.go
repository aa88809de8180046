package e2e

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// TestTrustedClustersClaimLocks: locks set on the root, through --config
// and --auth, reach the leaf for what the root certificate cannot show.
// A claim lock (--claim repository=acme/app) makes the leaf refuse, within
// a second, the exchange of a root identity whose join carried that claim,
// while another root identity is still exchanged; mbot unlock --claim
// lifts it there too, and a lock with --expires stops by itself on the
// root (joins) and the leaf (exchanges). A claim lock on a token join's
// claim refuses mbot start's renewals of the identity (claim_locked) and
// the leaf's exchange of its renewed certificate, and so does a join_token
// lock.
func TestTrustedClustersClaimLocks(t *testing.T) {
	tc := startTrustedClusters(t, nil)
	env := baseEnv(tc.root.home)
	rootAdmin := filepath.Join(filepath.Dir(tc.root.config), "data", "admin")

	// A GitHub join of deployer: its claims include repository=acme/app.
	ghDir := t.TempDir()
	if res := tc.issue(t, tc.mbotYAML(t, ghDir, "", ""), tokenDeployer); res.code != 0 {
		t.Fatalf("mbot issue on the root: %s", res)
	}
	gh := filepath.Join(ghDir, "root")

	// A token join of locker under mbot start, which renews with its certificate.
	res := mustMbot(t, env, "tokens", "add", "--bot", "locker", "--name", "locker-daemon", "--config", tc.root.config)
	var secret string
	for _, line := range strings.Split(res.stdout, "\n") {
		if v, ok := strings.CutPrefix(line, "MBOT_JOIN_SECRET="); ok {
			secret = v
		}
	}
	time.Sleep(300 * time.Millisecond) // the running root reads resources changed by others every 250ms
	daemonOut := filepath.Join(t.TempDir(), "root")
	d := startProc(t, tc.root.jobEnv(map[string]string{"MBOT_JOIN_SECRET": secret}), mbotBin, "start", "--authority", tc.root.url,
		"--ca-pin", tc.root.pin, "--token", "locker-daemon", "--join-method", "token", "--out", daemonOut,
		"--ttl", daemonTTL, "--renewal-interval", daemonInterval)
	waitForRenewal(t, d, daemonOut, waitForRenewal(t, d, daemonOut, "")) // a renewed certificate

	exchange := func(t *testing.T, dir string) error {
		t.Helper()
		return exchangeWith(t, tc, dir)
	}
	// refusedWithin waits at most a second for the leaf to refuse dir's
	// exchange with code, naming the root's lock.
	refusedWithin := func(t *testing.T, dir string, code identity.ErrorCode, naming ...string) {
		t.Helper()
		start := time.Now()
		var err error
		var refusal *identity.Error
		for time.Since(start) < 3*time.Second {
			if err = exchange(t, dir); errors.As(err, &refusal) && refusal.Code == code {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		took := time.Since(start)
		if !errors.As(err, &refusal) || refusal.Code != code {
			t.Fatalf("exchange after a lock on the root: %v, want %s\nroot:\n%s\nleaf:\n%s", err, code, tc.rootAuth.logs, tc.leafAuth.logs)
		}
		for _, want := range append(naming, "locked on root cluster "+clusterName) {
			if !strings.Contains(refusal.Message, want) {
				t.Errorf("the leaf's refusal does not say %q: %s", want, refusal.Message)
			}
		}
		if took > time.Second {
			t.Errorf("the leaf refused %s after %s, want within 1 s", code, took)
		}
		t.Logf("the leaf refused %s %s after the lock on the root", code, took.Round(time.Millisecond))
	}
	admittedWithin := func(t *testing.T, dir string, d time.Duration) {
		t.Helper()
		var err error
		for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if err = exchange(t, dir); err == nil {
				return
			}
		}
		t.Fatalf("exchange of %s: %v, want admitted", dir, err)
	}
	rootJoin := func(t *testing.T) result {
		t.Helper()
		return tc.issue(t, tc.mbotYAML(t, t.TempDir(), "", ""), tokenDeployer)
	}

	for _, dir := range []string{gh, copyIdentity(t, daemonOut)} {
		if err := exchange(t, dir); err != nil {
			t.Fatalf("exchange of %s before any lock: %v", dir, err)
		}
	}

	t.Run("claim-lock", func(t *testing.T) {
		mustMbot(t, env, "lock", "--claim", "repository=acme/app", "--reason", "repository compromised", "--config", tc.root.config)
		refusedWithin(t, gh, identity.CodeClaimLocked, "claim/repository=acme/app", "repository compromised", "mbot unlock --claim repository=acme/app")
		if err := exchange(t, copyIdentity(t, daemonOut)); err != nil {
			t.Errorf("the leaf refused another root identity (the token join's) under the claim lock: %v", err)
		}
		if res := rootJoin(t); res.code == 0 || !strings.Contains(res.stderr, "claim_locked") {
			t.Errorf("a join on the root under the claim lock: %s", res)
		}
		mustMbot(t, env, "unlock", "--claim", "repository=acme/app", "--auth", rootAdmin)
		admittedWithin(t, gh, 3*time.Second)
	})

	t.Run("claim-lock-expires", func(t *testing.T) {
		mustMbot(t, env, "lock", "--claim", "repository=acme/app", "--reason", "for a while", "--expires", "4s", "--auth", rootAdmin)
		until := time.Now().Add(4 * time.Second)
		refusedWithin(t, gh, identity.CodeClaimLocked, "for a while", "until ")
		if res := rootJoin(t); res.code == 0 || !strings.Contains(res.stderr, "claim_locked") {
			t.Errorf("a join on the root under the claim lock: %s", res)
		}
		time.Sleep(time.Until(until) + 200*time.Millisecond)
		// Expired: no unlock and no push needed on either cluster.
		if err := exchange(t, gh); err != nil {
			t.Errorf("the leaf still refuses the exchange after the lock expired: %v", err)
		}
		if res := rootJoin(t); res.code != 0 {
			t.Errorf("the root still refuses the join after the lock expired: %s", res)
		}
		if out := mustMbot(t, env, "get", "locks", "--config", tc.root.config).stdout; !strings.Contains(out, "no locks") {
			t.Errorf("mbot get locks after the expiry:\n%s", out)
		}
	})

	t.Run("token-join-claim-lock", func(t *testing.T) {
		mustMbot(t, env, "lock", "--claim", "join_token=locker-daemon", "--reason", "runner stolen", "--config", tc.root.config)
		refusedWithin(t, copyIdentity(t, daemonOut), identity.CodeClaimLocked, "claim/join_token=locker-daemon", "runner stolen")
		waitFor(t, "mbot start's renewal refused claim_locked", d, func() bool { return strings.Contains(d.logs.String(), "claim_locked") })
		var refusal *identity.Error
		if err := renewWith(t, tc.root, copyIdentity(t, daemonOut)); !errors.As(err, &refusal) || refusal.Code != identity.CodeClaimLocked {
			t.Errorf("a renewal of the claim-locked identity: %v, want claim_locked", err)
		}
		mustMbot(t, env, "unlock", "--claim", "join_token=locker-daemon", "--auth", rootAdmin)
		admittedWithin(t, copyIdentity(t, daemonOut), 3*time.Second)
	})

	t.Run("join-token-lock", func(t *testing.T) {
		mustMbot(t, env, "lock", "join_token/locker-daemon", "--reason", "token leaked", "--auth", rootAdmin)
		refusedWithin(t, copyIdentity(t, daemonOut), identity.CodeJoinTokenLocked, "join_token/locker-daemon", "token leaked")
		if err := exchange(t, gh); err != nil {
			t.Errorf("the leaf refused deployer's identity under locker's join_token lock: %v", err)
		}
		mustMbot(t, env, "unlock", "join_token/locker-daemon", "--config", tc.root.config)
		admittedWithin(t, copyIdentity(t, daemonOut), 3*time.Second)
	})
	d.running(t)
}
