package resources

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/mbot-dev/mbot/identity"
)

// Set is every resource the authority knows, by kind and name.
type Set struct {
	Roles              map[string]*Role
	Bots               map[string]*Bot
	JoinTokens         map[string]*JoinToken
	Databases          map[string]*Database
	KubernetesClusters map[string]*KubernetesCluster
	TrustedClusters    map[string]*TrustedCluster
	LeafClusters       map[string]*LeafCluster
}

// NewSet builds a set from parsed resources; a later resource of the same
// kind and name replaces an earlier one.
func NewSet(all []Resource) *Set {
	s := &Set{Roles: map[string]*Role{}, Bots: map[string]*Bot{}, JoinTokens: map[string]*JoinToken{},
		Databases: map[string]*Database{}, KubernetesClusters: map[string]*KubernetesCluster{},
		TrustedClusters: map[string]*TrustedCluster{}, LeafClusters: map[string]*LeafCluster{}}
	for _, r := range all {
		switch {
		case r.Role != nil:
			s.Roles[r.Role.Metadata.Name] = r.Role
		case r.Bot != nil:
			s.Bots[r.Bot.Metadata.Name] = r.Bot
		case r.JoinToken != nil:
			s.JoinTokens[r.JoinToken.Metadata.Name] = r.JoinToken
		case r.Database != nil:
			s.Databases[r.Database.Metadata.Name] = r.Database
		case r.KubernetesCluster != nil:
			s.KubernetesClusters[r.KubernetesCluster.Metadata.Name] = r.KubernetesCluster
		case r.TrustedCluster != nil:
			s.TrustedClusters[r.TrustedCluster.Metadata.Name] = r.TrustedCluster
		case r.LeafCluster != nil:
			s.LeafClusters[r.LeafCluster.Metadata.Name] = r.LeafCluster
		}
	}
	return s
}

// CheckReferences reports every bot whose role does not exist, every bot
// whose traits expand a role's login to something that is not a user name,
// and every join token whose bot does not exist.
func (s *Set) CheckReferences() error {
	for _, name := range slices.Sorted(maps.Keys(s.Bots)) {
		b := s.Bots[name]
		for _, role := range b.Spec.Roles {
			r, ok := s.Roles[role]
			if !ok {
				return fmt.Errorf("%s: bot %q has role %q, which is not defined; add a role resource named %q or remove it from spec.roles",
					b.Source, name, role, role)
			}
			if err := CheckExpandedLogins(b, r); err != nil {
				return err
			}
			if err := CheckExpandedGrants(b, r); err != nil {
				return err
			}
		}
	}
	pinned := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(s.TrustedClusters)) {
		tc := s.TrustedClusters[name]
		n := tc.Spec.Root.ClusterName
		if n == "" {
			continue
		}
		if other, ok := pinned[n]; ok {
			return fmt.Errorf("%s: trusted_cluster %q pins root cluster_name %q, which trusted_cluster %q pins already; one root cluster name is one trust: check which root really reports %q (GET /v1/cluster/ca) and remove or correct the other",
				tc.Source, name, n, other, n)
		}
		pinned[n] = name
	}
	for _, name := range slices.Sorted(maps.Keys(s.JoinTokens)) {
		t := s.JoinTokens[name]
		if _, ok := s.Bots[t.Spec.Bot]; !ok {
			return fmt.Errorf("%s: join_token %q names bot %q, which is not defined; add a bot resource named %q",
				t.Source, name, t.Spec.Bot, t.Spec.Bot)
		}
	}
	return nil
}

// CheckClusterNames refuses a bot named like a trusted_cluster or
// leaf_cluster (or like the root cluster a trusted_cluster pins), and a
// cluster resource named like a bot or like the admin identity (admin):
// defence in depth, so that no certificate a leaf's CA signs for a bot or
// user reads like the leaf itself (the root checks a tunnel by its
// tunnel identity, never by the CN). Checked at mbot apply and mbot bots add.
func (s *Set) CheckClusterNames(admin string) error {
	clusters := map[string]string{}
	for name, tc := range s.TrustedClusters {
		clusters[name] = fmt.Sprintf("%s: trusted_cluster %q", tc.Source, name)
		if pinned := tc.Spec.Root.ClusterName; pinned != "" {
			clusters[pinned] = fmt.Sprintf("%s: trusted_cluster %q (its spec.root.cluster_name)", tc.Source, name)
		}
	}
	for name, lc := range s.LeafClusters {
		clusters[name] = fmt.Sprintf("%s: leaf_cluster %q", lc.Source, name)
	}
	for _, name := range slices.Sorted(maps.Keys(clusters)) {
		if b, ok := s.Bots[name]; ok {
			return fmt.Errorf("bot %q (%s) is named like a cluster this authority trusts or serves (%s); bots, users and admins may not share a cluster's name: rename the bot",
				name, b.Source, clusters[name])
		}
		if name == admin {
			return fmt.Errorf("%s is named like this authority's admin identity (%q); bots, users and admins may not share a cluster's name: name the resource after the cluster's cluster_name, which may not be %q",
				clusters[name], admin, admin)
		}
	}
	return nil
}

// ClusterNamed says which trusted_cluster or leaf_cluster (or the root
// cluster a trusted_cluster pins) is named name, "" for none.
func (s *Set) ClusterNamed(name string) string {
	if _, ok := s.TrustedClusters[name]; ok {
		return "trusted_cluster " + name
	}
	if _, ok := s.LeafClusters[name]; ok {
		return "leaf_cluster " + name
	}
	for _, tn := range slices.Sorted(maps.Keys(s.TrustedClusters)) {
		if s.TrustedClusters[tn].Spec.Root.ClusterName == name {
			return "trusted_cluster " + tn + " (its spec.root.cluster_name)"
		}
	}
	return ""
}

// CheckRemovable refuses to remove kind/name while another resource refers
// to it, naming what does and what to do; the authority checks again when
// it removes the resource.
func (set *Set) CheckRemovable(kind, name string) error {
	var users []string
	switch kind {
	case KindRole:
		if _, ok := set.Roles[name]; !ok {
			return set.NotFound(kind, name)
		}
		for _, b := range slices.Sorted(maps.Keys(set.Bots)) {
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
	case KindBot:
		if _, ok := set.Bots[name]; !ok {
			return set.NotFound(kind, name)
		}
		for _, t := range slices.Sorted(maps.Keys(set.JoinTokens)) {
			if set.JoinTokens[t].Spec.Bot == name {
				users = append(users, "join_token/"+t)
			}
		}
		if len(users) > 0 {
			return fmt.Errorf("%s join(s) as bot %q; remove them first (mbot rm %s)",
				strings.Join(users, ", "), name, strings.Join(users, " "))
		}
	case KindJoinToken:
		if _, ok := set.JoinTokens[name]; !ok {
			return set.NotFound(kind, name)
		}
	case KindDatabase:
		// Nothing refers to a database by resource: outputs name it at issue time.
		if _, ok := set.Databases[name]; !ok {
			return set.NotFound(kind, name)
		}
	case KindKubernetesCluster:
		if _, ok := set.KubernetesClusters[name]; !ok {
			return set.NotFound(kind, name)
		}
	case KindTrustedCluster:
		if _, ok := set.TrustedClusters[name]; !ok {
			return set.NotFound(kind, name)
		}
	case KindLeafCluster:
		if _, ok := set.LeafClusters[name]; !ok {
			return set.NotFound(kind, name)
		}
	default:
		return fmt.Errorf("unknown resource kind %q", kind)
	}
	return nil
}

// NotFound is the error for a resource that does not exist; it names those that do.
func (set *Set) NotFound(kind, name string) error {
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

// CheckExpandedLogins checks every login that role's templates expand to
// with bot's traits: a trait value is free text, but once it is a login it
// must be a user name. The error names the bot, the role and the trait.
func CheckExpandedLogins(bot *Bot, role *Role) error {
	for _, tmpl := range role.Spec.Logins {
		trait, prefix, suffix, ok := splitTemplate(tmpl)
		if !ok || trait == "" {
			continue // literal logins are checked when the role is read
		}
		for i, v := range bot.Spec.Traits[trait] {
			if v == "" {
				continue // expands to nothing
			}
			l := prefix + v + suffix
			if err := identity.CheckLogin("login", l); err != nil {
				return fmt.Errorf("%s: bot %q: spec.traits.%s[%d] expands login %q of role %q (%s) to %s, which is not a valid user name: change the trait value to letters, digits, '.', '_' and '-' (at most %d characters), or stop using it in the role's logins",
					bot.Source, bot.Metadata.Name, trait, i, tmpl, role.Metadata.Name, role.Source, identity.Quote(identity.Truncate(l, 64)), identity.MaxLoginLen)
			}
		}
	}
	return nil
}
