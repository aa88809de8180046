package resources_test

import (
	"slices"
	"testing"

	"github.com/mbot-dev/mbot/authority/resources"
)

// TestIdentityTraitsTemplates: the {{mbot.*}} variables expand to the
// identity's facts, the same entry to different values for a cluster's
// own bot and a root's bot of the same name exchanged into it;
// {{mbot.root_cluster}} expands for exchanged identities only; an unknown
// variable grants nothing, and no trait can pass for a variable.
func TestIdentityTraitsTemplates(t *testing.T) {
	traits := map[string][]string{"logins": {"ubuntu"}, "bot": {"trait-bot"}}
	own := resources.IdentityTraits(traits, "deployer", "leaf-eu", "")
	exchanged := resources.IdentityTraits(nil, "deployer", "leaf-eu", "root-a")
	for _, c := range []struct {
		tmpl           string
		own, exchanged []string
	}{
		{"{{mbot.bot}}", []string{"deployer"}, []string{"deployer"}},
		{"ci-{{ mbot.cluster }}", []string{"ci-leaf-eu"}, []string{"ci-root-a"}},
		{"/mbot/cluster/{{mbot.root_cluster}}/bot/*", nil, []string{"/mbot/cluster/root-a/bot/*"}},
		{"{{internal.logins}}", []string{"ubuntu"}, nil},
		{"{{internal.bot}}", []string{"trait-bot"}, nil}, // a trait named bot is the trait
		{"{{mbot.nope}}", nil, nil},
		{"{{mbot.bot}}-{{mbot.cluster}}", nil, nil}, // one template per value
		{"deploy", []string{"deploy"}, []string{"deploy"}},
	} {
		if got := resources.ExpandTemplate(c.tmpl, own); !slices.Equal(got, c.own) {
			t.Errorf("%s for the own bot: %q, want %q", c.tmpl, got, c.own)
		}
		if got := resources.ExpandTemplate(c.tmpl, exchanged); !slices.Equal(got, c.exchanged) {
			t.Errorf("%s for the exchanged identity: %q, want %q", c.tmpl, got, c.exchanged)
		}
	}
	if _, ok := traits[resources.TemplateBot]; ok {
		t.Error("IdentityTraits changed the bot's own traits")
	}
	if err := resources.CheckTraitName(resources.TemplateRootCluster); err == nil {
		t.Errorf("a trait may be named %s", resources.TemplateRootCluster)
	}
}
