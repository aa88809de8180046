package client

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const twoOutputs = `# mbot.yaml
authority: https://auth.acme.internal:8443
ca_pin: sha256:0000000000000000000000000000000000000000000000000000000000000000
token: github-deploy
join_method: auto
ttl: 2h
outputs:
  - type: identity
    destination: ./mbot-deploy
    roles: [deploy]
  - destination: ./mbot-readonly
    roles: [audit-read]
    name: readonly
`

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig("mbot.yaml", []byte(twoOutputs))
	if err != nil {
		t.Fatal(err)
	}
	want := []Output{
		{Type: "identity", Destination: Destination{Dir: "./mbot-deploy"}, Roles: []string{"deploy"}, Name: "mbot-deploy"},
		{Type: "identity", Destination: Destination{Dir: "./mbot-readonly"}, Roles: []string{"audit-read"}, Name: "readonly"},
	}
	if cfg.Authority != "https://auth.acme.internal:8443" || cfg.Token != "github-deploy" || cfg.JoinMethod != "auto" ||
		time.Duration(cfg.TTL) != 2*time.Hour || !slices.EqualFunc(cfg.Outputs, want, outputsEqual) {
		t.Errorf("parsed %+v", cfg)
	}

	// Names derived from destinations that share a base name get a number.
	cfg, err = ParseConfig("mbot.yaml", []byte("outputs:\n  - destination: a/mbot\n  - destination: b/mbot\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Outputs[0].Name != "mbot" || cfg.Outputs[1].Name != "mbot-2" {
		t.Errorf("derived names %q, %q; want mbot, mbot-2", cfg.Outputs[0].Name, cfg.Outputs[1].Name)
	}
}

func outputsEqual(a, b Output) bool {
	return a.Type == b.Type && a.Destination == b.Destination && a.Name == b.Name && slices.Equal(a.Roles, b.Roles)
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		wants      []string // the first is the file:line prefix
	}{
		{"unknown top-level field", "token: x\ntokne: y\noutputs: [{destination: ./a}]\n",
			[]string{"mbot.yaml:2:", `unknown field "tokne"`, "(did you mean token?)"}},
		{"unknown output field", "outputs:\n  - destination: ./a\n    role: [deploy]\n",
			[]string{"mbot.yaml:3:", `unknown field "role" in output 1 (type identity) (did you mean roles?)`}},
		{"duplicate destination", "outputs:\n  - destination: ./a\n    roles: [x]\n  - destination: a/\n    roles: [y]\n",
			[]string{"mbot.yaml:4:", "outputs[1].destination", "is already the destination of outputs[0]"}},
		{"nested destinations", "outputs:\n  - destination: ./a\n  - destination: ./a/b\n",
			[]string{"mbot.yaml:3:", "nested"}},
		{"unknown output type", "outputs:\n  - type: vault\n    destination: ./a\n",
			[]string{"mbot.yaml:2:", `"vault" is not an output type`, "ssh_host"}},
		{"missing destination", "outputs:\n  - type: identity\n    roles: [deploy]\n",
			[]string{"mbot.yaml:2:", "outputs[0].destination", "is required"}},
		{"no outputs", "token: x\n",
			[]string{"mbot.yaml:1:", "outputs", "at least one output"}},
		{"duplicate names", "outputs:\n  - {destination: ./a, name: x}\n  - {destination: ./b, name: x}\n",
			[]string{"mbot.yaml:3:", "outputs[1].name", `"x" is already used`}},
		{"bad ttl", "ttl: forever\noutputs: [{destination: ./a}]\n",
			[]string{"mbot.yaml:1:", "ttl", "duration"}},
		{"bad join method", "join_method: travis\noutputs: [{destination: ./a}]\n",
			[]string{"mbot.yaml:1:", "join_method", "travis"}},
		{"roles not a list", "outputs:\n  - destination: ./a\n    roles: deploy\n",
			[]string{"mbot.yaml:3:", "list"}},
		{"empty file", "# nothing\n", []string{"mbot.yaml is empty"}},
		{"not yaml", "outputs: [\n", []string{"mbot.yaml:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("mbot.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.HasPrefix(err.Error(), tc.wants[0]) {
				t.Errorf("error does not start with %q: %v", tc.wants[0], err)
			}
			for _, want := range tc.wants[1:] {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not mention %q: %v", want, err)
				}
			}
		})
	}
}

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mbot.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestResolve checks the order: options set (flags, MBOT_*) win over
// mbot.yaml, which wins over the defaults.
func TestResolve(t *testing.T) {
	twoPath := writeConfig(t, twoOutputs)
	onePath := writeConfig(t, "token: from-file\nttl: 3h\noutputs:\n  - destination: ./file-out\n    roles: [file-role]\n")

	t.Run("file values", func(t *testing.T) {
		o := IssueOptions{Config: twoPath}
		if err := o.resolve(); err != nil {
			t.Fatal(err)
		}
		if o.Authority != "https://auth.acme.internal:8443" || o.Token != "github-deploy" || o.TTL != 2*time.Hour ||
			o.JoinMethod != "auto" || len(o.Outputs) != 2 {
			t.Errorf("resolved %+v", o)
		}
	})
	t.Run("flags override the file", func(t *testing.T) {
		o := IssueOptions{Config: twoPath, Authority: "https://other:8443", Token: "flag-token", TTL: 30 * time.Minute, JoinMethod: "gitlab"}
		if err := o.resolve(); err != nil {
			t.Fatal(err)
		}
		if o.Authority != "https://other:8443" || o.Token != "flag-token" || o.TTL != 30*time.Minute || o.JoinMethod != "gitlab" ||
			!strings.HasPrefix(o.CAPin, "sha256:") || len(o.Outputs) != 2 {
			t.Errorf("resolved %+v", o)
		}
	})
	t.Run("out and roles override a single output", func(t *testing.T) {
		o := IssueOptions{Config: onePath, Authority: "https://a:1", Out: "./flag-out", Roles: []string{"flag-role"}}
		if err := o.resolve(); err != nil {
			t.Fatal(err)
		}
		if len(o.Outputs) != 1 || o.Outputs[0].Destination.Dir != "./flag-out" || !slices.Equal(o.Outputs[0].Roles, []string{"flag-role"}) ||
			o.Token != "from-file" || o.TTL != 3*time.Hour {
			t.Errorf("resolved %+v", o)
		}
	})
	t.Run("out with several outputs is refused", func(t *testing.T) {
		o := IssueOptions{Config: twoPath, Out: "./flag-out"}
		err := o.resolve()
		if err == nil || !strings.Contains(err.Error(), "--out") || !strings.Contains(err.Error(), "has 2") {
			t.Errorf("want a refusal naming --out and the 2 outputs, got %v", err)
		}
	})
	t.Run("no config keeps one output", func(t *testing.T) {
		o := IssueOptions{Authority: "https://a:1", Token: "t", Roles: []string{"deploy"}}
		if err := o.resolve(); err != nil {
			t.Fatal(err)
		}
		want := []Output{{Type: "identity", Name: "identity", Destination: Destination{Dir: DefaultOut}, Roles: []string{"deploy"}}}
		if !slices.EqualFunc(o.Outputs, want, outputsEqual) || o.TTL != DefaultTTL || o.JoinMethod != "auto" {
			t.Errorf("resolved %+v", o)
		}
	})
	t.Run("missing values name the file", func(t *testing.T) {
		o := IssueOptions{Config: writeConfig(t, "outputs: [{destination: ./a}]\n")}
		err := o.resolve()
		if err == nil || !strings.Contains(err.Error(), "--authority (MBOT_AUTHORITY, or authority: in ") || !strings.Contains(err.Error(), "--token") {
			t.Errorf("want a message naming --authority, --token and the file, got %v", err)
		}
	})
	t.Run("config file errors", func(t *testing.T) {
		path := writeConfig(t, "outputs:\n  - destination: ./a\n    colour: blue\n")
		o := IssueOptions{Config: path}
		err := o.resolve()
		if err == nil || !strings.HasPrefix(err.Error(), path+":3:") {
			t.Errorf("want an error at %s:3, got %v", path, err)
		}
	})
}

// TestUnknownOutputField checks that a mistyped field of an output is
// matched against, and listed with, the fields of that output's own type.
func TestUnknownOutputField(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       string
		notListed  []string
	}{
		{"database", "outputs:\n  - destination: ./a\n  - type: database\n    destination: ./db\n    databse: prod-pg\n",
			`mbot.yaml:5: unknown field "databse" in output 2 (type database) (did you mean database?); its fields: type, destination, roles, name, cluster, authority, owner, reload, reload_timeout, database, username, db_name`,
			[]string{"kubernetes_cluster", "host_names"}},
		{"kubernetes, flow style", "outputs: [{type: kubernetes, destination: ./k, kubernetes_clustr: prod}]\n",
			`mbot.yaml:1: unknown field "kubernetes_clustr" in output 1 (type kubernetes) (did you mean kubernetes_cluster?)`,
			[]string{"username", "host_names"}},
		{"identity, nothing near", "outputs:\n  - destination: ./a\n    flavour: x\n",
			`mbot.yaml:3: unknown field "flavour" in output 1 (type identity); its fields: type, destination, roles, name, cluster, authority`,
			[]string{"database", "did you mean"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("mbot.yaml", []byte(tc.yaml))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %s", err, tc.want)
			}
			for _, other := range tc.notListed {
				if strings.Contains(err.Error(), other) {
					t.Errorf("the error names %s, which is not a field of this output's type: %v", other, err)
				}
			}
		})
	}
}
