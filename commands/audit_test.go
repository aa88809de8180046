package commands

import (
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

// TestWriteAuditTableEscapes prints records whose fields a caller chose
// with line breaks and terminal escapes: each record stays one row, and no
// control character reaches the output.
func TestWriteAuditTableEscapes(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	forged := "\n2026-01-02T03:04:05Z  join  allowed  deployer  github-deploy  github  repository=acme/app"
	var b strings.Builder
	err := writeAuditTable(&b, []store.AuditEvent{
		{Time: at, Event: "join", Code: "bad_request", JoinToken: "x" + forged, Method: "github\r\x1b[2J",
			Claims: map[string]string{"repository": "acme/app\x1b]0;pwned\x07", "ref": "refs/heads/main\n\tfake", "environment": "prod\u202e"}},
		{Time: at, Event: "join.rate_limited", Code: "rate_limited", Message: "dropped\r\n\x1b[2J" + forged, Remote: "192.0.2.1\x1b[31m"},
		{Time: at, Event: "join", Code: "bad_request", Bot: "b\tc", JoinToken: `a\"b`, Serials: []string{"ssh:1\n"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if n := strings.Count(out, "\n"); n != 4 {
		t.Errorf("%d lines, want a header and 3 rows:\n%s", n, out)
	}
	for _, c := range []string{"\r", "\x1b", "\x07", "\u202e"} {
		if strings.Contains(out, c) {
			t.Errorf("the table carries %q:\n%s", c, out)
		}
	}
	for _, want := range []string{`"x\n2026-01-02T03:04:05Z`, `"github\r\x1b[2J"`, `repository="acme/app\x1b]0;pwned\a"`,
		`ref="refs/heads/main\n\tfake"`, `"dropped\r\n\x1b[2J\n2026`, `by "192.0.2.1\x1b[31m"`, `"b\tc"`, `"a\\\"b"`, `"ssh:1\n"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks the escaped %s:\n%s", want, out)
		}
	}
	rows := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for i, row := range rows[1:] {
		if !strings.HasPrefix(row, "2026-01-02T03:04:05Z") {
			t.Errorf("row %d does not start with its time: %q", i+1, row)
		}
	}
}

// TestWriteAuditTableUnverifiedClaims checks that mbot audit shows the claims
// of a refused proof that did not verify, marked as unverified.
func TestWriteAuditTableUnverifiedClaims(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var b strings.Builder
	err := writeAuditTable(&b, []store.AuditEvent{
		{Time: at, Event: "join", Code: "wrong_issuer", Bot: "deployer", JoinToken: "github-deploy", Method: "github",
			Claims: map[string]string{"repository": "acme/app", "ref": "refs/heads/main", "iss": "https://attacker.example"}, ClaimsUnverified: true},
		{Time: at, Event: "join", Code: "rule_mismatch", Bot: "deployer", JoinToken: "github-deploy", Method: "github",
			Claims: map[string]string{"repository": "acme/other"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(rows) != 3 {
		t.Fatalf("%d lines, want a header and 2 rows:\n%s", len(rows), b.String())
	}
	if !strings.Contains(rows[1], "unverified: repository=acme/app ref=refs/heads/main") {
		t.Errorf("the refused proof's claims are not shown as unverified: %q", rows[1])
	}
	if strings.Contains(rows[2], "unverified") || !strings.Contains(rows[2], "repository=acme/other") {
		t.Errorf("verified claims are shown as %q", rows[2])
	}
}
