package authority_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// TestJoinRefusesBadOutputNames checks that the authority, not only the
// client, checks output and role names: a name reaches the SSH
// certificate's key ID, which sshd logs. The refusal comes before the
// proof is verified, so the proof stays usable.
func TestJoinRefusesBadOutputNames(t *testing.T) {
	a, ci := openAuthority(t)
	cases := []struct {
		name  string
		out   output
		wants []string
	}{
		{"newline", newOutput(t, "identity\nbot=root"), []string{`"identity\nbot=root"`, "not a valid name"}},
		{"space", newOutput(t, "identity bot=root"), []string{`"identity bot=root"`, "not a valid name"}},
		{"too long", newOutput(t, strings.Repeat("a", 64)), []string{"64 characters", "at most 63"}},
		{"upper case", newOutput(t, "Identity"), []string{`"Identity"`}},
		{"empty", newOutput(t, ""), []string{"output name is empty"}},
		{"terminal escape", newOutput(t, "id\x1b[2J"), []string{`"id\x1b[2J"`}},
		{"role with a newline", newOutput(t, "identity", "deploy\nadmin"), []string{`"deploy\nadmin"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			proof := githubToken(t, ci, nil)
			resp, err := a.Join(t.Context(), joinRequest("github-deploy", "github", proof, time.Hour, tc.out), "test")
			var ie *identity.Error
			if !errors.As(err, &ie) || ie.Code != identity.CodeBadRequest || ie.Code.HTTPStatus() != 400 {
				t.Fatalf("Join = %v, %v; want a 400 bad_request", resp, err)
			}
			for _, w := range tc.wants {
				if !strings.Contains(ie.Message, w) {
					t.Errorf("message %q does not mention %q", ie.Message, w)
				}
			}
			if strings.ContainsAny(ie.Message, "\n\x1b") {
				t.Errorf("message carries a control character: %q", ie.Message)
			}
			ev := lastAudit(t, a)
			if ev.Allowed || ev.Code != string(identity.CodeBadRequest) || len(ev.Claims) != 0 || len(ev.Serials) != 0 {
				t.Errorf("audit record %+v; want a refusal with no claims (the proof was not verified) and no certificate", ev)
			}
			// Not verified, so not consumed: the same proof still joins.
			if _, err := a.Join(t.Context(), joinRequest("github-deploy", "github", proof, time.Hour, newOutput(t, "identity")), "test"); err != nil {
				t.Errorf("the proof of a refused request no longer joins: %v", err)
			}
		})
	}
}
