package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/identity"
)

// spaceliftHost is the Spacelift account of testdata/claims/spacelift.json;
// Spacelift's tokens carry it as their audience.
const spaceliftHost = "acme.app.spacelift.io"

func init() {
	platforms = append(platforms, platform{
		name:     "spacelift",
		audience: spaceliftHost,
		section: func(issuer string) string {
			return spaceliftHead(issuer) + "allow:\n  - space_id: legacy\n    caller_type: stack\n    caller_id: infra\n"
		},
		claims: policy.Claims{
			"sub":         {"space:legacy:stack:infra:run_type:TRACKED:scope:write"},
			"space_id":    {"legacy"},
			"caller_type": {"stack"},
			"caller_id":   {"infra"},
			"run_type":    {"TRACKED"},
			"run_id":      {"01GQ2Z9M6VHK9V0R4J6Q4K6Z3N"},
			"scope":       {"write"},
		},
	})
}

func spaceliftHead(issuer string) string {
	return "hostname: " + spaceliftHost + "\nissuer: " + issuer + "\n"
}

func TestSpaceliftRules(t *testing.T) {
	runSectionRuleCases(t, platformByName(t, "spacelift"), spaceliftHead, jose.RS256, []ruleCase{
		{
			name:      "stack in a space",
			allow:     "  - space_id: legacy\n    caller_type: stack\n    caller_id: infra\n",
			wantMatch: true,
		},
		{
			name:      "every documented rule field",
			allow:     "  - space_id: legacy\n    caller_id: infra\n    caller_type: stack\n    scope: write\n",
			wantMatch: true,
		},
		{
			name:         "a proposed run has only read scope",
			allow:        "  - caller_id: infra\n    scope: write\n",
			edit:         func(c map[string]any) { c["scope"], c["runType"] = "read", "PROPOSED" },
			wantInReason: []string{"scope wants write, token has read"},
		},
		{
			name:         "another stack",
			allow:        "  - space_id: legacy\n    caller_id: infra\n",
			edit:         func(c map[string]any) { c["callerId"] = "infra-sandbox" },
			wantInReason: []string{"caller_id wants infra, token has infra-sandbox"},
		},
		{
			name:         "a module, not a stack",
			allow:        "  - caller_type: stack\n",
			edit:         func(c map[string]any) { c["callerType"] = "module" },
			wantInReason: []string{"caller_type wants stack, token has module"},
		},
		{
			name:      "stacks by glob",
			allow:     "  - caller_id: infra-*\n",
			edit:      func(c map[string]any) { c["callerId"] = "infra-eu" },
			wantMatch: true,
		},
		{
			name:         "no spaceId claim",
			allow:        "  - caller_id: infra\n",
			edit:         func(c map[string]any) { delete(c, "spaceId") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"spaceId"`, "Spacelift"},
		},
		{
			name:         "no scope claim",
			allow:        "  - caller_id: infra\n",
			edit:         func(c map[string]any) { delete(c, "scope") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"scope"`},
		},
		{
			// Spacelift mints tokens for the account's host; a token for the
			// authority's audience is not one Spacelift issues.
			name:         "audience is the authority, not the Spacelift host",
			allow:        "  - caller_id: infra\n",
			edit:         func(c map[string]any) { c["aud"] = "acme" },
			wantCode:     identity.CodeWrongAudience,
			wantInReason: []string{`expects audience "` + spaceliftHost + `"`},
		},
		{
			name:         "another Spacelift account",
			allow:        "  - caller_id: infra\n",
			edit:         func(c map[string]any) { c["aud"] = "evil.app.spacelift.io" },
			wantCode:     identity.CodeWrongAudience,
			wantInReason: []string{"evil.app.spacelift.io"},
		},
	})
}

// TestSpaceliftDefaultIssuer checks that without an issuer override a join
// token trusts https://<hostname>, and says to change hostname.
func TestSpaceliftDefaultIssuer(t *testing.T) {
	v := mustCompile(t, "spacelift", "hostname: "+spaceliftHost+"\nallow:\n  - caller_id: infra\n", newEnv(nil))
	iss := startIssuer(t, jose.ES256)
	_, err := v.Verify(t.Context(), iss.Sign(t, tokenClaims(t, "spacelift", iss.URL, spaceliftHost)))
	wantRefusal(t, err, identity.CodeWrongIssuer, "https://"+spaceliftHost, "spec.spacelift.hostname")
}

func TestSpaceliftCompile(t *testing.T) {
	runCompileCases(t, "spacelift", []compileCase{
		{"hostname and rules", "hostname: acme.app.spacelift.io\nallow:\n  - space_id: legacy\n", ""},
		{"no hostname", "allow:\n  - space_id: legacy\n", "line 8: spec.spacelift: hostname is required"},
		{"hostname as a URL", "hostname: https://acme.app.spacelift.io\nallow:\n  - space_id: legacy\n",
			`hostname "https://acme.app.spacelift.io" must be a bare host name`},
		{"an issuer override does not replace hostname", "issuer: https://acme.app.spacelift.io\nallow:\n  - space_id: legacy\n",
			"hostname is required"},
		{"GitHub rule field", "hostname: acme.app.spacelift.io\nallow:\n  - repository: acme/app\n",
			`unknown field "repository"; fields for this method are: space_id, caller_id, caller_type, scope`},
		{"claim name instead of rule field", "hostname: acme.app.spacelift.io\nallow:\n  - spaceId: legacy\n", `unknown field "spaceId"`},
	})
}
