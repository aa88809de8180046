package resources

import (
	"fmt"
	"strings"

	"github.com/mbot-dev/mbot/identity"
)

// Role fields that grant values to output types other than identity (SPEC
// §7). Each takes {{internal.<trait>}} templates, as logins does.
const (
	FieldDBUsers          = "db_users"
	FieldDBNames          = "db_names"
	FieldKubernetesUsers  = "kubernetes_users"
	FieldKubernetesGroups = "kubernetes_groups"
	FieldSPIFFEIDs        = "spiffe_ids"
	FieldDNSSANs          = "dns_sans"
	FieldJWTAudiences     = "jwt_audiences"
	FieldHostNames        = "host_names"
	// FieldDBServerNames grants database_server outputs their names.
	FieldDBServerNames = "db_server_names"
)

// GrantField is one of those role fields: its name, what one value is
// called in messages, its rule and where the role keeps it.
type GrantField struct {
	Name string
	// What names one value: "database user".
	What string
	// Check is the rule every value obeys, literal or expanded.
	Check func(what, value string) error
	Get   func(*RoleSpec) []string
}

// GrantFields lists the role fields that grant output values, in the order
// mbot get and mbot lint show them.
var GrantFields = []GrantField{
	{FieldDBUsers, "database user", identity.CheckLogin, func(s *RoleSpec) []string { return s.DBUsers }},
	{FieldDBNames, "database name", identity.CheckDBName, func(s *RoleSpec) []string { return s.DBNames }},
	{FieldKubernetesUsers, "Kubernetes user", identity.CheckKubernetesName, func(s *RoleSpec) []string { return s.KubernetesUsers }},
	{FieldKubernetesGroups, "Kubernetes group", identity.CheckKubernetesName, func(s *RoleSpec) []string { return s.KubernetesGroups }},
	{FieldSPIFFEIDs, "SPIFFE ID path", identity.CheckSPIFFEPattern, func(s *RoleSpec) []string { return s.SPIFFEIDs }},
	{FieldDNSSANs, "DNS SAN", identity.CheckDNSPattern, func(s *RoleSpec) []string { return s.DNSSANs }},
	{FieldJWTAudiences, "JWT audience", identity.CheckAudience, func(s *RoleSpec) []string { return s.JWTAudiences }},
	{FieldHostNames, "host name", identity.CheckDNSPattern, func(s *RoleSpec) []string { return s.HostNames }},
	{FieldDBServerNames, "database server name", identity.CheckServerNamePattern, func(s *RoleSpec) []string { return s.DBServerNames }},
}

// checkGrantValue checks one entry of a grant field as written: a literal
// value obeys the field's rule; a template's literal text with the
// template replaced by "x" must too, so that whatever a trait value
// expands it to is checked only for its own part.
func (f GrantField) checkGrantValue(what, value string) error {
	if !strings.Contains(value, "{{") && !strings.Contains(value, "}}") {
		return f.Check(what, value)
	}
	shape := loginTemplateRe.ReplaceAllString(value, "x")
	if err := f.Check(what, shape); err != nil {
		return fmt.Errorf("%s %s is not a valid template: the text around {{internal.<trait>}} must form a %s with it: %v",
			what, identity.Quote(identity.Truncate(value, 64)), f.What, err)
	}
	return nil
}

// CheckExpandedGrants checks every value that role's templates expand to
// with bot's traits, field by field, naming the bot, role and trait.
func CheckExpandedGrants(bot *Bot, role *Role) error {
	for _, f := range GrantFields {
		for _, tmpl := range f.Get(&role.Spec) {
			trait, prefix, suffix, ok := splitTemplate(tmpl)
			if !ok || trait == "" {
				continue // literal values are checked when the role is read
			}
			for i, v := range bot.Spec.Traits[trait] {
				if v == "" {
					continue
				}
				if err := f.Check(f.What, prefix+v+suffix); err != nil {
					return fmt.Errorf("%s: bot %q: spec.traits.%s[%d] expands %s %q of role %q (%s): %v; change the trait value or stop using it in the role's %s",
						bot.Source, bot.Metadata.Name, trait, i, f.Name, tmpl, role.Metadata.Name, role.Source, err, f.Name)
				}
			}
		}
	}
	return nil
}
