package authority_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

// TestJoinRecordsIssuedCertificates: an admitted join records each
// certificate it hands out (SSH under ssh-user-ca, X.509 under tls-ca) with
// its audit record's id, bot, join token and claims; a refused one records none.
func TestJoinRecordsIssuedCertificates(t *testing.T) {
	a, ci := openAuthority(t)
	ctx := context.Background()
	resp, err := a.Join(ctx, joinRequest("github-deploy", "github", githubToken(t, ci, nil), time.Hour, newOutput(t, "identity")), "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Join(ctx, joinRequest("github-deploy", "github", githubToken(t, ci, func(c map[string]any) { c["ref"] = "refs/heads/dev" }),
		time.Hour, newOutput(t, "identity")), "127.0.0.1:1"); err == nil {
		t.Fatal("a join from another ref was admitted")
	}
	ev := lastAudit(t, a)
	if ev.Allowed {
		t.Fatal("the newest record should be the refusal")
	}
	issued, err := a.Store().IssuedCertificates(ctx, store.IssuedFilter{ValidAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	out := resp.Outputs[0]
	want := map[string]string{"ssh-user-ca": strconv.FormatUint(out.SSHSerial, 10), "tls-ca": out.TLSSerial}
	if len(issued) != 2 {
		t.Fatalf("%d issued certificates recorded, want 2: %+v", len(issued), issued)
	}
	for _, c := range issued {
		if want[c.CA] != c.Serial || c.Bot != "deployer" || c.JoinToken != "github-deploy" || c.Claims["repository"] != "acme/app" ||
			c.AuditID == 0 || c.AuditID == ev.ID || !c.NotAfter.Equal(out.NotAfter) || c.OutputType != "identity" {
			t.Errorf("issued certificate %+v; want %s serial %s of deployer's join", c, c.CA, want[c.CA])
		}
	}
}
