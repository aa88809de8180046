package client

import (
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/identity"
)

// TestOutputNames checks that output and role names in mbot.yaml follow
// the authority's character set, and that names derived from destinations
// always do.
func TestOutputNames(t *testing.T) {
	bad := []struct {
		name, yaml string
		wants      []string
	}{
		{"name with a newline", "outputs:\n  - destination: ./a\n    name: \"a\\nb\"\n", []string{"mbot.yaml:3:", "outputs[0].name", `"a\nb"`}},
		{"name in upper case", "outputs:\n  - {destination: ./a, name: Deploy}\n", []string{"mbot.yaml:2:", "outputs[0].name", `"Deploy"`}},
		{"name too long", "outputs:\n  - {destination: ./a, name: " + strings.Repeat("a", 64) + "}\n", []string{"outputs[0].name", "at most 63"}},
		{"role with a space", "outputs:\n  - {destination: ./a, roles: ['deploy admin']}\n", []string{"outputs[0].roles", `"deploy admin"`}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("mbot.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q: %v", w, err)
				}
			}
			if strings.ContainsAny(err.Error(), "\n") {
				t.Errorf("error carries a newline: %q", err)
			}
		})
	}
	for dest, want := range map[string]string{
		"./Mbot Deploy":                       "mbot-deploy",
		"/tmp/ÉTÉ":                            "t",
		"./---":                               "identity",
		"./" + strings.Repeat("x", 100):       strings.Repeat("x", identity.MaxNameLen-4),
		"./" + strings.Repeat("a", 58) + "-b": strings.Repeat("a", 58),
	} {
		got := outputNameFrom(dest)
		if got != want || identity.CheckName("name", got) != nil {
			t.Errorf("outputNameFrom(%q) = %q, want %q", dest, got, want)
		}
	}
	// Numbered names stay valid too.
	long := strings.Repeat("x", 100)
	cfg, err := ParseConfig("mbot.yaml", []byte("outputs:\n  - destination: a/"+long+"\n  - destination: b/"+long+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range cfg.Outputs {
		if err := identity.CheckName("name", o.Name); err != nil {
			t.Error(err)
		}
	}
}
