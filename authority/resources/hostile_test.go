package resources_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/resources"
)

// Documents a test builds on; each case changes one value.
const (
	hostileRole  = "kind: role\nversion: v1\nmetadata: {name: deploy}\nspec:\n  logins: [%s]\n"
	hostileBot   = "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec:\n  roles: [deploy]\n  traits: {%s}\n"
	hostileToken = "kind: join_token\nversion: v1\nmetadata: {name: gh}\nspec:\n  bot: %s\n  method: %s\n"
	hostileName  = "kind: bot\nversion: v1\nmetadata:\n  name: %s\nspec: {roles: [deploy]}\n"
)

// billionLaughs nests nine aliases nine deep: expanded, it would be 9^9 values.
func billionLaughs(under string) string {
	var b strings.Builder
	b.WriteString(under)
	b.WriteString("    a0: &a0 [lol]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "    a%d: &a%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d,", i-1), 9), ","))
	}
	return b.String()
}

// TestParseRefusesHostileDocuments feeds the loader what an attacker with
// write access to a resource file (or a careless admin) could write. Every
// document is refused with the file, the line and the field, quickly, and
// the message cannot forge a line or carry a terminal escape.
func TestParseRefusesHostileDocuments(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string // the first is file:line
	}{
		{"login with a newline", fmt.Sprintf(hostileRole, `"ubuntu\n    ProxyCommand touch /tmp/x"`),
			[]string{"f.yaml:5:", "spec.logins[0]", `"ubuntu\n    ProxyCommand touch /tmp/x"`, "not a valid user name"}},
		{"login that is a wildcard", fmt.Sprintf(hostileRole, `ci, "*"`), []string{"f.yaml:5:", "spec.logins[1]", `"*"`}},
		{"login with a comma", fmt.Sprintf(hostileRole, `"root,admin"`), []string{"f.yaml:5:", "spec.logins[0]", `"root,admin"`}},
		{"login with a space", "kind: role\nversion: v1\nmetadata: {name: deploy}\nspec:\n  logins:\n    - ci\n    - root admin\n",
			[]string{"f.yaml:7:", "spec.logins[1]", `"root admin"`}},
		{"login starting with a dash", fmt.Sprintf(hostileRole, `"-oProxyCommand=x"`), []string{"f.yaml:5:", "spec.logins[0]"}},
		{"login too long", fmt.Sprintf(hostileRole, strings.Repeat("a", 33)), []string{"f.yaml:5:", "spec.logins[0]", "at most 32"}},
		{"login template with a space around it", fmt.Sprintf(hostileRole, `"svc {{internal.team}}"`),
			[]string{"f.yaml:5:", "spec.logins[0]", "not a valid login template"}},
		{"login template with a newline inside", fmt.Sprintf(hostileRole, `"{{internal.\n}}"`), []string{"f.yaml:5:", "spec.logins[0]"}},
		{"login with a terminal escape", fmt.Sprintf(hostileRole, `"ci\e[2J"`), []string{"f.yaml:5:", `"ci\x1b[2J"`}},
		{"name with a slash", fmt.Sprintf(hostileName, "a/b"), []string{"f.yaml:4:", "metadata.name", `"a/b"`}},
		{"name in upper case", fmt.Sprintf(hostileName, "Deployer"), []string{"f.yaml:4:", "metadata.name", `"Deployer"`}},
		{"name in unicode", fmt.Sprintf(hostileName, "déployeur"), []string{"f.yaml:4:", "metadata.name", "not a valid name"}},
		{"name with a right-to-left override", fmt.Sprintf(hostileName, `"a\u202eb"`), []string{"f.yaml:4:", "metadata.name", `"a\u202eb"`}},
		{"name of 10k characters", fmt.Sprintf(hostileName, strings.Repeat("a", 10000)), []string{"f.yaml:4:", "metadata.name", "10000 characters"}},
		{"name ending with a dot", fmt.Sprintf(hostileName, "deployer."), []string{"f.yaml:4:", "metadata.name"}},
		{"empty name", fmt.Sprintf(hostileName, `""`), []string{"f.yaml:1:", "metadata.name is required"}},
		{"trait value with a newline", fmt.Sprintf(hostileBot, `logins: ["ubuntu\n    ProxyCommand touch /tmp/x"]`),
			[]string{"f.yaml:6:", "spec.traits.logins[0]", "control character"}},
		{"trait value with a terminal escape", "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec:\n  roles: [deploy]\n  traits:\n    team:\n      - payments\n      - \"\\e]0;owned\\a\"\n",
			[]string{"f.yaml:9:", "spec.traits.team[1]", "control character"}},
		{"trait value with a bidi override", fmt.Sprintf(hostileBot, `team: ["pay\u202ements"]`), []string{"f.yaml:6:", "spec.traits.team[0]", `"pay\u202ements"`}},
		{"trait value too long", fmt.Sprintf(hostileBot, "logins: ["+strings.Repeat("a", 300)+"]"), []string{"f.yaml:6:", "spec.traits.logins[0]", "300 bytes"}},
		{"trait value not UTF-8", fmt.Sprintf(hostileBot, "logins: [\"a\xffb\"]"), []string{"f.yaml:", "UTF-8"}},
		{"trait name with a space", "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec:\n  roles: [deploy]\n  traits:\n    ok: [a]\n    \"a b\": [x]\n",
			[]string{"f.yaml:8:", "spec.traits", `trait name "a b"`}},
		{"trait name with a dot", fmt.Sprintf(hostileBot, `internal.logins: [x]`), []string{"f.yaml:6:", `"internal.logins"`}},
		{"role of a bot with a newline", "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec:\n  roles:\n    - deploy\n    - \"deploy\\nadmin\"\n",
			[]string{"f.yaml:7:", "spec.roles[1]", `"deploy\nadmin"`}},
		{"role of a bot in upper case", "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec: {roles: [Deploy]}\n", []string{"f.yaml:4:", "spec.roles[0]"}},
		{"join token for a bot with a space", fmt.Sprintf(hostileToken, `"deployer x"`, "github"), []string{"f.yaml:5:", "spec.bot", `"deployer x"`}},
		{"join token method with a newline", fmt.Sprintf(hostileToken, "deployer", `"github\nx"`), []string{"f.yaml:6:", "spec.method", `"github\nx"`}},
		{"join token section key with a newline", fmt.Sprintf(hostileToken, "deployer", "github") + "  \"gitlab\\nx\": {}\n",
			[]string{"f.yaml:7:", `spec."gitlab\nx" does not belong`}},
		{"description with a newline", "kind: bot\nversion: v1\nmetadata:\n  name: deployer\n  description: \"fine\\nf.yaml:1: forged\"\nspec: {roles: [deploy]}\n",
			[]string{"f.yaml:5:", "metadata.description", "control character"}},
		{"label key with a space", "kind: bot\nversion: v1\nmetadata:\n  name: deployer\n  labels: {\"a b\": x}\nspec: {roles: [deploy]}\n",
			[]string{"f.yaml:5:", "metadata.labels key"}},
		{"unknown field with a newline", "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec: {roles: [deploy]}\n\"x\\nf.yaml:1: forged\": 1\n",
			[]string{"f.yaml:5:", `x\nf.yaml:1: forged`, "a resource has no field"}},
		{"alias bomb in traits", billionLaughs("kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec:\n  roles: [deploy]\n  traits:\n"),
			[]string{"f.yaml:", "cannot unmarshal"}},
		{"alias bomb in labels", billionLaughs("kind: bot\nversion: v1\nmetadata:\n  name: deployer\n  labels:\n") + "spec: {roles: [deploy]}\n",
			[]string{"f.yaml:", "cannot unmarshal"}},
		{"alias bomb in a join token section", fmt.Sprintf(hostileToken, "deployer", "github") + billionLaughs("  gitlab:\n"),
			[]string{"f.yaml:8:", "spec.gitlab does not belong"}},
		{"deeply nested sequences", "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n",
			[]string{"f.yaml:", "exceeded max depth"}},
		{"deeply nested mappings", "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec: " + strings.Repeat("{a: ", 5000) + "x" + strings.Repeat("}", 5000) + "\n",
			[]string{"f.yaml:4:", "bot spec has no field a"}},
		{"many documents, the last one bad", strings.Repeat(fmt.Sprintf(hostileRole, "ci")+"---\n", 2000) + fmt.Sprintf(hostileRole, `"ci\n"`),
			[]string{"f.yaml:12005:", "spec.logins[0]"}},
		{"many errors in one document", "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec:\n  roles: [deploy]\n  traits: {logins: [" + strings.Repeat("[x], ", 500) + "]}\n",
			[]string{"f.yaml:6:", "and 480 more errors"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			res, err := resources.Parse("f.yaml", []byte(tc.yaml))
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Parse took %s", took)
			}
			if err == nil {
				t.Fatalf("accepted %d resources; want an error mentioning %q", len(res), tc.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tc.want[0]) {
				t.Errorf("error does not start with %q: %s", tc.want[0], identityTruncate(msg))
			}
			for _, w := range tc.want[1:] {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not mention %q: %s", w, identityTruncate(msg))
				}
			}
			// Several errors are several lines, each naming the file: none
			// can be forged, and no terminal escape gets through.
			for _, line := range strings.Split(msg, "\n") {
				if !strings.HasPrefix(line, "f.yaml:") {
					t.Errorf("error line %q does not start with the file", identityTruncate(line))
				}
			}
			if strings.ContainsAny(msg, "\r\x1b\x07\u202e") {
				t.Errorf("error carries a control character: %q", identityTruncate(msg))
			}
			if len(msg) > 8000 {
				t.Errorf("error is %d bytes long", len(msg))
			}
		})
	}
}

func identityTruncate(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// TestCheckReferencesRefusesExpandedLogins checks the logins a role's
// template expands to with a bot's traits: each trait value is text that
// loads, but once it is a login it must be a user name. The error names the
// bot (and where it is), the trait, the role and the login.
func TestCheckReferencesRefusesExpandedLogins(t *testing.T) {
	cases := []struct {
		name, role, traits string
		want               []string
	}{
		{"trait with a comma", `"{{internal.logins}}"`, `logins: [ubuntu, "root,admin"]`,
			[]string{`bot "deployer"`, "spec.traits.logins[1]", `login "{{internal.logins}}" of role "deploy"`, `"root,admin"`}},
		{"trait that is a wildcard", `"svc-{{internal.team}}"`, `team: ["*"]`, []string{"spec.traits.team[0]", `"svc-*"`}},
		{"trait with a space", `"{{ internal.logins }}"`, `logins: ["a b"]`, []string{"spec.traits.logins[0]", `"a b"`}},
		{"trait starting with a dash", `"{{internal.logins}}"`, `logins: ["-oProxyCommand=x"]`, []string{"spec.traits.logins[0]"}},
		{"expansion too long", `"{{internal.logins}}-readonly"`, `logins: [` + strings.Repeat("a", 24) + `]`, []string{"spec.traits.logins[0]", "at most 32"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := fmt.Sprintf(hostileRole, tc.role) + "---\n" + fmt.Sprintf(hostileBot, tc.traits)
			res, err := resources.Parse("f.yaml", []byte(data))
			if err != nil {
				t.Fatalf("the documents themselves are fine, but: %v", err)
			}
			err = resources.NewSet(res).CheckReferences()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range append([]string{"f.yaml:7:", "(f.yaml:1)"}, tc.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q: %v", w, err)
				}
			}
		})
	}
	ok := fmt.Sprintf(hostileRole, `"{{internal.logins}}", "svc-{{internal.team}}", "{{internal.unused}}"`) + "---\n" +
		fmt.Sprintf(hostileBot, `logins: [ubuntu, ci, ""], team: [payments], other: ["free text, not a login"]`)
	res, err := resources.Parse("f.yaml", []byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if err := resources.NewSet(res).CheckReferences(); err != nil {
		t.Errorf("valid traits refused: %v", err)
	}
}
