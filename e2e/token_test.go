package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startClusterWithLogs is startCluster that also hands back the running
// authority, whose output the token tests search for the secret.
func startClusterWithLogs(t *testing.T) (*cluster, *background) {
	t.Helper()
	return startClusterWith(t, defaultResources)
}

// addToken runs mbot tokens add and reads the join token name and secret
// from what it prints.
func addToken(t *testing.T, c *cluster, args ...string) (name, secret string) {
	t.Helper()
	res := mustMbot(t, baseEnv(c.home), append([]string{"tokens", "add", "--bot", botName, "--config", c.config}, args...)...)
	for _, line := range strings.Split(res.stdout, "\n") {
		if v, ok := strings.CutPrefix(line, "MBOT_TOKEN="); ok {
			name = v
		}
		if v, ok := strings.CutPrefix(line, "MBOT_JOIN_SECRET="); ok {
			secret = v
		}
	}
	if name == "" || len(secret) < 64 {
		t.Fatalf("mbot tokens add printed no MBOT_TOKEN= and MBOT_JOIN_SECRET= lines with a 256-bit secret:\n%s", res)
	}
	if strings.Count(res.stdout, secret) != 1 || strings.Contains(res.stderr, secret) {
		t.Errorf("mbot tokens add should print the secret exactly once, on stdout:\n%s", res)
	}
	if !strings.Contains(res.stdout, "shown only this once") || !strings.Contains(res.stdout, "--join-method token --token "+name) {
		t.Errorf("mbot tokens add does not tell how to use the secret:\n%s", res.stdout)
	}
	// A running authority looks for resources changed by another process
	// at most every 250ms.
	time.Sleep(300 * time.Millisecond)
	return name, secret
}

// tokenJobEnv is a job on a host with no identity provider, holding secret.
func tokenJobEnv(c *cluster, secret string) []string {
	return c.jobEnv(map[string]string{"MBOT_JOIN_METHOD": "token", "MBOT_JOIN_SECRET": secret})
}

// TestTokenJoin creates a single-use join secret with mbot tokens add and
// joins with it from a host that has no identity provider.
func TestTokenJoin(t *testing.T) {
	c, auth := startClusterWithLogs(t)
	var secrets []string

	name, secret := addToken(t, c, "--name", "build-host-1", "--ttl", "1h")
	secrets = append(secrets, secret)
	if name != "build-host-1" {
		t.Errorf("MBOT_TOKEN=%s, want the --name build-host-1", name)
	}
	env := tokenJobEnv(c, secret)

	t.Run("join", func(t *testing.T) {
		// As the README shows it: the method on the command line, the secret in the environment.
		out := filepath.Join(t.TempDir(), "mbot")
		res := c.issue(t, c.jobEnv(map[string]string{"MBOT_JOIN_SECRET": secret}), name, out, "--join-method", "token")
		if res.code != 0 {
			t.Fatalf("mbot issue --join-method token: %s", res)
		}
		checkIdentity(t, c, out, name, "token")
		if strings.Contains(res.stdout+res.stderr, secret) {
			t.Errorf("mbot issue printed the secret:\n%s", res)
		}
	})

	t.Run("second-use", func(t *testing.T) {
		wantRefused(t, c, env, name, "proof_replayed", name)
	})

	t.Run("wrong-secret", func(t *testing.T) {
		other, otherSecret := addToken(t, c)
		secrets = append(secrets, otherSecret)
		if !strings.HasPrefix(other, botName+"-token-") {
			t.Errorf("default join token name %q, want %s-token-<random>", other, botName)
		}
		wrong := tokenJobEnv(c, strings.Repeat("0", 64))
		wantRefused(t, c, wrong, other, "proof_invalid", other, "does not match", "mbot tokens add")
		// The refusal did not use the join token up.
		out := filepath.Join(t.TempDir(), "mbot")
		if res := c.issue(t, tokenJobEnv(c, otherSecret), other, out); res.code != 0 {
			t.Fatalf("mbot issue with the right secret after a wrong one: %s", res)
		}
	})

	t.Run("expired", func(t *testing.T) {
		short, shortSecret := addToken(t, c, "--ttl", "1s")
		secrets = append(secrets, shortSecret)
		time.Sleep(1500 * time.Millisecond)
		wantRefused(t, c, tokenJobEnv(c, shortSecret), short, "proof_expired", short, "expired at")
	})

	t.Run("no-secret", func(t *testing.T) {
		res := c.issue(t, c.jobEnv(nil), name, filepath.Join(t.TempDir(), "mbot"), "--join-method", "token")
		if res.code == 0 || !strings.Contains(res.stderr, "MBOT_JOIN_SECRET is unset") {
			t.Errorf("mbot issue --join-method token without MBOT_JOIN_SECRET: %s", res)
		}
	})

	t.Run("get-join-tokens", func(t *testing.T) {
		// Each single-use join token says whether it was used or expired, and when it expires.
		fresh, _ := addToken(t, c, "--name", "unused-host", "--ttl", "2h")
		table := mustMbot(t, baseEnv(c.home), "get", "join_tokens", "--config", c.config).stdout
		rows := map[string]string{}
		for _, line := range strings.Split(table, "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				rows[f[0]] = line
			}
		}
		if !strings.Contains(rows["NAME"], "SINGLE USE") {
			t.Errorf("mbot get join_tokens has no SINGLE USE column:\n%s", table)
		}
		for token, want := range map[string]string{name: "  used 20", fresh: "  unused, expires 20"} {
			if !strings.Contains(rows[token], want) {
				t.Errorf("join token %s: row %q lacks %q\n%s", token, rows[token], want, table)
			}
		}
		if !strings.Contains(rows[fresh], "(in 2h0m0s)") && !strings.Contains(rows[fresh], "(in 1h59m0s)") {
			t.Errorf("join token %s: row %q does not say when it expires\n%s", fresh, rows[fresh], table)
		}
		expired := 0
		for _, row := range rows {
			if strings.Contains(row, "  expired 20") {
				expired++
			}
		}
		if expired != 1 {
			t.Errorf("want one expired join token (the --ttl 1s one):\n%s", table)
		}
	})

	t.Run("existing-name", func(t *testing.T) {
		res := mbot(t, baseEnv(c.home), "tokens", "add", "--bot", botName, "--name", tokenGitHub, "--config", c.config)
		if res.code == 0 || !strings.Contains(res.stderr, "exists already") {
			t.Errorf("mbot tokens add over the github join token: %s", res)
		}
	})

	t.Run("secret-kept-nowhere", func(t *testing.T) {
		audit := mustMbot(t, baseEnv(c.home), "audit", "--config", c.config, "-o", "json", "--limit", "0")
		var events []struct {
			Event     string `json:"event"`
			Allowed   bool   `json:"allowed"`
			Code      string `json:"code"`
			JoinToken string `json:"join_token"`
			Method    string `json:"method"`
		}
		if err := json.Unmarshal([]byte(audit.stdout), &events); err != nil {
			t.Fatalf("mbot audit -o json: %v\n%s", err, audit)
		}
		var joined, replayed bool
		for _, ev := range events {
			if ev.Event == "join" && ev.JoinToken == name && ev.Method == "token" {
				joined = joined || ev.Allowed
				replayed = replayed || ev.Code == "proof_replayed"
			}
		}
		if !joined || !replayed {
			t.Errorf("mbot audit does not record the token join and its refused second use (joined %v, replayed %v):\n%s", joined, replayed, audit.stdout)
		}
		data := filepath.Join(filepath.Dir(c.config), "data")
		for _, s := range secrets {
			if strings.Contains(audit.stdout, s) {
				t.Errorf("mbot audit shows a join secret")
			}
			if strings.Contains(auth.logs.String(), s) {
				t.Errorf("the authority logged a join secret:\n%s", auth.logs)
			}
			entries, err := os.ReadDir(data)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if body, err := os.ReadFile(filepath.Join(data, e.Name())); err == nil && strings.Contains(string(body), s) {
					t.Errorf("the authority's data_dir keeps a join secret in %s", e.Name())
				}
			}
		}
	})
}
