package authority_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/internal/authoritytest"
	"github.com/mbot-dev/mbot/internal/simci"
	"github.com/mbot-dev/mbot/joiners"
)

// TestJoinRecordsCIPlatform checks what the audit record says about the CI
// platform of an iam join: what STS shows (CodeBuild's role session) as
// ci_platform, what only the client reports as ci_platform_reported, and a
// report that cannot be true of the method, or is hostile, marked so.
func TestJoinRecordsCIPlatform(t *testing.T) {
	sts, err := simci.StartSTS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sts.Close() })
	bots := strings.NewReplacer("STS_URL", sts.URL, "SECRET_HASH", verify.HashTokenSecret("unused"), "EXPIRES", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)).
		Replace(secretlessBotsYAML)
	bots = strings.Replace(bots, "assumed-role/ci-deploy/*", "assumed-role/*", 1)
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
	for _, tc := range []struct {
		name, callerArn, reported string
		want                      map[string]string // claims of the record; "" means absent
	}{
		{"CodeBuild, shown by STS", simci.CodeBuildArn, "codebuild", map[string]string{"ci_platform": "codebuild", "ci_platform_reported": ""}},
		{"CodeBuild, not reported", simci.CodeBuildArn, "", map[string]string{"ci_platform": "codebuild", "ci_platform_reported": ""}},
		{"CodeBuild, reported only", simci.STSArn, "codebuild", map[string]string{"ci_platform": "", "ci_platform_reported": "codebuild"}},
		{"a platform of another method", simci.STSArn, "cloud_build", map[string]string{"ci_platform_reported": "cloud_build (unknown for iam)"}},
		{"a hostile report", simci.STSArn, "codebuild\x1b[2J\nci_platform=x", map[string]string{"ci_platform": ""}},
		{"no report", simci.STSArn, "", map[string]string{"ci_platform": "", "ci_platform_reported": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sts.SetCaller(tc.callerArn, simci.STSUserID)
			proof, err := iam.Proof(t.Context(), os.Getenv, "acme")
			if err != nil {
				t.Fatal(err)
			}
			req := joinRequest("iam-deploy", "iam", proof, time.Hour, newOutput(t, "identity"))
			req.CIPlatform = tc.reported
			if _, err := env.Authority.Join(t.Context(), req, "test"); err != nil {
				t.Fatalf("join refused: %v", err)
			}
			evs, err := env.Authority.Store().ListAudit(t.Context(), store.AuditFilter{Limit: 1})
			if err != nil || len(evs) != 1 {
				t.Fatalf("audit: %v, %d records", err, len(evs))
			}
			for k, want := range tc.want {
				if got := evs[0].Claims[k]; got != want {
					t.Errorf("claim %s = %q, want %q", k, got, want)
				}
			}
			if r := evs[0].Claims["ci_platform_reported"]; strings.ContainsAny(r, "\x1b\n") {
				t.Errorf("the reported platform reached the record unescaped: %q", r)
			}
		})
	}
}
