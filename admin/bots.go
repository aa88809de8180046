package admin

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
)

// LoginsTrait is the trait that mbot bots add --logins writes, which roles
// grant through "{{internal.logins}}".
const LoginsTrait = "logins"

// BotDocument returns the YAML document that mbot bots add applies: bot
// name holding roles, with its logins trait set to logins (removed when
// logins is empty). An existing bot of that name keeps its other traits,
// description and labels. Roles that set does not define are refused with
// the list of those it does.
func BotDocument(set *resources.Set, name string, roles, logins []string) ([]byte, error) {
	if err := identity.CheckName("bot name", name); err != nil {
		return nil, err
	}
	if len(roles) == 0 {
		return nil, fmt.Errorf("bot %q needs at least one role; pass --roles", name)
	}
	// Checked here to name the flag; the authority checks them again when it applies the bot.
	for _, l := range logins {
		if err := identity.CheckLogin("--logins", l); err != nil {
			return nil, err
		}
	}
	var unknown []string
	for _, r := range roles {
		if _, ok := set.Roles[r]; !ok {
			unknown = append(unknown, r)
		}
	}
	if len(unknown) > 0 {
		existing := "there are no roles yet"
		if len(set.Roles) > 0 {
			existing = "existing roles: " + strings.Join(slices.Sorted(maps.Keys(set.Roles)), ", ")
		}
		return nil, fmt.Errorf("role %s not defined (%s); create it with mbot apply -f or pick an existing one",
			quoteList(unknown), existing)
	}
	bot := &resources.Bot{Metadata: resources.Metadata{Name: name}}
	if old, ok := set.Bots[name]; ok {
		bot.Metadata = old.Metadata
		bot.Spec.Traits = maps.Clone(old.Spec.Traits)
	}
	bot.Spec.Roles = unique(roles)
	delete(bot.Spec.Traits, LoginsTrait)
	if len(logins) > 0 {
		if bot.Spec.Traits == nil {
			bot.Spec.Traits = map[string][]string{}
		}
		bot.Spec.Traits[LoginsTrait] = unique(logins)
	}
	if len(bot.Spec.Traits) == 0 {
		bot.Spec.Traits = nil
	}
	return resources.MarshalYAMLDocuments([]resources.Document{bot.Document()})
}

func unique(items []string) []string {
	var out []string
	for _, s := range items {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	if len(q) == 1 {
		return q[0] + " is"
	}
	return strings.Join(q, ", ") + " are"
}
