package resources

import (
	"fmt"
	"sort"
)

// Set is every role, bot and join token the authority knows, by name.
type Set struct {
	Roles      map[string]*Role
	Bots       map[string]*Bot
	JoinTokens map[string]*JoinToken
}

// NewSet builds a set from parsed resources; a later resource of the same
// kind and name replaces an earlier one.
func NewSet(all []Resource) *Set {
	s := &Set{Roles: map[string]*Role{}, Bots: map[string]*Bot{}, JoinTokens: map[string]*JoinToken{}}
	for _, r := range all {
		switch {
		case r.Role != nil:
			s.Roles[r.Role.Metadata.Name] = r.Role
		case r.Bot != nil:
			s.Bots[r.Bot.Metadata.Name] = r.Bot
		case r.JoinToken != nil:
			s.JoinTokens[r.JoinToken.Metadata.Name] = r.JoinToken
		}
	}
	return s
}

// CheckReferences reports every bot whose role does not exist and every
// join token whose bot does not exist.
func (s *Set) CheckReferences() error {
	for _, name := range sortedKeys(s.Bots) {
		b := s.Bots[name]
		for _, role := range b.Spec.Roles {
			if _, ok := s.Roles[role]; !ok {
				return fmt.Errorf("%s: bot %q has role %q, which is not defined; add a role resource named %q or remove it from spec.roles",
					b.Source, name, role, role)
			}
		}
	}
	for _, name := range sortedKeys(s.JoinTokens) {
		t := s.JoinTokens[name]
		if _, ok := s.Bots[t.Spec.Bot]; !ok {
			return fmt.Errorf("%s: join_token %q names bot %q, which is not defined; add a bot resource named %q",
				t.Source, name, t.Spec.Bot, t.Spec.Bot)
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
