package resources_test

import (
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority/resources"
)

func TestListToDocuments(t *testing.T) {
	cases := []struct {
		name string
		in   string
		// wantNames are the resources Parse reads from the result.
		wantNames []string
		// wantErr, when set, is the start of Parse's error: the original file's line.
		wantErr string
	}{
		{
			name: "JSON array, one field per line",
			in: `[
  {
    "kind": "role",
    "version": "v1",
    "metadata": {"name": "a"},
    "spec": {"logins": ["x"]}
  },
  {
    "kind": "role",
    "version": "v1",
    "metadata": {"name": "b"},
    "spec": {"logins": ["y"]}
  }
]
`,
			wantNames: []string{"role/a", "role/b"},
		},
		{
			name: "JSON array, error on line 13",
			in: `[
  {
    "kind": "role",
    "version": "v1",
    "metadata": {"name": "a"},
    "spec": {"logins": ["x"]}
  },
  {
    "kind": "role",
    "version": "v1",
    "metadata": {"name": "b"},
    "spec": {
      "logins": ["y"], "colour": "red"
    }
  }
]`,
			wantErr: "list.json:13: role spec has no field colour",
		},
		{
			name:      "JSON array on one line",
			in:        `[{"kind": "role", "metadata": {"name": "a"}, "spec": {}}, {"kind": "role", "metadata": {"name": "b"}, "spec": {}}]`,
			wantNames: []string{"role/a", "role/b"},
		},
		{
			name: "YAML sequence, error on line 9",
			in: `# roles
- kind: role
  version: v1
  metadata: {name: a}
  spec: {logins: [x]}
- kind: role
  version: v1
  metadata: {name: b}
  spec: {logins: [y], max_ttl: soon}
`,
			wantErr: `list.json:9: "soon" is not a duration`,
		},
		{
			name:      "empty list",
			in:        "[]\n",
			wantNames: nil,
		},
		{
			name:      "documents are left alone",
			in:        "kind: role\nversion: v1\nmetadata: {name: a}\nspec: {logins: [x]}\n---\nkind: role\nmetadata: {name: b}\nspec: {}\n",
			wantNames: []string{"role/a", "role/b"},
		},
		{
			name:    "a list among documents is left for Parse to refuse",
			in:      "kind: role\nmetadata: {name: a}\nspec: {}\n---\n- kind: role\n",
			wantErr: "list.json:4: a resource must be a mapping",
		},
		{
			name:    "list of something else",
			in:      "[1, 2]\n",
			wantErr: "list.json:1: a resource must be a mapping",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			docs, err := resources.ListToDocuments([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := resources.Parse("list.json", docs)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one starting %q; documents:\n%s", err, tc.wantErr, docs)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v; documents:\n%s", err, docs)
			}
			var names []string
			for _, r := range parsed {
				names = append(names, r.Kind+"/"+r.Name())
			}
			if strings.Join(names, " ") != strings.Join(tc.wantNames, " ") {
				t.Errorf("parsed %v, want %v; documents:\n%s", names, tc.wantNames, docs)
			}
		})
	}
}

// TestListToDocumentsKeepsSourceLines checks that resources read from a
// list remember the line they start on in the original file.
func TestListToDocumentsKeepsSourceLines(t *testing.T) {
	in := "[\n  {\"kind\": \"role\", \"metadata\": {\"name\": \"a\"}, \"spec\": {}},\n\n\n  {\"kind\": \"role\",\n   \"metadata\": {\"name\": \"b\"}, \"spec\": {}}\n]\n"
	docs, err := resources.ListToDocuments([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := resources.Parse("list.json", docs)
	if err != nil {
		t.Fatal(err)
	}
	if len(parsed) != 2 || parsed[0].Source().Line != 2 || parsed[1].Source().Line != 5 {
		t.Errorf("sources %v %v, want lines 2 and 5; documents:\n%s", parsed[0].Source(), parsed[1].Source(), docs)
	}
}
