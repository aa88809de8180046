package verify

import (
	"errors"
	"net/url"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/mbot-dev/mbot/authority/policy"
)

// jenkinsClaims are the claims of an ID token of the Jenkins OpenID Connect
// Provider plugin with its default claim templates: sub is ${JOB_URL} and
// build_number ${BUILD_NUMBER}.
type jenkinsClaims struct {
	Sub         string       `json:"sub"`
	BuildNumber numberOrText `json:"build_number"`
}

func init() {
	register(&oidcPlatform{
		name:          "jenkins",
		label:         "Jenkins",
		sectionFields: []string{"audience"},
		ruleFields:    []string{"sub", "job", "folder", "build_number"},
		// The issuer is the admin's own Jenkins, yet it signs for every job
		// on it: a rule must name the job (sub, job) or its folder exactly.
		// build_number alone, exact or not, names a build of every job.
		scope: &policy.OwnerScope{Issuer: "the Jenkins instance signs for every job on it, and build_number counts the builds of each job", Fields: []policy.OwnerField{
			{Name: "sub", Shape: "the job URL, exactly", Example: "https://<jenkins>/job/<folder>/job/<job>/"},
			{Name: "job", Shape: "the job's full name, exactly: infra/deploy"},
			{Name: "folder", Shape: "the folder, exactly: infra"},
		}},
		issuer: func(s *oidcSection) (string, error) {
			if s.Issuer == "" {
				return "", errors.New("issuer is required: the issuer the Jenkins OpenID Connect Provider plugin is configured with " +
					"(by default <JENKINS_URL>oidc, shown under Manage Jenkins > Credentials as the id token credential's issuer)")
			}
			return s.Issuer, nil
		},
		audience: func(s *oidcSection, env *Env) string {
			if s.Audience != "" {
				return s.Audience
			}
			return env.Audience
		},
		claims: jenkinsIdentity,
	})
}

// jenkinsIdentity reads sub and build_number; when sub is a job URL, as the
// plugin's default template makes it (https://ci/job/infra/job/deploy/),
// job is the job's full name (infra/deploy) and folder the folders above
// it (infra), which the plugin's folder-scoped issuers are keyed on too.
func jenkinsIdentity(tok *oidc.IDToken) (policy.Claims, error) {
	var c jenkinsClaims
	if err := tok.Claims(&c); err != nil {
		return nil, err
	}
	fields := map[string]string{"sub": c.Sub, "build_number": string(c.BuildNumber)}
	if names := jenkinsJobNames(c.Sub); len(names) > 0 {
		fields["job"] = strings.Join(names, "/")
		fields["folder"] = strings.Join(names[:len(names)-1], "/")
	}
	return requireClaims(fields, "sub")
}

// jenkinsJobNames returns the names of a job URL's /job/<name> segments,
// nil when u is not a job URL.
func jenkinsJobNames(u string) []string {
	parsed, err := url.Parse(u)
	if err != nil || parsed.Host == "" {
		return nil
	}
	segs := strings.Split(strings.Trim(parsed.EscapedPath(), "/"), "/")
	var names []string
	for i := 0; i < len(segs); i++ {
		if segs[i] != "job" {
			continue
		}
		if i+1 >= len(segs) {
			return nil
		}
		name, err := url.PathUnescape(segs[i+1])
		if err != nil || name == "" {
			return nil
		}
		names = append(names, name)
		i++
	}
	return names
}
