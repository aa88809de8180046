package verify

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/internal/lazyregexp"
)

// GCPIssuer issues the ID tokens of GCE instances and GKE workloads.
const GCPIssuer = "https://accounts.google.com"

// gcpClaims are the claims of a GCE instance identity token in the full
// format, as documented in "Verifying the identity of instances".
type gcpClaims struct {
	Sub           string `json:"sub"`
	Email         string `json:"email"`
	EmailVerified *bool  `json:"email_verified"`
	Google        struct {
		ComputeEngine *struct {
			ProjectID     string      `json:"project_id"`
			ProjectNumber json.Number `json:"project_number"`
			Zone          string      `json:"zone"`
			InstanceID    string      `json:"instance_id"`
			InstanceName  string      `json:"instance_name"`
		} `json:"compute_engine"`
	} `json:"google"`
}

var (
	// gcpUserManagedAccount is a service account a project created:
	// NAME@PROJECT_ID.iam.gserviceaccount.com.
	gcpUserManagedAccount = lazyregexp.New(`^[^@]+@([a-z][-a-z0-9]*)\.iam\.gserviceaccount\.com$`)
	// gcpDefaultComputeAccount is PROJECT_NUMBER-compute@developer.gserviceaccount.com,
	// which every project's instances share.
	gcpDefaultComputeAccount = lazyregexp.New(`^[^@]+@developer\.gserviceaccount\.com$`)
	// gcpCloudBuildAccount is PROJECT_NUMBER@cloudbuild.gserviceaccount.com,
	// the legacy service account Cloud Build runs builds as.
	gcpCloudBuildAccount = lazyregexp.New(`^([0-9]+)@cloudbuild\.gserviceaccount\.com$`)
	// gcpZone is REGION-LETTER, such as us-central1-a or europe-west4-b.
	gcpZone = lazyregexp.New(`^([a-z]+-[a-z]+[0-9]+)-[a-z]$`)
)

func init() {
	register(&oidcPlatform{
		name:       "gcp",
		label:      "GCP",
		ruleFields: []string{"project_ids", "locations", "service_accounts"},
		// accounts.google.com signs tokens for any audience a caller asks for:
		// a rule without a project or service account admits every Google
		// Cloud customer's instances.
		scope: &policy.OwnerScope{
			Issuer: "Google signs instance tokens for every Google Cloud project",
			Fields: []policy.OwnerField{
				{Name: "project_ids", Shape: "acme-prod, no globs", Example: "<your project id>"},
				{Name: "service_accounts", Shape: "deploy@acme-prod.iam.gserviceaccount.com, no globs"},
			},
		},
		issuer: func(s *oidcSection) (string, error) {
			if s.Issuer != "" {
				return s.Issuer, nil
			}
			return GCPIssuer, nil
		},
		audience: func(_ *oidcSection, env *Env) string { return env.Audience },
		claims:   gcpIdentity,
	})
}

// gcpIdentity turns an instance's token into rule fields. locations holds
// both the zone and its region, so that a rule may name either.
//
// A GKE Workload Identity token has no google.compute_engine claim. As in
// Teleport, its project is the one in a user-managed service account's
// email; it has no location, so rules with locations do not admit it, and
// the default compute service account is refused, since every instance
// and node of a project shares it.
func gcpIdentity(tok *oidc.IDToken) (policy.Claims, error) {
	var c gcpClaims
	if err := tok.Claims(&c); err != nil {
		return nil, err
	}
	if err := requireJWTClaims("sub", c.Sub, "email", c.Email); err != nil {
		return nil, err
	}
	if c.EmailVerified == nil || !*c.EmailVerified {
		return nil, fmt.Errorf("the token's email %q is not verified (email_verified is not true); Google sets it on every service account's token", c.Email)
	}
	out := policy.Claims{"sub": {c.Sub}, "service_accounts": {c.Email}}
	if ce := c.Google.ComputeEngine; ce != nil {
		if err := requireJWTClaims("google.compute_engine.project_id", ce.ProjectID, "google.compute_engine.zone", ce.Zone); err != nil {
			return nil, err
		}
		out["project_ids"] = []string{ce.ProjectID}
		out["locations"] = []string{ce.Zone}
		if m := gcpZone.FindStringSubmatch(ce.Zone); m != nil {
			out["locations"] = append(out["locations"], m[1])
		}
		for name, value := range map[string]string{"instance_id": ce.InstanceID, "instance_name": ce.InstanceName, "project_number": integer(ce.ProjectNumber)} {
			if value != "" {
				out[name] = []string{value}
			}
		}
		return out, nil
	}
	if gcpDefaultComputeAccount.MatchString(c.Email) {
		return nil, fmt.Errorf("the token is for the default compute service account %s and has no google.compute_engine claim: "+
			"request it on a GCE instance with format=full, or give the GKE workload a service account of its own", c.Email)
	}
	if m := gcpCloudBuildAccount.FindStringSubmatch(c.Email); m != nil {
		// Only Cloud Build's builds get this account's tokens. Its email
		// names the project by number, not id: rules name the account.
		out["project_number"] = []string{m[1]}
		out["ci_platform"] = []string{"cloud_build"}
		return out, nil
	}
	m := gcpUserManagedAccount.FindStringSubmatch(c.Email)
	if m == nil {
		return nil, fmt.Errorf("the token has no google.compute_engine claim and its email %q is not a service account "+
			"(NAME@PROJECT.iam.gserviceaccount.com); request it from the metadata server with format=full", c.Email)
	}
	out["project_ids"] = []string{m[1]}
	return out, nil
}

// integer spells a JSON number that holds an integer without exponent,
// however the issuer's encoder wrote it (7.39419398126e+11).
func integer(n json.Number) string {
	if _, err := n.Int64(); err == nil {
		return n.String()
	}
	if f, err := n.Float64(); err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.FormatInt(int64(f), 10)
	}
	return n.String()
}
