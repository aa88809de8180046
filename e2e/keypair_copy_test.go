//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBoundKeypairJWTCopyLocks: a copy of a runner's key and .state that
// asks only for a workload-identity-jwt (no key of its own to bind the
// answer to) presents the sequence one behind the runner's. That is not a
// retry: the join token is locked, nothing is written for the copy, and
// the runner's next join is refused as locked too. Run with the built
// binary and mbot.yaml, as a runner would.
func TestBoundKeypairJWTCopyLocks(t *testing.T) {
	c, _ := startClusterWith(t, func(c *cluster) string {
		return defaultResources(c) + fmt.Sprintf(spiffeResourcesYAML, c.login, c.ci.URL)
	})
	work := t.TempDir()
	key := filepath.Join(work, "runner", "key")
	sshKeygen(t, key)
	res := mustMbot(t, baseEnv(c.home), "tokens", "add", "--bot", svidBot, "--config", c.config, "--method", "bound_keypair", "--public-key", key+".pub")
	var name string
	for _, line := range strings.Split(res.stdout, "\n") {
		if v, ok := strings.CutPrefix(line, "MBOT_TOKEN="); ok {
			name = v
		}
	}
	if name == "" {
		t.Fatalf("mbot tokens add printed no MBOT_TOKEN= line:\n%s", res)
	}
	time.Sleep(300 * time.Millisecond) // the running authority looks for changes every 250ms

	// issueJWT joins with the key at keyPath for one JWT-SVID into a fresh directory.
	issueJWT := func(keyPath string) (result, string) {
		out := filepath.Join(t.TempDir(), "jwt")
		config := filepath.Join(t.TempDir(), "mbot.yaml")
		writeFile(t, config, fmt.Sprintf("authority: %s\nca_pin: %s\ntoken: %s\njoin_method: bound_keypair\nkeypair_path: %s\noutputs:\n"+
			"  - type: workload-identity-jwt\n    destination: %s\n    audiences: [vault]\n    spiffe_id: /ci/payments/deploy\n",
			c.url, c.pin, name, keyPath, out), 0o644)
		return mbot(t, c.jobEnv(map[string]string{"MBOT_CONFIG": config}), "issue"), out
	}
	if res, _ := issueJWT(key); res.code != 0 {
		t.Fatalf("the runner's first join: %s", res)
	}
	thief := filepath.Join(work, "thief", "key")
	if err := os.MkdirAll(filepath.Dir(thief), 0o700); err != nil {
		t.Fatal(err)
	}
	copyFile(t, key, thief)
	copyFile(t, key+".state", thief+".state")
	if res, _ := issueJWT(key); res.code != 0 {
		t.Fatalf("the runner's second join: %s", res)
	}
	if got, want := sequenceOf(t, thief), sequenceOf(t, key)-1; got != want {
		t.Fatalf("the copy is at sequence %d, want %d (one behind the runner)", got, want)
	}

	res, out := issueJWT(thief)
	if res.code == 0 || !strings.Contains(res.stderr, "join_token_locked") || !strings.Contains(res.stderr, "two holders") {
		t.Fatalf("the copy's JWT-only join at the previous sequence: want join_token_locked:\n%s", res)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("the refused copy's join wrote %s", out)
	}
	if res, _ := issueJWT(key); res.code == 0 || !strings.Contains(res.stderr, "join_token_locked") {
		t.Errorf("the runner's join after the copy was caught: want join_token_locked:\n%s", res)
	}
}
