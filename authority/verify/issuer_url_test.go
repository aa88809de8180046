package verify_test

import (
	"fmt"
	"strings"
	"testing"
)

// TestIssuerURLMustBeHTTPS: every URL the authority would fetch keys from
// is https://, or http:// to a loopback address; the refusal names the line
// and the field.
func TestIssuerURLMustBeHTTPS(t *testing.T) {
	methods := []struct {
		method, extra, key, allow string
	}{
		{"github", "", "issuer", "repository: acme/app"},
		{"gitlab", "", "issuer", "project_path: acme/app"},
		{"circleci", "organization_id: 0c4b9c2a-7f3e-4a8e-9d0b-2f1e5c6a7b8d\n", "issuer", "project_id: 1c4b9c2a-7f3e-4a8e-9d0b-2f1e5c6a7b8d"},
		{"spacelift", "hostname: acme.app.spacelift.io\n", "issuer", "space_id: root"},
		{"terraform_cloud", "", "issuer", "organization_name: acme"},
		{"bitbucket", "audience: ari:cloud:bitbucket::workspace/x\n", "identity_provider_url", "workspace_uuid: \"{x}\""},
		{"buildkite", "", "issuer", "organization_slug: acme"},
		{"gcp", "", "issuer", "project_ids: acme-prod"},
		{"azure", "tenant_id: 72f988bf-86f1-41af-91ab-2d7cd011db47\n", "issuer", "subscription: 0c4b9c2a-7f3e-4a8e-9d0b-2f1e5c6a7b8d"},
		{"oidc", "", "issuer", "sub: x"},
		{"kubernetes", "type: oidc\n", "issuer", "service_account: ci:deployer"},
	}
	urls := []struct {
		url  string
		want string // error fragment; empty: compiles
	}{
		{"http://ci.example.com", `plain http is allowed only for a loopback address`},
		{"http://10.0.0.1:8080", `plain http is allowed only for a loopback address`},
		{"http://127.0.0.1.example.com", `plain http is allowed only for a loopback address`},
		{"ftp://ci.example.com", `the scheme must be https`},
		{"https://user:pw@ci.example.com", `is not an https:// URL`},
		{"https://ci.example.com/oidc", ""},
		{"http://127.0.0.1:8080", ""},
		{"http://127.9.9.9:8080", ""},
		{"http://[::1]:8080", ""},
		{"http://localhost:8080", ""},
	}
	for _, m := range methods {
		for _, u := range urls {
			t.Run(m.method+" "+u.url, func(t *testing.T) {
				section := m.extra + m.key + ": " + u.url + "\nallow:\n  - " + m.allow + "\n"
				line := 8 + strings.Count(m.extra, "\n")
				v, err := compile(t, m.method, section, newEnv(nil))
				if u.want != "" {
					checkCompiled(t, v, err, fmt.Sprintf("line %d: spec.%s.%s: the issuer %q", line, m.method, m.key, u.url))
				}
				checkCompiled(t, v, err, u.want)
			})
		}
	}
}
