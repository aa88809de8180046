package verify_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

// tokenSecret is the secret of the token join token in these tests.
const tokenSecret = "0b6e1d3f5a7c9e2b4d6f8a1c3e5b7d9f0a2c4e6b8d1f3a5c7e9b2d4f6a8c1e3b5"

func tokenSection(secret string, expires time.Time) string {
	return "secret_hash: " + verify.HashTokenSecret(secret) + "\nexpires: " + expires.Format(time.RFC3339) + "\n"
}

func TestTokenJoin(t *testing.T) {
	expires := now.Add(time.Hour)
	v := mustCompile(t, "token", tokenSection(tokenSecret, expires), newEnv(nil))

	adm, err := v.Verify(context.Background(), tokenSecret)
	if err != nil {
		t.Fatalf("Verify with the right secret: %v", err)
	}
	if got := adm.Claims.String(); got != "join_token="+tokenName {
		t.Errorf("claims %s, want join_token=%s", got, tokenName)
	}
	if ok, why := policy.MatchRules(v.Rules(), adm.Claims); !ok {
		t.Errorf("the join token's own rule does not admit its claims: %s", why)
	}
	if !adm.UsableUntil.Equal(expires) {
		t.Errorf("UsableUntil %s, want the expiry %s", adm.UsableUntil, expires)
	}
	if strings.Contains(adm.ProofID, tokenSecret) || strings.Contains(adm.Claims.String(), tokenSecret) {
		t.Errorf("the admission carries the secret: %+v", adm)
	}

	// Single use: every use of the join token has the same proof ID, so
	// the join path records the first and refuses the second.
	again, err := v.Verify(context.Background(), tokenSecret)
	if err != nil {
		t.Fatal(err)
	}
	if again.ProofID != adm.ProofID {
		t.Errorf("two uses of the join token have proof IDs %s and %s; the second would not be refused", adm.ProofID, again.ProofID)
	}
	// A new secret under the same name (mbot tokens add again) is a new proof.
	renewed := mustCompile(t, "token", tokenSection("another secret", expires), newEnv(nil))
	radm, err := renewed.Verify(context.Background(), "another secret")
	if err != nil {
		t.Fatal(err)
	}
	if radm.ProofID == adm.ProofID {
		t.Error("a join token with a new secret has the proof ID of the old one")
	}
}

func TestTokenRefusals(t *testing.T) {
	cases := []struct {
		name      string
		secret    string
		expires   time.Time
		wantCode  identity.ErrorCode
		wantInMsg []string
	}{
		{name: "wrong secret", secret: "not-the-secret", expires: now.Add(time.Hour),
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"does not match", "mbot tokens add"}},
		{name: "secret with one character changed", secret: tokenSecret[:len(tokenSecret)-1] + "6", expires: now.Add(time.Hour),
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"does not match"}},
		{name: "the hash instead of the secret", secret: verify.HashTokenSecret(tokenSecret), expires: now.Add(time.Hour),
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"does not match"}},
		{name: "expired", secret: tokenSecret, expires: now.Add(-time.Minute),
			wantCode: identity.CodeProofExpired, wantInMsg: []string{"expired at " + now.Add(-time.Minute).Format(time.RFC3339), "1m0s ago", "mbot tokens add"}},
		{name: "expires this instant", secret: tokenSecret, expires: now,
			wantCode: identity.CodeProofExpired, wantInMsg: []string{"expired"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := mustCompile(t, "token", tokenSection(tokenSecret, tc.expires), newEnv(nil))
			adm, err := v.Verify(context.Background(), tc.secret)
			wantRefusal(t, err, tc.wantCode, tc.wantInMsg...)
			if adm != nil {
				t.Errorf("a refusal came with an admission: %+v", adm)
			}
			if err != nil && strings.Contains(err.Error(), tc.secret) {
				t.Errorf("the refusal repeats the presented secret: %v", err)
			}
		})
	}
}

func TestTokenSectionErrors(t *testing.T) {
	hash := verify.HashTokenSecret(tokenSecret)
	cases := []struct {
		name, section, want string
	}{
		{"no secret_hash", "expires: 2025-06-02T11:30:00Z\n", "line 8: spec.token.secret_hash must be sha256:"},
		{"the secret itself", "secret_hash: " + tokenSecret + "\nexpires: 2025-06-02T11:30:00Z\n", "line 8: spec.token.secret_hash must be sha256:"},
		{"short hash", "secret_hash: sha256:abcd\nexpires: 2025-06-02T11:30:00Z\n", "never put the secret itself here"},
		{"no expiry", "secret_hash: " + hash + "\n", "spec.token.expires must be an RFC 3339 time"},
		{"expiry not RFC 3339", "secret_hash: " + hash + "\nexpires: tomorrow\n", `line 9: spec.token.expires must be an RFC 3339 time such as 2025-06-02T11:30:00Z ("tomorrow")`},
		{"allow rules", "secret_hash: " + hash + "\nexpires: 2025-06-02T11:30:00Z\nallow: [{sub: x}]\n", "line 10: spec.token.allow is not a known field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compile(t, "token", tc.section, newEnv(nil))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := verify.Methods["token"].Compile(tokenName, nil, newEnv(nil)); err == nil || !strings.Contains(err.Error(), "mbot tokens add") {
		t.Errorf("a token join token without spec.token: err = %v", err)
	}
}
