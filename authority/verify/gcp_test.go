package verify_test

import (
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

func init() {
	platforms = append(platforms, platform{
		name:     "gcp",
		audience: "acme",
		section: func(issuer string) string {
			return gcpHead(issuer) + "allow:\n  - project_ids: acme-ci\n    locations: us-central1\n"
		},
		claims: policy.Claims{
			"sub":              {"112233445566778899001"},
			"service_accounts": {"mbot-ci@acme-ci.iam.gserviceaccount.com"},
			"project_ids":      {"acme-ci"},
			"locations":        {"us-central1-a", "us-central1"},
			"project_number":   {"739419398126"},
			"instance_id":      {"4356789012345678901"},
			"instance_name":    {"ci-runner-7"},
		},
	})
}

func gcpHead(issuer string) string { return "issuer: " + issuer + "\n" }

// gkeToken makes the instance token a GKE Workload Identity token, which
// has no google claim, for service account email.
func gkeToken(email string) func(c map[string]any) {
	return func(c map[string]any) {
		delete(c, "google")
		c["email"] = email
	}
}

func TestGCPRules(t *testing.T) {
	runSectionRuleCases(t, platformByName(t, "gcp"), gcpHead, jose.RS256, []ruleCase{
		{
			name:      "project and region",
			allow:     "  - project_ids: acme-ci\n    locations: us-central1\n",
			wantMatch: true,
		},
		{
			name:      "a region matches every zone in it",
			allow:     "  - project_ids: acme-ci\n    locations: [europe-west4, us-central1]\n",
			wantMatch: true,
		},
		{
			name:      "the zone itself",
			allow:     "  - project_ids: acme-ci\n    locations: us-central1-a\n",
			wantMatch: true,
		},
		{
			name:         "another zone of the same region",
			allow:        "  - project_ids: acme-ci\n    locations: us-central1-b\n",
			wantInReason: []string{"locations wants us-central1-b, token has us-central1-a,us-central1"},
		},
		{
			name:         "a prefix of the region is not the region",
			allow:        "  - project_ids: acme-ci\n    locations: us-central\n",
			wantInReason: []string{"locations wants us-central, token has us-central1-a,us-central1"},
		},
		{
			name:         "another region",
			allow:        "  - project_ids: acme-ci\n    locations: us-east1\n",
			edit:         func(c map[string]any) { setGCE(c, "zone", "us-east4-c") },
			wantInReason: []string{"locations wants us-east1, token has us-east4-c,us-east4"},
		},
		{
			name:      "regions by glob",
			allow:     "  - project_ids: acme-ci\n    locations: europe-*\n",
			edit:      func(c map[string]any) { setGCE(c, "zone", "europe-west4-b") },
			wantMatch: true,
		},
		{
			name:         "another project",
			allow:        "  - project_ids: [acme-ci, acme-prod]\n",
			edit:         func(c map[string]any) { setGCE(c, "project_id", "evil-corp") },
			wantInReason: []string{"project_ids wants acme-ci or acme-prod, token has evil-corp"},
		},
		{
			name:      "service account alone",
			allow:     "  - service_accounts: mbot-ci@acme-ci.iam.gserviceaccount.com\n",
			wantMatch: true,
		},
		{
			name:         "another service account of the project",
			allow:        "  - project_ids: acme-ci\n    service_accounts: mbot-ci@acme-ci.iam.gserviceaccount.com\n",
			edit:         func(c map[string]any) { c["email"] = "builder@acme-ci.iam.gserviceaccount.com" },
			wantInReason: []string{"service_accounts wants mbot-ci@acme-ci.iam.gserviceaccount.com, token has builder@acme-ci.iam.gserviceaccount.com"},
		},
		{
			name:      "GKE Workload Identity: the service account matches",
			allow:     "  - service_accounts: mbot-ci@acme-ci.iam.gserviceaccount.com\n",
			edit:      gkeToken("mbot-ci@acme-ci.iam.gserviceaccount.com"),
			wantMatch: true,
		},
		{
			name:      "GKE Workload Identity: the project is the service account's",
			allow:     "  - project_ids: acme-ci\n",
			edit:      gkeToken("mbot-ci@acme-ci.iam.gserviceaccount.com"),
			wantMatch: true,
		},
		{
			name:         "GKE Workload Identity has no location",
			allow:        "  - project_ids: acme-ci\n    locations: us-central1\n",
			edit:         gkeToken("mbot-ci@acme-ci.iam.gserviceaccount.com"),
			wantInReason: []string{"locations wants us-central1, token has (absent)"},
		},
		{
			name:         "GKE Workload Identity with the default compute service account",
			allow:        "  - project_ids: acme-ci\n",
			edit:         gkeToken("739419398126-compute@developer.gserviceaccount.com"),
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{"default compute service account", "google.compute_engine"},
		},
		{
			name:         "no google claim and not a service account",
			allow:        "  - project_ids: acme-ci\n",
			edit:         gkeToken("alice@acme.example"),
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{"alice@acme.example", "format=full"},
		},
		{
			name:         "email not verified",
			allow:        "  - project_ids: acme-ci\n",
			edit:         func(c map[string]any) { c["email_verified"] = false },
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{"email_verified"},
		},
		{
			name:         "no email_verified claim",
			allow:        "  - project_ids: acme-ci\n",
			edit:         func(c map[string]any) { delete(c, "email_verified") },
			wantCode:     identity.CodeProofInvalid,
			wantInReason: []string{"email_verified"},
		},
		{
			name:         "no email claim",
			allow:        "  - project_ids: acme-ci\n",
			edit:         func(c map[string]any) { delete(c, "email") },
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"email"`, "GCP"},
		},
		{
			name:  "compute_engine without a zone",
			allow: "  - project_ids: acme-ci\n",
			edit: func(c map[string]any) {
				delete(c["google"].(map[string]any)["compute_engine"].(map[string]any), "zone")
			},
			wantCode:     identity.CodeClaimMissing,
			wantInReason: []string{`"google.compute_engine.zone"`},
		},
		{
			// The metadata server mints for any audience it is asked for.
			name:         "token for another audience",
			allow:        "  - project_ids: acme-ci\n",
			edit:         func(c map[string]any) { c["aud"] = "https://vault.acme.internal" },
			wantCode:     identity.CodeWrongAudience,
			wantInReason: []string{`expects audience "acme"`, "https://vault.acme.internal"},
		},
	})
}

// setGCE changes one google.compute_engine claim.
func setGCE(c map[string]any, name string, value any) {
	c["google"].(map[string]any)["compute_engine"].(map[string]any)[name] = value
}

// TestGCPDefaultIssuer checks that a join token without issuer: trusts
// Google's, and says so to a token from elsewhere.
func TestGCPDefaultIssuer(t *testing.T) {
	v := mustCompile(t, "gcp", "allow:\n  - project_ids: acme-ci\n", newEnv(nil))
	iss := startIssuer(t, jose.RS256)
	_, err := v.Verify(t.Context(), iss.Sign(t, tokenClaims(t, "gcp", iss.URL, "acme")))
	wantRefusal(t, err, identity.CodeWrongIssuer, verify.GCPIssuer, "spec.gcp.issuer")
}

func TestGCPCompile(t *testing.T) {
	runCompileCases(t, "gcp", []compileCase{
		{"project", "allow:\n  - project_ids: acme-ci\n", ""},
		{"service account", "allow:\n  - service_accounts: mbot-ci@acme-ci.iam.gserviceaccount.com\n", ""},
		{"issuer override", "issuer: http://127.0.0.1:9\nallow:\n  - project_ids: acme-ci\n    locations: [us-central1, europe-west4-b]\n", ""},
		{"location alone admits every project", "allow:\n  - project_ids: acme-ci\n  - locations: us-central1\n",
			"line 10: allow[1] does not pin the owner: Google signs instance tokens for every Google Cloud project"},
		{"claim name instead of rule field", "allow:\n  - project_id: acme-ci\n",
			`unknown field "project_id"; fields for this method are: project_ids, locations, service_accounts`},
		{"audience is the authority's", "audience: acme\nallow:\n  - project_ids: acme-ci\n", "spec.gcp.audience is not a known field"},
	})
}

// TestGCPCloudBuild admits a build of Google Cloud Build: its legacy
// service account's token names the project by number only, so rules name
// the account, and the claims say the token is Cloud Build's.
func TestGCPCloudBuild(t *testing.T) {
	const account = "739419398126@cloudbuild.gserviceaccount.com"
	runSectionRuleCases(t, platformByName(t, "gcp"), gcpHead, jose.RS256, []ruleCase{
		{name: "the build's service account", allow: "  - service_accounts: " + account + "\n", edit: gkeToken(account), wantMatch: true},
		{
			name:         "no project id in the token",
			allow:        "  - project_ids: acme-ci\n",
			edit:         gkeToken(account),
			wantInReason: []string{"project_ids wants acme-ci, token has (absent)"},
		},
		{
			name:         "another project's Cloud Build",
			allow:        "  - service_accounts: " + account + "\n",
			edit:         gkeToken("111111111111@cloudbuild.gserviceaccount.com"),
			wantInReason: []string{"service_accounts wants " + account},
		},
	})
	iss := startIssuer(t, jose.RS256)
	v := mustCompile(t, "gcp", gcpHead(iss.URL)+"allow:\n  - service_accounts: "+account+"\n", newEnv(iss.Client))
	claims := tokenClaims(t, "gcp", iss.URL, "acme")
	gkeToken(account)(claims)
	adm, err := v.Verify(t.Context(), iss.Sign(t, claims))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"ci_platform": "cloud_build", "project_number": "739419398126"} {
		if got := adm.Claims[name]; len(got) != 1 || got[0] != want {
			t.Errorf("claim %s = %v, want %s", name, got, want)
		}
	}
}
