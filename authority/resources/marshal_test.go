package resources_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority/resources"
	"gopkg.in/yaml.v3"
)

// roundTripYAML has every kind, with scalars whose type a careless
// rewrite would change: a quoted "true", a version-like "1.10", a real
// boolean, a number, a multi-line string, a list of patterns.
const roundTripYAML = `kind: role
version: v1
metadata: {name: deploy, description: "deploys, with: colons", labels: {team: web}}
spec:
  logins: ["{{internal.logins}}", deploy]   # a comment
  max_ttl: 8h
  require_session_mfa: false
  device_trust_mode: required-for-humans
---
kind: role
version: v1
metadata: {name: empty}
spec: {}
---
kind: bot
version: v1
metadata: {name: deployer}
spec:
  roles: [deploy, empty]
  traits: {logins: [ubuntu, "true"], team: []}
---
kind: join_token
version: v1
metadata: {name: gitlab-deploy}
spec:
  bot: deployer
  method: gitlab
  gitlab:
    issuer: https://gitlab.example.com
    allow:
      - project_path: acme/app
        ref_protected: true
        ref: "1.10"
        environment: 'true'
        user_login: [alice, "bob*"]
        namespace_path: 0x1F
---
kind: join_token
version: v1
metadata: {name: github-static}
spec:
  bot: deployer
  method: github
  github:
    static_jwks: |
      {"keys": [
        {"kty": "EC"}
      ]}
    allow: [{repository: acme/app, ref: refs/heads/main}]
`

func TestDocumentsRoundTrip(t *testing.T) {
	want := parseAll(t, "in.yaml", roundTripYAML)
	docs := want.Documents("")
	if len(docs) != 5 {
		t.Fatalf("%d documents, want 5", len(docs))
	}
	var kinds []string
	for _, d := range docs {
		kinds = append(kinds, d.Kind+"/"+d.Metadata.Name)
	}
	wantOrder := []string{"role/deploy", "role/empty", "bot/deployer", "join_token/github-static", "join_token/gitlab-deploy"}
	if !reflect.DeepEqual(kinds, wantOrder) {
		t.Errorf("order %v, want %v", kinds, wantOrder)
	}

	t.Run("yaml", func(t *testing.T) {
		out, err := resources.MarshalYAMLDocuments(docs)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(out), "\n---\n") != 4 {
			t.Errorf("want 5 documents separated by ---:\n%s", out)
		}
		sameSet(t, want, parseAll(t, "out.yaml", string(out)), string(out))
	})

	t.Run("json", func(t *testing.T) {
		out, err := json.MarshalIndent(docs, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		var generic []map[string]any
		if err := json.Unmarshal(out, &generic); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		for _, d := range generic {
			for _, k := range []string{"kind", "version", "metadata", "spec"} {
				if _, ok := d[k]; !ok {
					t.Errorf("document lacks %s: %v", k, d)
				}
			}
		}
		asDocs, err := resources.ListToDocuments(out)
		if err != nil {
			t.Fatal(err)
		}
		sameSet(t, want, parseAll(t, "out.json", string(asDocs)), string(out))

		// Stable: the same resources always print the same bytes.
		again, _ := json.MarshalIndent(parseAll(t, "again", string(asDocs)).Documents(""), "", "  ")
		if string(again) != string(out) {
			t.Errorf("JSON output changed after a round trip:\n%s\n---\n%s", out, again)
		}
	})

	t.Run("json keeps scalar types", func(t *testing.T) {
		out, err := json.Marshal(want.JoinTokens["gitlab-deploy"].Document())
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{`"ref_protected":true`, `"ref":"1.10"`, `"environment":"true"`, `"namespace_path":"0x1F"`,
			`"user_login":["alice","bob*"]`, `{"bot":"deployer","method":"gitlab","gitlab":`} {
			if !strings.Contains(string(out), s) {
				t.Errorf("JSON lacks %s:\n%s", s, out)
			}
		}
	})
}

func TestJoinTokenFromJSONListsAsBlockYAML(t *testing.T) {
	set := parseAll(t, "in.json", `{"kind": "join_token", "version": "v1", "metadata": {"name": "t"},
		"spec": {"bot": "b", "method": "github", "github": {"allow": [{"repository": "acme/app", "ref_protected": "true"}]}}}`)
	out, err := resources.MarshalYAMLDocuments(set.Documents(resources.KindJoinToken))
	if err != nil {
		t.Fatal(err)
	}
	want := `kind: join_token
version: v1
metadata:
  name: t
spec:
  bot: b
  method: github
  github:
    allow:
      - repository: acme/app
        ref_protected: "true"
`
	if string(out) != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
}

func parseAll(t *testing.T, file, data string) *resources.Set {
	t.Helper()
	parsed, err := resources.Parse(file, []byte(data))
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	return resources.NewSet(parsed)
}

// sameSet compares two sets by content, ignoring where they were read from.
func sameSet(t *testing.T, want, got *resources.Set, text string) {
	t.Helper()
	for name, r := range want.Roles {
		g, ok := got.Roles[name]
		gs, ws := g.Spec, r.Spec
		if ok && len(gs.Logins) == 0 && len(ws.Logins) == 0 {
			gs.Logins, ws.Logins = nil, nil // no logins, written [] or left out
		}
		if !ok || !reflect.DeepEqual(g.Metadata, r.Metadata) || !reflect.DeepEqual(gs, ws) {
			t.Errorf("role %s changed in a round trip through:\n%s", name, text)
		}
	}
	for name, b := range want.Bots {
		g, ok := got.Bots[name]
		if !ok || !reflect.DeepEqual(g.Metadata, b.Metadata) || !reflect.DeepEqual(g.Spec.Roles, b.Spec.Roles) ||
			!reflect.DeepEqual(nonEmptyTraits(g.Spec.Traits), nonEmptyTraits(b.Spec.Traits)) {
			t.Errorf("bot %s changed in a round trip: %+v, want %+v, through:\n%s", name, g, b, text)
		}
	}
	for name, tok := range want.JoinTokens {
		g, ok := got.JoinTokens[name]
		if !ok || g.Spec.Bot != tok.Spec.Bot || g.Spec.Method != tok.Spec.Method ||
			canonical(g.Spec.Section()) != canonical(tok.Spec.Section()) {
			t.Errorf("join token %s changed in a round trip: %s, want %s, through:\n%s",
				name, canonical(g.Spec.Section()), canonical(tok.Spec.Section()), text)
		}
	}
	if len(got.Roles) != len(want.Roles) || len(got.Bots) != len(want.Bots) || len(got.JoinTokens) != len(want.JoinTokens) {
		t.Errorf("round trip changed the number of resources")
	}
}

// nonEmptyTraits drops empty trait lists, which grant nothing either way.
func nonEmptyTraits(m map[string][]string) map[string][]string {
	out := map[string][]string{}
	for k, v := range m {
		if len(v) > 0 {
			out[k] = v
		}
	}
	return out
}

// canonical renders what a node means to the verifiers, which read
// scalars as the text written: structure and each scalar's value.
func canonical(n *yaml.Node) string {
	if n == nil {
		return "nil"
	}
	switch n.Kind {
	case yaml.MappingNode:
		var parts []string
		for i := 0; i+1 < len(n.Content); i += 2 {
			parts = append(parts, n.Content[i].Value+"="+canonical(n.Content[i+1]))
		}
		return "{" + strings.Join(parts, ",") + "}"
	case yaml.SequenceNode:
		var parts []string
		for _, c := range n.Content {
			parts = append(parts, canonical(c))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	return fmt.Sprintf("%q", n.Value)
}

func TestMarshalNoDocuments(t *testing.T) {
	out, err := resources.MarshalYAMLDocuments(nil)
	if err != nil || len(out) != 0 {
		t.Errorf("MarshalYAMLDocuments(nil) = %q, %v; want nothing", out, err)
	}
}
