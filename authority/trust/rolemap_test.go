package trust

import (
	"slices"
	"testing"

	"github.com/mbot-dev/mbot/authority/resources"
)

func TestRoleMap(t *testing.T) {
	m, err := CompileRoleMap([]resources.RoleMapping{
		{Remote: "deploy", Local: []string{"leaf-deploy"}},
		{Remote: "^ci-(.*)$", Local: []string{"ci-$1", "ci-all"}},
		{Remote: "ops-*", Local: []string{"leaf-ops-$1"}},
		{Remote: "^team-([a-z]+)-(dev|prod)$", Local: []string{"${2}-${1}"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		remote          []string
		local, unmapped []string
	}{
		{remote: []string{"deploy"}, local: []string{"leaf-deploy"}},
		// A plain name matches only itself, not a longer or shorter one.
		{remote: []string{"deployer", "deplo"}, unmapped: []string{"deployer", "deplo"}},
		{remote: []string{"ci-build"}, local: []string{"ci-build", "ci-all"}},
		{remote: []string{"ci-build", "ci-test"}, local: []string{"ci-build", "ci-all", "ci-test"}},
		// The regexp is anchored as written: xci-build does not match ^ci-.
		{remote: []string{"xci-build"}, unmapped: []string{"xci-build"}},
		{remote: []string{"ops-db"}, local: []string{"leaf-ops-db"}},
		{remote: []string{"team-web-prod"}, local: []string{"prod-web"}},
		// A capture that expands to something other than a role name is
		// dropped; the entry's literal roles still map.
		{remote: []string{"ci-a b"}, local: []string{"ci-all"}},
		{remote: []string{"team-a b-dev"}, unmapped: []string{"team-a b-dev"}},
		{remote: []string{"deploy", "other"}, local: []string{"leaf-deploy"}, unmapped: []string{"other"}},
		{remote: nil},
	} {
		local, unmapped := m.Map(tt.remote)
		if !slices.Equal(local, tt.local) || !slices.Equal(unmapped, tt.unmapped) {
			t.Errorf("Map(%q) = %q, unmapped %q; want %q, unmapped %q", tt.remote, local, unmapped, tt.local, tt.unmapped)
		}
	}
}

func TestRoleMapRefusedAtLoad(t *testing.T) {
	const tmpl = "kind: trusted_cluster\nversion: v1\nmetadata: {name: acme-root}\nspec:\n  enabled: true\n  root: {url: https://root.example:8443, ca_pin: sha256:%s}\n  role_map:\n    - %s\n"
	pin := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tt := range []struct{ pin, entry, want string }{
		{pin, "{remote: deploy, local: [leaf-deploy]}", ""},
		{pin, `{remote: "^ci-(.*$", local: [x]}`, "not a regular expression"},
		{pin, `{remote: "^ci-(.*)$", local: ["ci-$2"]}`, "names no capture"},
		{pin, `{remote: deploy, local: []}`, "list 1 to"},
		{pin, `{remote: deploy, local: ["bad name"]}`, "role"},
		{"xyz", "{remote: deploy, local: [leaf-deploy]}", "ca_pin"},
	} {
		_, err := resources.Parse("tc.yaml", []byte(sprintf(tmpl, tt.pin, tt.entry)))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.entry, err)
		case tt.want != "" && (err == nil || !contains(err.Error(), tt.want) || !contains(err.Error(), "tc.yaml:")):
			t.Errorf("%s: error %v, want one with the file and %q", tt.entry, err, tt.want)
		}
	}
}
