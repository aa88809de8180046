package resources_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
)

// docResources returns the resource documents of the YAML examples of the
// README and docs/, so that the fuzzer starts from what users are told to
// write.
func docResources(f *testing.F) []string {
	files := []string{"../../README.md"}
	err := filepath.WalkDir("../../docs", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		f.Fatal(err)
	}
	var out []string
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(data), -1) {
			if strings.Contains(m[1], "kind: ") {
				out = append(out, m[1])
			}
		}
	}
	if len(out) == 0 {
		f.Fatal("the README and docs/ have no resource examples")
	}
	return out
}

// FuzzParse checks the resource loader on any input: it never panics, and
// whatever it accepts holds only names and logins of the documented
// character sets, loads again from the body the store keeps, and expands
// to valid logins once its references check.
func FuzzParse(f *testing.F) {
	for _, doc := range docResources(f) {
		f.Add(doc)
	}
	f.Add(botsYAML)
	f.Add(billionLaughs("kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec:\n  roles: [deploy]\n  traits:\n"))
	f.Add("kind: role\nversion: v1\nmetadata: {name: deploy, labels: {team: payments}, description: Deploys}\nspec:\n  logins: [\"{{internal.logins}}\", \"svc-{{ external.team }}-ro\", \"{{internal.a}}{{internal.b}}\", root$]\n  max_ttl: 8h\n  device_trust_mode: required-for-humans\n")
	f.Add("kind: join_token\nversion: v1\nmetadata: {name: t}\nspec:\n  bot: deployer\n  method: token\n  token: {secret_hash: \"00\", expires: \"2030-01-01T00:00:00Z\"}\n---\n---\n")
	f.Add("x: &a [1]\nkind: role\nversion: v1\nmetadata: {name: r}\nspec: {logins: *a}\n")
	f.Fuzz(func(t *testing.T, data string) {
		res, err := resources.Parse("f.yaml", []byte(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Errorf("error does not name the file: %q", err)
			}
			return
		}
		for _, r := range res {
			checkAccepted(t, r)
			again, err := resources.Parse("stored", r.Body)
			if err != nil || len(again) != 1 || again[0].Kind != r.Kind || again[0].Name() != r.Name() {
				t.Fatalf("%s/%s does not load again from its stored body: %v\n%s", r.Kind, r.Name(), err, r.Body)
			}
		}
		set := resources.NewSet(res)
		if err := set.CheckReferences(); err != nil {
			return
		}
		for _, b := range set.Bots {
			for _, rn := range b.Spec.Roles {
				for _, tmpl := range set.Roles[rn].Spec.Logins {
					for _, l := range resources.ExpandTemplate(tmpl, b.Spec.Traits) {
						if err := identity.CheckLogin("login", l); err != nil {
							t.Errorf("bot %q role %q expands %q to an invalid login: %v", b.Metadata.Name, rn, tmpl, err)
						}
					}
				}
				for _, f := range resources.GrantFields {
					for _, tmpl := range f.Get(&set.Roles[rn].Spec) {
						for _, v := range resources.ExpandTemplate(tmpl, b.Spec.Traits) {
							if err := f.Check(f.Name, v); err != nil {
								t.Errorf("bot %q role %q expands %s %q to an invalid value: %v", b.Metadata.Name, rn, f.Name, tmpl, err)
							}
						}
					}
				}
			}
		}
	})
}

// checkAccepted checks the invariants of one accepted resource.
func checkAccepted(t *testing.T, r resources.Resource) {
	t.Helper()
	if err := identity.CheckName("name", r.Name()); err != nil {
		t.Errorf("accepted %s: %v", r.Kind, err)
	}
	switch {
	case r.Role != nil:
		for _, f := range resources.GrantFields {
			for _, v := range f.Get(&r.Role.Spec) {
				if !strings.Contains(v, "{{") {
					if err := f.Check(f.Name, v); err != nil {
						t.Errorf("role %q: accepted %v", r.Name(), err)
					}
				} else if strings.ContainsFunc(v, func(c rune) bool { return c < ' ' || c == 0x7f }) {
					t.Errorf("role %q: accepted %s template %q", r.Name(), f.Name, v)
				}
			}
		}
		for _, l := range r.Role.Spec.Logins {
			if !strings.Contains(l, "{{") {
				if err := identity.CheckLogin("login", l); err != nil {
					t.Errorf("role %q: accepted %v", r.Name(), err)
				}
			} else if strings.ContainsFunc(l, func(c rune) bool { return c < ' ' || c == 0x7f || c == ',' || c == '*' }) {
				t.Errorf("role %q: accepted template %q", r.Name(), l)
			}
		}
	case r.Bot != nil:
		for _, rn := range r.Bot.Spec.Roles {
			if err := identity.CheckName("role", rn); err != nil {
				t.Errorf("bot %q: accepted %v", r.Name(), err)
			}
		}
		for name, values := range r.Bot.Spec.Traits {
			if err := resources.CheckTraitName(name); err != nil {
				t.Errorf("bot %q: accepted %v", r.Name(), err)
			}
			for _, v := range values {
				if len(v) > 255 || strings.ContainsFunc(v, func(c rune) bool { return c < ' ' || c == 0x7f }) {
					t.Errorf("bot %q: accepted trait value %q", r.Name(), v)
				}
			}
		}
	case r.JoinToken != nil:
		if err := identity.CheckName("bot", r.JoinToken.Spec.Bot); err != nil {
			t.Errorf("join token %q: accepted %v", r.Name(), err)
		}
		if err := identity.CheckName("method", r.JoinToken.Spec.Method); err != nil {
			t.Errorf("join token %q: accepted %v", r.Name(), err)
		}
	case r.Database != nil:
		if err := resources.CheckHostPort("uri", r.Database.Spec.URI); err != nil {
			t.Errorf("database %q: accepted %v", r.Name(), err)
		}
		if (r.Database.Spec.CA == "") == !r.Database.Spec.CAIssuedByAuthority {
			t.Errorf("database %q: accepted ca %q with ca_issued_by_authority %t", r.Name(), r.Database.Spec.CA, r.Database.Spec.CAIssuedByAuthority)
		}
	case r.KubernetesCluster != nil:
		if err := resources.CheckAPIServerURL("api_server", r.KubernetesCluster.Spec.APIServer); err != nil {
			t.Errorf("kubernetes_cluster %q: accepted %v", r.Name(), err)
		}
	case r.TrustedCluster != nil:
		spec := r.TrustedCluster.Spec
		if !strings.HasPrefix(spec.Root.URL, "https://") || strings.ContainsFunc(spec.Root.URL, func(c rune) bool { return c < ' ' || c == 0x7f }) {
			t.Errorf("trusted_cluster %q: accepted root url %q", r.Name(), spec.Root.URL)
		}
		if err := resources.CheckCAPin("ca_pin", spec.Root.CAPin); err != nil {
			t.Errorf("trusted_cluster %q: accepted %v", r.Name(), err)
		}
		if len(spec.RoleMap) == 0 {
			t.Errorf("trusted_cluster %q: accepted an empty role_map", r.Name())
		}
		for _, m := range spec.RoleMap {
			if _, err := resources.CompileRemoteRole(m.Remote); err != nil {
				t.Errorf("trusted_cluster %q: accepted remote %q: %v", r.Name(), m.Remote, err)
			}
		}
	case r.LeafCluster != nil:
		if err := resources.CheckCAPin("ca_pin", r.LeafCluster.Spec.CAPin); err != nil {
			t.Errorf("leaf_cluster %q: accepted %v", r.Name(), err)
		}
	default:
		t.Errorf("accepted a resource of no kind: %+v", r)
	}
}
