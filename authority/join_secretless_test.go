package authority_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/authoritytest"
	"github.com/mbot-dev/mbot/internal/simci"
	"github.com/mbot-dev/mbot/joiners"
)

// secretlessBotsYAML has an iam join token trusting the STS stand-in at
// STS_URL and a token join token whose secret is "s3cret".
const secretlessBotsYAML = `# the simulated CI issuer, unused here: %[1]s
kind: role
version: v1
metadata: {name: deploy}
spec:
  logins: [deploy]
---
kind: bot
version: v1
metadata: {name: deployer}
spec:
  roles: [deploy]
---
kind: join_token
version: v1
metadata: {name: iam-deploy}
spec:
  bot: deployer
  method: iam
  iam:
    sts_endpoints: [STS_URL]
    allow:
      - aws_arn: "arn:aws:sts::123456789012:assumed-role/ci-deploy/*"
---
kind: join_token
version: v1
metadata: {name: host-1}
spec:
  bot: deployer
  method: token
  token:
    secret_hash: SECRET_HASH
    expires: EXPIRES
`

// TestJoinOnce joins twice with one iam signature and twice with one token
// secret, through the real join path: the second join of each is refused
// as a replay, and nothing is handed out for it.
func TestJoinOnce(t *testing.T) {
	sts, err := simci.StartSTS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sts.Close() })
	bots := strings.NewReplacer("STS_URL", sts.URL, "SECRET_HASH", verify.HashTokenSecret("s3cret"),
		"EXPIRES", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)).Replace(secretlessBotsYAML)
	env := authoritytest.Start(t, "acme", bots, "")

	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	for k, v := range sts.Env() {
		t.Setenv(k, v)
	}
	iam, err := joiners.ByMethod("iam")
	if err != nil {
		t.Fatal(err)
	}
	signed, err := iam.Proof(t.Context(), os.Getenv, "acme")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ token, method, proof string }{
		{"iam-deploy", "iam", signed},
		{"host-1", "token", "s3cret"},
	} {
		t.Run(tc.method, func(t *testing.T) {
			resp, err := env.Authority.Join(t.Context(), joinRequest(tc.token, tc.method, tc.proof, time.Hour, newOutput(t, "identity")), "test")
			if err != nil {
				t.Fatalf("first join refused: %v", err)
			}
			if resp.Bot != "deployer" || len(resp.Outputs) != 1 {
				t.Fatalf("first join: bot %q, %d outputs", resp.Bot, len(resp.Outputs))
			}
			resp, err = env.Authority.Join(t.Context(), joinRequest(tc.token, tc.method, tc.proof, time.Hour, newOutput(t, "identity")), "test")
			var refusal *identity.Error
			if !errors.As(err, &refusal) || refusal.Code != identity.CodeProofReplayed || resp != nil {
				t.Fatalf("second join with the same proof: %v, %v; want proof_replayed", resp, err)
			}
		})
	}
}
