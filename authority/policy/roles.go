package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
)

// DefaultTTL is the certificate lifetime when a joiner asks for none.
const DefaultTTL = time.Hour

// Grant is what one output of a bot receives.
type Grant struct {
	Roles  []string
	Logins []string
	TTL    time.Duration
	// SSHExtensions are the permit-* extensions of the SSH certificate.
	SSHExtensions map[string]string
	// CapNote says why the TTL is lower than asked, when it is.
	CapNote string
	// Values are what the roles grant to outputs other than identity, by
	// role field (resources.GrantFields): templates expanded from the bot's
	// traits, each checked, duplicates removed, in role order.
	Values map[string][]string
}

// Granted returns the values the grant holds for a role field (resources.FieldDBUsers...).
func (g *Grant) Granted(field string) []string { return g.Values[field] }

// ResolveGrant picks the roles an output asks for (all of the bot's when it
// names none), refuses roles a bot may not use, expands their logins from
// the bot's traits and caps the lifetime by the bot cap and every role's max_ttl.
func ResolveGrant(set *resources.Set, bot *resources.Bot, requested []string, ttl, botCap time.Duration) (*Grant, error) {
	name := bot.Metadata.Name
	roles := requested
	if len(roles) == 0 {
		roles = bot.Spec.Roles
	}
	g := &Grant{TTL: ttl, Values: map[string][]string{}}
	if g.TTL <= 0 {
		g.TTL = DefaultTTL
	}
	limit, limitBy := botCap, "the authority's bot cap"
	var specs []*resources.RoleSpec
	for _, rn := range roles {
		if !slices.Contains(bot.Spec.Roles, rn) {
			return nil, identity.Errorf(identity.CodeRoleDenied, "bot %q does not hold role %q; it holds %s. Ask for one of those roles or add %q to the bot's spec.roles",
				name, rn, strings.Join(bot.Spec.Roles, ", "), rn)
		}
		role, ok := set.Roles[rn]
		if !ok {
			return nil, identity.Errorf(identity.CodeRoleDenied, "bot %q holds role %q, which is not defined on the authority; create the role or remove it from the bot", name, rn)
		}
		if role.Spec.RequireSessionMFA {
			return nil, identity.Errorf(identity.CodeRoleDenied, "role %q sets require_session_mfa: true, which a bot cannot satisfy; keep per-session MFA on the roles people use and give bot %q a role without it",
				rn, name)
		}
		if role.Spec.DeviceTrustMode == "required" {
			return nil, identity.Errorf(identity.CodeRoleDenied, "role %q sets device_trust_mode: required, which a bot cannot satisfy; use device_trust_mode: required-for-humans on that role, or give bot %q a role without device trust",
				rn, name)
		}
		if m := time.Duration(role.Spec.MaxTTL); m > 0 && m < limit {
			limit, limitBy = m, fmt.Sprintf("role %q max_ttl", rn)
		}
		g.Roles = append(g.Roles, rn)
		specs = append(specs, &role.Spec)
		for _, login := range role.Spec.Logins {
			for _, l := range ExpandTemplate(login, bot.Spec.Traits) {
				// Checked when the resources were loaded; checked again here, as
				// the last step before a principal is signed, so that no path
				// (a stored resource from an older version) skips it.
				if err := identity.CheckLogin("login", l); err != nil {
					return nil, identity.Errorf(identity.CodeRoleDenied, "role %q login %q expands to %s for bot %q, which is not a valid user name; fix the role's logins or the bot's traits",
						rn, login, identity.Quote(identity.Truncate(l, 64)), name)
				}
				if !slices.Contains(g.Logins, l) {
					g.Logins = append(g.Logins, l)
				}
			}
		}
		for _, f := range resources.GrantFields {
			for _, tmpl := range f.Get(&role.Spec) {
				for _, v := range ExpandTemplate(tmpl, bot.Spec.Traits) {
					// Checked at load; checked again as the last step before
					// the value reaches a certificate or a file.
					if err := f.Check(f.What, v); err != nil {
						return nil, identity.Errorf(identity.CodeRoleDenied, "role %q %s entry %q expands to %s for bot %q, which is refused (%v); fix the role's %s or the bot's traits",
							rn, f.Name, identity.Truncate(tmpl, 64), identity.Quote(identity.Truncate(v, 64)), name, err, f.Name)
					}
					if !slices.Contains(g.Values[f.Name], v) {
						g.Values[f.Name] = append(g.Values[f.Name], v)
					}
				}
			}
		}
	}
	g.SSHExtensions = SSHExtensions(specs...)
	if g.TTL > limit {
		g.CapNote = fmt.Sprintf("requested TTL %s is above %s (%s); certificates are valid for %s", g.TTL, limitBy, limit, limit)
		g.TTL = limit
	}
	return g, nil
}

// SSHExtensions returns the permit-* extensions of an SSH certificate for
// roles. A permission is granted when any of the roles grants it (as in
// Teleport, where these options combine by union); a role that leaves one
// unset grants its default: permit_pty true, the others false. No role, no
// permission.
func SSHExtensions(roles ...*resources.RoleSpec) map[string]string {
	ext := map[string]string{}
	for _, r := range roles {
		for _, p := range []struct {
			set  *bool
			def  bool
			name string
		}{
			{r.PermitPTY, true, "permit-pty"},
			{r.PermitPortForwarding, false, "permit-port-forwarding"},
			{r.PermitAgentForwarding, false, "permit-agent-forwarding"},
			{r.PermitX11Forwarding, false, "permit-X11-forwarding"},
			{r.PermitUserRC, false, "permit-user-rc"},
		} {
			if (p.set == nil && p.def) || (p.set != nil && *p.set) {
				ext[p.name] = ""
			}
		}
	}
	return ext
}

// ExpandTemplate expands "{{internal.<trait>}}" (with optional literal text
// around it) once per trait value; see resources.ExpandTemplate.
func ExpandTemplate(s string, traits map[string][]string) []string {
	return resources.ExpandTemplate(s, traits)
}
