package verify_test

import (
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/identity"
)

// jenkinsIssuerAudience is what Jenkins' OpenID Connect Provider plugin
// puts in aud when a credential names an audience.
const jenkinsIssuerAudience = "https://auth.acme.internal"

func init() {
	// The generic method joins TestVerifyProof and the other shared tests
	// with a token shaped like Jenkins' OpenID Connect Provider plugin's.
	platforms = append(platforms, platform{
		name:     "oidc",
		audience: "acme",
		section: func(issuer string) string {
			return oidcHead(issuer) + "allow:\n  - sub: https://jenkins.acme.internal/job/app/job/main/\n"
		},
		claims: policy.Claims{
			"sub":          {"https://jenkins.acme.internal/job/app/job/main/"},
			"build_number": {"42"},
			"branch_name":  {"main"},
			"job_name":     {"app/main"},
			"production":   {"true"},
		},
	})
}

func oidcHead(issuer string) string { return "issuer: " + issuer + "\n" }

// platformByName finds a platform of the shared tests.
func platformByName(t *testing.T, name string) platform {
	t.Helper()
	for _, p := range platforms {
		if p.name == name {
			return p
		}
	}
	t.Fatalf("no platform %s in the shared tests", name)
	return platform{}
}

// runSectionRuleCases is runRuleCases for a platform whose section needs
// more than issuer: head returns the section's fields above allow:.
func runSectionRuleCases(t *testing.T, p platform, head func(issuer string) string, alg jose.SignatureAlgorithm, cases []ruleCase) {
	t.Helper()
	iss := startIssuer(t, alg)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := mustCompile(t, p.name, head(iss.URL)+"allow:\n"+tc.allow, newEnv(iss.Client))
			claims := tokenClaims(t, p.name, iss.URL, p.audience)
			if tc.edit != nil {
				tc.edit(claims)
			}
			adm, err := v.Verify(t.Context(), iss.Sign(t, claims))
			if tc.wantCode != "" {
				wantRefusal(t, err, tc.wantCode, tc.wantInReason...)
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			ok, why := policy.MatchRules(v.Rules(), adm.Claims)
			if ok != tc.wantMatch {
				t.Fatalf("MatchRules = %t (%s), want %t; claims %s", ok, why, tc.wantMatch, adm.Claims)
			}
			if ok && why != nil {
				t.Errorf("admitted with a reason: %s", why)
			}
			for _, f := range tc.wantInReason {
				if !strings.Contains(why.String(), f) {
					t.Errorf("reason does not mention %q: %s", f, why)
				}
			}
		})
	}
}

// compileCase is one join token section and the error it must get.
type compileCase struct {
	name, section string
	want          string // error fragment; empty: compiles
}

func runCompileCases(t *testing.T, method string, cases []compileCase) {
	t.Helper()
	iss := startIssuer(t, jose.ES256)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := compile(t, method, tc.section, newEnv(iss.Client))
			checkCompiled(t, v, err, tc.want)
		})
	}
}

func TestOIDCRules(t *testing.T) {
	p := platformByName(t, "oidc")
	runSectionRuleCases(t, p, oidcHead, jose.ES256, []ruleCase{
		{
			name:      "sub glob and a custom string claim",
			allow:     "  - sub: https://jenkins.acme.internal/job/app/*\n    branch_name: main\n",
			wantMatch: true,
		},
		{
			name:      "number claim against a YAML number",
			allow:     "  - build_number: 42\n",
			wantMatch: true,
		},
		{
			name:      "number beyond float64 precision compares as sent",
			allow:     "  - build_number: \"12345678901234567891\"\n",
			edit:      func(c map[string]any) { c["build_number"] = uint64(12345678901234567891) },
			wantMatch: true,
		},
		{
			name:      "boolean claim against a YAML boolean",
			allow:     "  - production: true\n",
			wantMatch: true,
		},
		{
			name:         "boolean claim mismatch",
			allow:        "  - production: true\n",
			edit:         func(c map[string]any) { c["production"] = false },
			wantInReason: []string{"production wants true, token has false"},
		},
		{
			name:      "list of strings: any element matches",
			allow:     "  - groups: sre\n",
			edit:      func(c map[string]any) { c["groups"] = []string{"release-managers", "sre"} },
			wantMatch: true,
		},
		{
			name:         "list of strings: no element matches",
			allow:        "  - groups: [admins, security]\n",
			edit:         func(c map[string]any) { c["groups"] = []string{"release-managers", "sre"} },
			wantInReason: []string{"groups wants admins or security, token has release-managers,sre"},
		},
		{
			name:         "mixed list is not a claim rules can test",
			allow:        "  - groups: sre\n",
			edit:         func(c map[string]any) { c["groups"] = []any{"sre", 7} },
			wantInReason: []string{"groups wants sre, token has (absent)"},
		},
		{
			name:         "object is not a claim rules can test",
			allow:        "  - node: linux-agent-7\n",
			edit:         func(c map[string]any) { c["node"] = map[string]any{"name": "linux-agent-7"} },
			wantInReason: []string{"node wants linux-agent-7, token has (absent)"},
		},
		{
			name:         "claim name with dots and slashes, as some issuers send",
			allow:        "  - oidc.example.com/project: app\n",
			edit:         func(c map[string]any) { c["oidc.example.com/project"] = "api" },
			wantInReason: []string{"oidc.example.com/project wants app, token has api"},
		},
		{
			name:         "claim the token does not carry",
			allow:        "  - sub: https://jenkins.acme.internal/job/app/*\n    environment: production\n",
			wantInReason: []string{"environment wants production, token has (absent)"},
		},
		{
			name:         "another job",
			allow:        "  - sub: https://jenkins.acme.internal/job/app/*\n    branch_name: main\n",
			edit:         func(c map[string]any) { c["sub"] = "https://jenkins.acme.internal/job/infra/job/main/" },
			wantInReason: []string{"sub wants https://jenkins.acme.internal/job/app/*, token has https://jenkins.acme.internal/job/infra/job/main/"},
		},
		{
			name:         "no sub claim",
			allow:        "  - branch_name: main\n",
			edit:         func(c map[string]any) { delete(c, "sub") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"sub"`},
		},
		{
			name:         "empty sub claim",
			allow:        "  - branch_name: main\n",
			edit:         func(c map[string]any) { c["sub"] = "" },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"sub"`},
		},
	})
}

// TestOIDCAudience checks that audience: replaces the authority's audience.
func TestOIDCAudience(t *testing.T) {
	iss := startIssuer(t, jose.RS256)
	section := oidcHead(iss.URL) + "audience: " + jenkinsIssuerAudience + "\nallow:\n  - branch_name: main\n"
	for _, tc := range []struct {
		name, aud string
		wantCode  identity.ErrorCode
	}{
		{"the join token's audience", jenkinsIssuerAudience, ""},
		{"the authority's audience", "acme", identity.CodeWrongAudience},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := mustCompile(t, "oidc", section, newEnv(iss.Client))
			_, err := v.Verify(t.Context(), iss.Sign(t, tokenClaims(t, "oidc", iss.URL, tc.aud)))
			if tc.wantCode == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantRefusal(t, err, tc.wantCode, `expects audience "`+jenkinsIssuerAudience+`"`)
		})
	}
}

func TestOIDCCompile(t *testing.T) {
	runCompileCases(t, "oidc", []compileCase{
		{"any claim names", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - sub: x\n    anything_at_all: y\n  - build_number: 42\n", ""},
		{"static_jwks instead of discovery", "issuer: https://jenkins.acme.internal/oidc\nstatic_jwks: '{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\",\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}]}'\nallow:\n  - sub: x\n", ""},
		{"no issuer", "allow:\n  - sub: x\n", "line 8: spec.oidc: issuer is required"},
		{"issuer not a URL", "issuer: jenkins.acme.internal\nallow:\n  - sub: x\n", `issuer "jenkins.acme.internal" is not an https:// URL`},
		{"unknown section field", "issuer: https://jenkins.acme.internal/oidc\nhostname: jenkins\nallow:\n  - sub: x\n",
			"line 9: spec.oidc.hostname is not a known field"},
		{"no allow rules", "issuer: https://jenkins.acme.internal/oidc\n", "at least one allow rule (fields: any claim of the token)"},
		{"rule on aud", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - sub: x\n  - aud: acme\n",
			"line 11: allow[1].aud: rules cannot test iss, aud, exp, iat, nbf, jti"},
		{"rule on jti", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - jti: x\n", "allow[0].jti: rules cannot test"},
		{"empty value", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - sub: \"\"\n", "line 10: allow[0].sub: empty value"},
		{"object value", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  - node: {name: x}\n", "allow[0].node: must be a string, boolean or list of strings"},
		{"allow is not a list", "issuer: https://jenkins.acme.internal/oidc\nallow:\n  sub: x\n", "line 10: allow must be a list of rules"},
	})
}
