package verify_test

import (
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

func init() {
	platforms = append(platforms, platform{
		name:     "kubernetes",
		audience: "acme",
		section: func(issuer string) string {
			return kubernetesHead(issuer) + "allow:\n  - service_account: ci:deployer\n"
		},
		claims: policy.Claims{
			"sub":             {"system:serviceaccount:ci:deployer"},
			"service_account": {"ci:deployer"},
			"namespace":       {"ci"},
			"pod_name":        {"mbot-job-7x2kq"},
			"pod_uid":         {"778a530c-b3f4-47c0-9cd5-ab018fb64f33"},
			"node_name":       {"ci-pool-7f9c4d6b5-x2kq8"},
		},
	})
}

func kubernetesHead(issuer string) string { return "type: oidc\nissuer: " + issuer + "\n" }

// lifetime makes the token live d from iat.
func lifetime(d time.Duration) func(c map[string]any) {
	return func(c map[string]any) {
		c["iat"], c["nbf"] = now.Add(-time.Minute).Unix(), now.Add(-time.Minute).Unix()
		c["exp"] = now.Add(-time.Minute + d).Unix()
	}
}

func TestKubernetesRules(t *testing.T) {
	runSectionRuleCases(t, platformByName(t, "kubernetes"), kubernetesHead, jose.RS256, []ruleCase{
		{
			name:      "the service account",
			allow:     "  - service_account: ci:deployer\n",
			wantMatch: true,
		},
		{
			name:      "every service account of the namespace",
			allow:     "  - service_account: ci:*\n",
			wantMatch: true,
		},
		{
			name:  "another service account",
			allow: "  - service_account: ci:deployer\n",
			edit: func(c map[string]any) {
				c["sub"] = "system:serviceaccount:ci:default"
				c["kubernetes.io"].(map[string]any)["serviceaccount"] = map[string]any{"name": "default", "uid": "0d4c6e8a-0000-4000-8000-000000000009"}
			},
			wantInReason: []string{"service_account wants ci:deployer, token has ci:default"},
		},
		{
			name:         "not bound to a pod",
			allow:        "  - service_account: ci:deployer\n",
			edit:         func(c map[string]any) { delete(c["kubernetes.io"].(map[string]any), "pod") },
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{"not bound to a pod", "projected service account token"},
		},
		{
			// A Secret-based token: never expires, no kubernetes.io claim.
			name:  "legacy service account token",
			allow: "  - service_account: ci:deployer\n",
			edit: func(c map[string]any) {
				delete(c, "kubernetes.io")
				delete(c, "exp")
				delete(c, "nbf")
				delete(c, "iat")
				c["kubernetes.io/serviceaccount/namespace"] = "ci"
				c["kubernetes.io/serviceaccount/service-account.name"] = "deployer"
			},
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{"no exp claim"},
		},
		{
			// What the API server injects into every pod: bound, but valid
			// for a year when --service-account-extend-token-expiration is on.
			name:         "admission-injected token that lives a year",
			allow:        "  - service_account: ci:deployer\n",
			edit:         lifetime(365 * 24 * time.Hour),
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{"8760h0m0s", "expirationSeconds"},
		},
		{
			name:      "an hour: the default expirationSeconds",
			allow:     "  - service_account: ci:deployer\n",
			edit:      lifetime(time.Hour),
			wantMatch: true,
		},
		{
			name:      "an hour and the leeway",
			allow:     "  - service_account: ci:deployer\n",
			edit:      lifetime(time.Hour + verify.Leeway),
			wantMatch: true,
		},
		{
			name:         "just beyond an hour and the leeway",
			allow:        "  - service_account: ci:deployer\n",
			edit:         lifetime(time.Hour + verify.Leeway + time.Second),
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{"expirationSeconds"},
		},
		{
			name:         "no iat",
			allow:        "  - service_account: ci:deployer\n",
			edit:         func(c map[string]any) { delete(c, "iat") },
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{"no iat claim"},
		},
		{
			name:         "a node's token, not a service account's",
			allow:        "  - service_account: ci:deployer\n",
			edit:         func(c map[string]any) { c["sub"] = "system:node:ci-pool-7f9c4d6b5-x2kq8" },
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{`"system:node:ci-pool-7f9c4d6b5-x2kq8" is not a service account`},
		},
		{
			name:         "subject and kubernetes.io disagree",
			allow:        "  - service_account: ci:deployer\n",
			edit:         func(c map[string]any) { c["sub"] = "system:serviceaccount:kube-system:deployer" },
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{"disagrees"},
		},
		{
			name:         "no sub claim",
			allow:        "  - service_account: ci:deployer\n",
			edit:         func(c map[string]any) { delete(c, "sub") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"sub"`},
		},
		{
			// The token every pod gets is minted for the API server.
			name:         "token for the API server",
			allow:        "  - service_account: ci:deployer\n",
			edit:         func(c map[string]any) { c["aud"] = []string{"https://kubernetes.default.svc.cluster.local", "k3s"} },
			wantCode:     identity.CodeWrongAudience,
			wantInReason: []string{`expects audience "acme"`, "https://kubernetes.default.svc.cluster.local,k3s"},
		},
	})
}

// TestKubernetesStaticJWKS verifies offline with the keys `kubectl get
// --raw /openid/v1/jwks` prints, trusting the usual issuer by default.
func TestKubernetesStaticJWKS(t *testing.T) {
	iss := startIssuer(t, jose.RS256)
	offline := &http.Client{Transport: noNetwork{t}}
	for _, tc := range []struct {
		name, head, tokenIssuer string
		forged                  bool
		wantCode                identity.ErrorCode
		wantInMsg               []string
	}{
		{name: "the default issuer", head: "type: static_jwks\n", tokenIssuer: verify.KubernetesDefaultIssuer},
		{name: "type inferred", head: "", tokenIssuer: verify.KubernetesDefaultIssuer},
		{name: "the cluster's issuer", head: "issuer: https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE\n",
			tokenIssuer: "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"},
		{name: "another issuer", head: "type: static_jwks\n", tokenIssuer: "https://container.googleapis.com/v1/projects/acme/locations/us-central1/clusters/ci",
			wantCode: identity.CodeWrongIssuer, wantInMsg: []string{verify.KubernetesDefaultIssuer, "spec.kubernetes.issuer"}},
		{name: "forged", head: "type: static_jwks\n", tokenIssuer: verify.KubernetesDefaultIssuer, forged: true,
			wantCode: identity.CodeProofInvalid, wantInMsg: []string{"signature"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := mustCompile(t, "kubernetes", tc.head+"static_jwks: '"+iss.JWKS()+"'\nallow:\n  - service_account: ci:deployer\n", newEnv(offline))
			claims := tokenClaims(t, "kubernetes", tc.tokenIssuer, "acme")
			tok := iss.Sign(t, claims)
			if tc.forged {
				tok = signJWT(t, jose.RS256, testKey(t, jose.RS256, "attacker"), iss.kid, claims)
			}
			adm, err := v.Verify(t.Context(), tok)
			if tc.wantCode != "" {
				wantRefusal(t, err, tc.wantCode, tc.wantInMsg...)
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if got := adm.Claims["service_account"]; !reflect.DeepEqual(got, []string{"ci:deployer"}) {
				t.Errorf("service_account %v", got)
			}
		})
	}
}

func TestKubernetesCompile(t *testing.T) {
	jwks := `'{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}'`
	rule := "allow:\n  - service_account: ci:deployer\n"
	runCompileCases(t, "kubernetes", []compileCase{
		{"static_jwks", "type: static_jwks\nstatic_jwks: " + jwks + "\n" + rule, ""},
		{"oidc", "type: oidc\nissuer: https://container.googleapis.com/v1/projects/acme/locations/us-central1/clusters/ci\n" + rule, ""},
		{"no type and nothing to infer it from", rule, "line 8: spec.kubernetes: type is required: static_jwks"},
		{"static_jwks without keys", "type: static_jwks\n" + rule, "type static_jwks needs static_jwks"},
		{"oidc without issuer", "type: oidc\n" + rule, "type oidc needs issuer"},
		{"oidc with static_jwks", "type: oidc\nissuer: https://k8s.acme.internal\nstatic_jwks: " + jwks + "\n" + rule, "remove static_jwks"},
		{"oidc issuer not a URL", "type: oidc\nissuer: kubernetes/serviceaccount\n" + rule, `issuer "kubernetes/serviceaccount" is not an https:// URL`},
		{"in_cluster", "type: in_cluster\napi_server: https://10.96.0.1\n" + rule, ""},
		{"unknown type", "type: token_review\n" + rule, `type "token_review" is not one of static_jwks, oidc, in_cluster`},
		{"Teleport's nested static_jwks", "type: static_jwks\nstatic_jwks:\n  jwks: " + jwks + "\n" + rule, "line 10"},
		{"namespace is not a rule field", "type: static_jwks\nstatic_jwks: " + jwks + "\nallow:\n  - namespace: ci\n",
			`unknown field "namespace"; fields for this method are: service_account`},
	})
}
