package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// addKeypairToken runs mbot tokens add --method bound_keypair and returns
// the join token name and the registration secret (empty with --public-key).
func addKeypairToken(t *testing.T, c *cluster, args ...string) (name, secret string) {
	t.Helper()
	res := mustMbot(t, baseEnv(c.home), append([]string{"tokens", "add", "--bot", botName, "--config", c.config, "--method", "bound_keypair"}, args...)...)
	for _, line := range strings.Split(res.stdout, "\n") {
		if v, ok := strings.CutPrefix(line, "MBOT_TOKEN="); ok {
			name = v
		}
		if v, ok := strings.CutPrefix(line, "MBOT_REGISTRATION_SECRET="); ok {
			secret = v
		}
	}
	if name == "" {
		t.Fatalf("mbot tokens add printed no MBOT_TOKEN= line:\n%s", res)
	}
	if secret != "" && (len(secret) < 64 || strings.Count(res.stdout, secret) != 1 || strings.Contains(res.stderr, secret)) {
		t.Errorf("mbot tokens add should print a 256-bit registration secret exactly once, on stdout:\n%s", res)
	}
	time.Sleep(300 * time.Millisecond) // the running authority notices within 250ms
	return name, secret
}

// sshKeygen writes an Ed25519 key pair at path (and path.pub), as an admin
// or a runner would before binding it.
func sshKeygen(t *testing.T, path string) {
	t.Helper()
	keygen := requireTool(t, "ssh-keygen")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if res := run(t, nil, keygen, "-q", "-t", "ed25519", "-N", "", "-C", "runner", "-f", path); res.code != 0 {
		t.Fatalf("ssh-keygen: %s", res)
	}
}

// keypairIssue runs mbot issue --join-method bound_keypair with the key at keyPath.
func keypairIssue(t *testing.T, c *cluster, env map[string]string, token, keyPath, out string, extra ...string) result {
	t.Helper()
	return c.issue(t, c.jobEnv(env), token, out, append([]string{"--join-method", "bound_keypair", "--keypair-path", keyPath}, extra...)...)
}

func mustKeypairIssue(t *testing.T, c *cluster, env map[string]string, token, keyPath string, extra ...string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "mbot")
	if res := keypairIssue(t, c, env, token, keyPath, out, extra...); res.code != 0 {
		t.Fatalf("mbot issue --join-method bound_keypair: %s", res)
	}
	checkIdentity(t, c, out, token, "bound_keypair")
}

// wantKeypairRefused runs a bound_keypair join that must be refused with
// code, naming every hint, and writing nothing.
func wantKeypairRefused(t *testing.T, c *cluster, env map[string]string, token, keyPath, code string, hints ...string) {
	t.Helper()
	parent := t.TempDir()
	res := keypairIssue(t, c, env, token, keyPath, filepath.Join(parent, "mbot"))
	if res.code == 0 {
		t.Fatalf("mbot issue was admitted, want %s: %s", code, res)
	}
	for _, want := range append([]string{code}, hints...) {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr does not mention %q:\n%s", want, res.stderr)
		}
	}
	wantEmpty(t, parent)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(b), 0o600)
}

// keyLines are the body lines of the private key at path, to search for.
func keyLines(t *testing.T, path string) []string {
	t.Helper()
	var lines []string
	for _, line := range strings.Split(readFile(t, path), "\n") {
		if len(line) >= 40 && !strings.HasPrefix(line, "-----") {
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 {
		t.Fatalf("%s holds no key body", path)
	}
	return lines
}

func sequenceOf(t *testing.T, keyPath string) uint64 {
	t.Helper()
	var st struct {
		Sequence uint64 `json:"sequence"`
	}
	b, err := os.ReadFile(keyPath + ".state")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st.Sequence
}

// TestBoundKeypairJoin runs the keypair join of a self-hosted runner with
// the built binary: an admin-bound key, a registration secret, rejoins,
// both rotations, a wrong key, a stolen key that locks the join token, and
// no secret or private key in the audit log or the authority's output.
func TestBoundKeypairJoin(t *testing.T) {
	c, auth := startClusterWithLogs(t)
	runners := t.TempDir()
	key := filepath.Join(runners, "runner-1", "key")
	sshKeygen(t, key)
	var secrets, privateKeys []string
	privateKeys = append(privateKeys, keyLines(t, key)...)

	name, _ := addKeypairToken(t, c, "--name", "runner-1", "--public-key", key+".pub")

	t.Run("first-join", func(t *testing.T) {
		mustKeypairIssue(t, c, nil, name, key)
		if got := sequenceOf(t, key); got != 1 {
			t.Errorf("join sequence %d after the first join, want 1", got)
		}
		if fi, err := os.Stat(key + ".state"); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s.state: %v, mode %v; want 0600", key, err, fi.Mode().Perm())
		}
	})

	t.Run("rejoin-after-expiry", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "mbot")
		if res := keypairIssue(t, c, nil, name, key, out, "--ttl", "4s"); res.code != 0 {
			t.Fatalf("join with a 4s TTL: %s", res)
		}
		first := checkIdentity(t, c, out, name, "bound_keypair")
		time.Sleep(time.Until(first.NotAfter) + 500*time.Millisecond)
		if res := keypairIssue(t, c, nil, name, key, out); res.code != 0 {
			t.Fatalf("join again after the certificate expired: %s", res)
		}
		second := checkIdentity(t, c, out, name, "bound_keypair")
		if !second.NotAfter.After(first.NotAfter) {
			t.Errorf("the rejoin's certificate expires %s, not after the expired one's %s", second.NotAfter, first.NotAfter)
		}
		if got := sequenceOf(t, key); got != 3 {
			t.Errorf("join sequence %d after three joins, want 3", got)
		}
	})

	t.Run("wrong-key", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other")
		sshKeygen(t, other)
		privateKeys = append(privateKeys, keyLines(t, other)...)
		wantKeypairRefused(t, c, nil, name, other, "keypair_mismatch", name, "bound to key", "--keypair-path")
	})

	t.Run("runner-rotation", func(t *testing.T) {
		old := filepath.Join(t.TempDir(), "old-key")
		copyFile(t, key, old)
		copyFile(t, key+".state", old+".state")
		oldPub, _ := os.ReadFile(key + ".pub")
		mustKeypairIssue(t, c, nil, name, key, "--rotate-keypair")
		privateKeys = append(privateKeys, keyLines(t, key)...)
		newPub, _ := os.ReadFile(key + ".pub")
		if string(newPub) == string(oldPub) {
			t.Fatalf("%s.pub did not change in a rotation", key)
		}
		if _, err := os.Stat(key + ".next"); err == nil {
			t.Errorf("%s.next is left after an admitted rotation", key)
		}
		mustKeypairIssue(t, c, nil, name, key)
		wantKeypairRefused(t, c, nil, name, old, "keypair_mismatch", "bound to key")
	})

	t.Run("admin-rotation", func(t *testing.T) {
		replacement := filepath.Join(t.TempDir(), "replacement")
		sshKeygen(t, replacement)
		privateKeys = append(privateKeys, keyLines(t, replacement)...)
		addKeypairToken(t, c, "--name", name, "--rotate", "--public-key", replacement+".pub")
		mustKeypairIssue(t, c, nil, name, replacement)
		wantKeypairRefused(t, c, nil, name, key, "keypair_mismatch", "bound to key")
		res := mbot(t, baseEnv(c.home), "tokens", "add", "--bot", botName, "--config", c.config, "--method", "bound_keypair", "--name", name)
		if res.code == 0 || !strings.Contains(res.stderr, "--rotate") {
			t.Errorf("mbot tokens add over an existing join token without --rotate: %s", res)
		}
	})

	t.Run("apply", func(t *testing.T) {
		applied := filepath.Join(t.TempDir(), "key")
		sshKeygen(t, applied)
		privateKeys = append(privateKeys, keyLines(t, applied)...)
		dir := t.TempDir()
		doc := "kind: join_token\nversion: v1\nmetadata: {name: applied-runner}\nspec:\n  bot: " + botName +
			"\n  method: bound_keypair\n  bound_keypair:\n    public_key: " + strings.TrimSpace(readFile(t, applied+".pub")) + "\n"
		writeFile(t, filepath.Join(dir, "good.yaml"), doc, 0o600)
		mustMbot(t, baseEnv(c.home), "apply", "--config", c.config, "-f", filepath.Join(dir, "good.yaml"))
		time.Sleep(300 * time.Millisecond)
		mustKeypairIssue(t, c, nil, "applied-runner", applied)

		bad := strings.Replace(doc, "public_key: "+strings.TrimSpace(readFile(t, applied+".pub")),
			"registration_secret_hash: the-secret-itself\n    registration_expires: 2030-01-01T00:00:00Z", 1)
		writeFile(t, filepath.Join(dir, "bad.yaml"), bad, 0o600)
		res := mbot(t, baseEnv(c.home), "apply", "--config", c.config, "-f", filepath.Join(dir, "bad.yaml"))
		if res.code == 0 || !strings.Contains(res.stderr, "bad.yaml:8") || !strings.Contains(res.stderr, "64 hex digits") {
			t.Errorf("mbot apply of a registration secret in the clear: %s", res)
		}
	})

	// A runner that registers its own key with a one-time secret; the key
	// is generated in a directory that does not exist yet.
	regKey := filepath.Join(runners, "runner-2", "keys", "key")
	regName, secret := addKeypairToken(t, c, "--name", "runner-2", "--ttl", "1h")
	secrets = append(secrets, secret)
	t.Run("registration", func(t *testing.T) {
		if secret == "" {
			t.Fatal("mbot tokens add --method bound_keypair without --public-key printed no MBOT_REGISTRATION_SECRET")
		}
		wantKeypairRefused(t, c, nil, regName, regKey, "", "no private key at", "MBOT_REGISTRATION_SECRET")
		wantKeypairRefused(t, c, map[string]string{"MBOT_REGISTRATION_SECRET": strings.Repeat("0", 64)}, regName, regKey,
			"proof_invalid", "does not match")
		// That refusal generated the key; start over so the registration below generates it.
		os.RemoveAll(filepath.Dir(regKey))
		res := keypairIssue(t, c, map[string]string{"MBOT_REGISTRATION_SECRET": secret}, regName, regKey, filepath.Join(t.TempDir(), "mbot"))
		if res.code != 0 {
			t.Fatalf("registration: %s", res)
		}
		if strings.Contains(res.stdout+res.stderr, secret) {
			t.Errorf("mbot issue printed the registration secret:\n%s", res)
		}
		privateKeys = append(privateKeys, keyLines(t, regKey)...)
		for path, want := range map[string]os.FileMode{regKey: 0o600, filepath.Dir(regKey): 0o700, regKey + ".state": 0o600} {
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
				t.Errorf("%s: %v; want mode %04o", path, err, want)
			}
		}
		// Later joins need no secret.
		mustKeypairIssue(t, c, nil, regName, regKey)
	})

	t.Run("stolen-key-locks", func(t *testing.T) {
		thief := filepath.Join(t.TempDir(), "stolen")
		copyFile(t, regKey, thief)
		copyFile(t, regKey+".state", thief+".state")
		// Both holders join at once with the same sequence: one is
		// admitted, the other finds the sequence moved on.
		var wg sync.WaitGroup
		results := make([]result, 2)
		for i, k := range []string{regKey, thief} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = keypairIssue(t, c, nil, regName, k, filepath.Join(t.TempDir(), "mbot"))
			}()
		}
		wg.Wait()
		admitted, winner, loser := 0, regKey, thief
		for i, r := range results {
			if r.code == 0 {
				admitted++
				winner, loser = []string{regKey, thief}[i], []string{thief, regKey}[i]
			} else if !strings.Contains(r.stderr, "join_token_locked") || !strings.Contains(r.stderr, "two holders") {
				t.Errorf("the losing join was refused, but not as join_token_locked: %s", r)
			}
		}
		if admitted != 1 {
			t.Fatalf("%d of two parallel joins with one key and sequence were admitted, want 1:\n%s\n%s", admitted, results[0], results[1])
		}
		// Locked for everyone now, the original holder too.
		wantKeypairRefused(t, c, nil, regName, regKey, "join_token_locked", "is locked", "mbot tokens add --name "+regName)
		wantKeypairRefused(t, c, nil, regName, thief, "join_token_locked")

		audit := mustMbot(t, baseEnv(c.home), "audit", "--config", c.config, "-o", "json", "--limit", "0", "--denied")
		var events []struct {
			Code      string `json:"code"`
			JoinToken string `json:"join_token"`
			Message   string `json:"message"`
		}
		if err := json.Unmarshal([]byte(audit.stdout), &events); err != nil {
			t.Fatalf("mbot audit -o json: %v\n%s", err, audit)
		}
		found := false
		for _, ev := range events {
			if ev.JoinToken == regName && ev.Code == "join_token_locked" && strings.Contains(ev.Message, "two holders") &&
				strings.Count(ev.Message, "127.0.0.1:") >= 2 {
				found = true
			}
		}
		if !found {
			t.Errorf("mbot audit has no join_token_locked record naming both holders' addresses:\n%s", audit.stdout)
		}

		// mbot unlock --join-token lifts the lock and keeps the sequence:
		// the holder that joined last goes on, the other locks it again.
		res := mustMbot(t, baseEnv(c.home), "unlock", "--join-token", regName, "--config", c.config)
		if !strings.Contains(res.stdout, "unlocked join token "+regName) {
			t.Errorf("mbot unlock --join-token: %s", res)
		}
		mustKeypairIssue(t, c, nil, regName, winner)
		wantKeypairRefused(t, c, nil, regName, loser, "join_token_locked", "two holders")
		if res := mbot(t, baseEnv(c.home), "unlock", "--join-token", "runner-1", "--config", c.config); res.code == 0 || !strings.Contains(res.stderr, "not locked") {
			t.Errorf("mbot unlock --join-token of a join token that is not locked: %s", res)
		}

		// The admin clears the lock by binding a new registration secret;
		// the runner registers a new key, and the stolen one stays out.
		_, again := addKeypairToken(t, c, "--name", regName, "--rotate")
		secrets = append(secrets, again)
		for _, suffix := range []string{"", ".pub", ".state"} {
			os.Remove(regKey + suffix)
		}
		mustKeypairIssue(t, c, map[string]string{"MBOT_REGISTRATION_SECRET": again}, regName, regKey)
		privateKeys = append(privateKeys, keyLines(t, regKey)...)
		wantKeypairRefused(t, c, nil, regName, thief, "keypair_mismatch")
	})

	t.Run("nothing-secret-kept", func(t *testing.T) {
		audit := mustMbot(t, baseEnv(c.home), "audit", "--config", c.config, "-o", "json", "--limit", "0")
		if !strings.Contains(audit.stdout, `"bound_keypair"`) {
			t.Fatalf("mbot audit records no bound_keypair join:\n%s", audit.stdout)
		}
		needles := append(append([]string(nil), secrets...), privateKeys...)
		data := filepath.Join(filepath.Dir(c.config), "data")
		entries, err := os.ReadDir(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range needles {
			if strings.Contains(audit.stdout, s) {
				t.Errorf("mbot audit shows a secret or private key line %.12s...", s)
			}
			if strings.Contains(auth.logs.String(), s) {
				t.Errorf("the authority's output holds a secret or private key line %.12s...", s)
			}
			for _, e := range entries {
				if body, err := os.ReadFile(filepath.Join(data, e.Name())); err == nil && strings.Contains(string(body), s) {
					t.Errorf("the authority's data_dir keeps a secret or private key line in %s", e.Name())
				}
			}
		}
		if strings.Contains(auth.logs.String(), `"signature"`) || strings.Contains(audit.stdout, `"signature"`) {
			t.Errorf("a bound_keypair proof (its signature) reached the audit log or the authority's output")
		}
	})
}

// TestDaemonBoundKeypair runs mbot start on a runner that registers its key
// with a secret, then keeps its outputs fresh by joining again with the
// key, rotating it at every join.
func TestDaemonBoundKeypair(t *testing.T) {
	dc := startDaemonCluster(t)
	name, secret := addKeypairToken(t, dc.cluster, "--name", "daemon-runner")
	key := filepath.Join(t.TempDir(), "keypair", "key")
	out := filepath.Join(t.TempDir(), "mbot")
	env := dc.jobEnv(map[string]string{"MBOT_REGISTRATION_SECRET": secret, "MBOT_KEYPAIR_PATH": key})
	d, _ := dc.startDaemon(t, env, name, out, "--join-method", "bound_keypair", "--rotate-keypair")

	first := waitForRenewal(t, d, out, "")
	firstPub := readFile(t, key+".pub")
	second := waitForRenewal(t, d, out, first)
	waitForRenewal(t, d, out, second)
	checkIdentity(t, dc.cluster, out, name, "bound_keypair")
	if got := sequenceOf(t, key); got < 3 {
		t.Errorf("join sequence %d after three joins, want at least 3", got)
	}
	if readFile(t, key+".pub") == firstPub {
		t.Errorf("the key did not rotate with --rotate-keypair")
	}
	if strings.Contains(d.logs.String(), secret) {
		t.Errorf("mbot start logged the registration secret")
	}
	if code := d.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("mbot start exited %d on SIGTERM:\n%s", code, d.logs)
	}
	if strings.Contains(dc.auth.logs.String(), secret) {
		t.Errorf("the authority logged the registration secret")
	}
}
