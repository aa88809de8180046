package admin

import (
	"fmt"
	"strings"

	"github.com/mbot-dev/mbot/authority/resources"
)

// CheckRemovable refuses to remove kind/name while another resource refers
// to it, naming what does and what to do; the authority checks again when
// it removes the resource.
func CheckRemovable(set *resources.Set, kind, name string) error {
	var users []string
	switch kind {
	case resources.KindRole:
		if _, ok := set.Roles[name]; !ok {
			return NotFound(set, kind, name)
		}
		for _, b := range sortedNames(set.Bots) {
			for _, r := range set.Bots[b].Spec.Roles {
				if r == name {
					users = append(users, b)
				}
			}
		}
		if len(users) > 0 {
			return fmt.Errorf("role %q is held by bot %s; take the role out of their spec.roles (mbot bots add NAME --roles ...) or remove them first",
				name, strings.Join(users, ", "))
		}
	case resources.KindBot:
		if _, ok := set.Bots[name]; !ok {
			return NotFound(set, kind, name)
		}
		for _, t := range sortedNames(set.JoinTokens) {
			if set.JoinTokens[t].Spec.Bot == name {
				users = append(users, "join_token/"+t)
			}
		}
		if len(users) > 0 {
			return fmt.Errorf("%s join(s) as bot %q; remove them first (mbot rm %s)",
				strings.Join(users, ", "), name, strings.Join(users, " "))
		}
	case resources.KindJoinToken:
		if _, ok := set.JoinTokens[name]; !ok {
			return NotFound(set, kind, name)
		}
	default:
		return fmt.Errorf("unknown resource kind %q", kind)
	}
	return nil
}

// NotFound is the error for a resource that does not exist; it names those that do.
func NotFound(set *resources.Set, kind, name string) error {
	var names []string
	for _, d := range set.Documents(kind) {
		names = append(names, d.Metadata.Name)
	}
	existing := "there are none"
	if len(names) > 0 {
		existing = "existing: " + strings.Join(names, ", ")
	}
	return fmt.Errorf("there is no %s named %q (%s)", kind, name, existing)
}
