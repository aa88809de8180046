package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/internal/simci"
)

// iamTokensYAML are iam join tokens for the STS stand-in at %[2]s: one that
// admits its caller, one for another account, one that does not list the
// stand-in as an STS endpoint.
const iamTokensYAML = `kind: join_token
version: v1
metadata: {name: iam-e2e}
spec:
  bot: %[1]s
  method: iam
  iam:
    sts_endpoints: [%[2]s]
    allow:
      - aws_account: "%[3]s"
        aws_arn: "arn:aws:sts::%[3]s:assumed-role/ci-deploy/*"
---
kind: join_token
version: v1
metadata: {name: iam-e2e-other-account}
spec:
  bot: %[1]s
  method: iam
  iam:
    sts_endpoints: [%[2]s]
    allow:
      - aws_account: "210987654321"
---
kind: join_token
version: v1
metadata: {name: iam-e2e-aws-only}
spec:
  bot: %[1]s
  method: iam
  iam:
    allow:
      - aws_account: "%[3]s"
`

// TestIAMJoin joins from a job holding AWS credentials, detected as such,
// through the authority and the STS stand-in, which checks the signature.
func TestIAMJoin(t *testing.T) {
	c := startCluster(t)
	sts, err := simci.StartSTS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sts.Close() })
	file := filepath.Join(t.TempDir(), "iam.yaml")
	writeFile(t, file, fmt.Sprintf(iamTokensYAML, botName, sts.URL, simci.STSAccount), 0o600)
	mustMbot(t, baseEnv(c.home), "apply", "--config", c.config, "-f", file)
	time.Sleep(300 * time.Millisecond) // the running authority looks for changes every 250ms
	env := c.jobEnv(sts.Env())

	t.Run("detected", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "mbot")
		if res := c.issue(t, env, "iam-e2e", out); res.code != 0 {
			t.Fatalf("mbot issue with AWS credentials: %s", res)
		}
		checkIdentity(t, c, out, "iam-e2e", "iam")
	})

	t.Run("rule-mismatch", func(t *testing.T) {
		wantRefused(t, c, env, "iam-e2e-other-account", "rule_mismatch", "does not match aws_account (token has "+simci.STSAccount+")")
	})

	t.Run("endpoint-not-listed", func(t *testing.T) {
		before := sts.Requests()
		wantRefused(t, c, env, "iam-e2e-aws-only", "proof_invalid", "not an AWS STS endpoint", "sts_endpoints")
		if n := sts.Requests() - before; n != 0 {
			t.Errorf("the authority sent %d requests to an endpoint the join token does not list", n)
		}
	})

	t.Run("wrong-credentials", func(t *testing.T) {
		vars := sts.Env()
		vars["AWS_SECRET_ACCESS_KEY"] = "not-the-secret-key"
		wantRefused(t, c, c.jobEnv(vars), "iam-e2e", "proof_invalid", "SignatureDoesNotMatch")
	})
}
