package admin

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

// Login is one SSH login a role grants a bot.
type Login struct {
	Name string `json:"name"`
	// Template is the role's "{{internal.<trait>}}" entry that produced
	// the login, empty for a login the role lists literally.
	Template string `json:"template,omitempty"`
	// TraitOnly marks a login that comes from the bot's traits through a
	// template and that no role lists literally: the Machine ID FAQ's
	// {{internal.logins}} pitfall, where a trait set for one purpose is
	// granted by every role that uses the template.
	TraitOnly bool `json:"trait_only,omitempty"`
}

// RoleLogins is what one of a bot's roles grants it once templates expand.
type RoleLogins struct {
	Role string `json:"role"`
	// Defined is false when the bot names a role that does not exist.
	Defined bool    `json:"defined"`
	Logins  []Login `json:"logins"`
	// Empty lists the role's templates that expand to nothing for this
	// bot, because the trait they name is missing or empty.
	Empty []string `json:"empty_templates,omitempty"`
	// Grants are what the role grants other outputs, by role field
	// (db_users, kubernetes_groups, ...; resources.GrantFields), templates
	// expanded; fields the role leaves empty are absent.
	Grants map[string][]string `json:"grants,omitempty"`
}

// BotLogins expands, role by role, the logins each of bot's roles grants
// it on cluster ("" when unknown: {{mbot.cluster}} then expands to nothing).
// An {{mbot.*}} template that expands to nothing is not listed as empty:
// {{mbot.root_cluster}} does so for a cluster's own bots by design (it is
// for identities exchanged from a root), and no trait would fill it.
func BotLogins(set *resources.Set, bot *resources.Bot, cluster string) []RoleLogins {
	literal := literalLogins(set)
	traits := resources.IdentityTraits(bot.Spec.Traits, bot.Metadata.Name, cluster, "")
	out := make([]RoleLogins, 0, len(bot.Spec.Roles))
	for _, name := range bot.Spec.Roles {
		rl := RoleLogins{Role: name, Logins: []Login{}}
		role, ok := set.Roles[name]
		if !ok {
			out = append(out, rl)
			continue
		}
		rl.Defined = true
		for _, entry := range role.Spec.Logins {
			expanded := policy.ExpandTemplate(entry, traits)
			template := ""
			// The authority's {{mbot.*}} facts are no trait someone set for
			// another purpose: no pitfall, and never empty by mistake.
			variable := strings.HasPrefix(resources.TemplateTrait(entry), "mbot.")
			if isTemplate(entry) {
				template = entry
				if len(expanded) == 0 && !variable {
					rl.Empty = append(rl.Empty, entry)
				}
			}
			for _, l := range expanded {
				if slices.ContainsFunc(rl.Logins, func(x Login) bool { return x.Name == l }) {
					continue
				}
				rl.Logins = append(rl.Logins, Login{Name: l, Template: template, TraitOnly: template != "" && !variable && !literal[l]})
			}
		}
		for _, f := range resources.GrantFields {
			for _, entry := range f.Get(&role.Spec) {
				for _, v := range policy.ExpandTemplate(entry, traits) {
					if rl.Grants == nil {
						rl.Grants = map[string][]string{}
					}
					if !slices.Contains(rl.Grants[f.Name], v) {
						rl.Grants[f.Name] = append(rl.Grants[f.Name], v)
					}
				}
			}
		}
		out = append(out, rl)
	}
	return out
}

// literalLogins are the logins that some role lists as written, not through a template.
func literalLogins(set *resources.Set) map[string]bool {
	out := map[string]bool{}
	for _, r := range set.Roles {
		for _, l := range r.Spec.Logins {
			if !isTemplate(l) {
				out[l] = true
			}
		}
	}
	return out
}

func isTemplate(login string) bool { return strings.Contains(login, "{{") }

// Severity says whether a finding stops bots from working.
type Severity string

const (
	// Blocking: joins or sessions of the bot are refused until it is fixed.
	Blocking Severity = "error"
	// Warning: the bot works, but probably not as intended.
	Warning Severity = "warning"
)

// Finding is one problem mbot lint reports.
type Finding struct {
	Severity Severity `json:"severity"`
	Bot      string   `json:"bot,omitempty"`
	Role     string   `json:"role,omitempty"`
	// JoinToken names the join token a finding is about.
	JoinToken string `json:"join_token,omitempty"`
	Message   string `json:"message"`
}

// BotReport is a bot's roles and what each grants it.
type BotReport struct {
	Bot   string       `json:"bot"`
	Roles []RoleLogins `json:"roles"`
}

// Report is what mbot lint prints: every bot's logins and every finding.
type Report struct {
	Bots     []BotReport `json:"bots"`
	Findings []Finding   `json:"findings"`
}

// Blocking counts the findings that stop a bot from working.
func (r *Report) Blocking() int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == Blocking {
			n++
		}
	}
	return n
}

// Lint checks every bot against its roles and the cluster-wide settings:
// what each role grants it after template expansion, roles that a bot can
// never use (per-session MFA, device trust required), cluster-wide
// settings that no bot can satisfy, and templates that expand to nothing.
func Lint(set *resources.Set, settings *Settings) *Report {
	r := &Report{Bots: []BotReport{}, Findings: []Finding{}}
	for _, name := range slices.Sorted(maps.Keys(set.Bots)) {
		bot := set.Bots[name]
		cluster := ""
		if settings != nil {
			cluster = settings.ClusterName
		}
		roles := BotLogins(set, bot, cluster)
		r.Bots = append(r.Bots, BotReport{Bot: name, Roles: roles})
		r.Findings = append(r.Findings, lintBot(set, bot, roles, settings)...)
	}
	if settings != nil && settings.CAKeysAtRest == "clear" {
		r.Findings = append(r.Findings, Finding{Severity: Warning, Message: "the CA private keys are not sealed: they sit in the clear in " +
			"data_dir/mbot.db, and a copy or backup of it is enough to mint certificates. Make a key with `" + authority.GenKEKCommand +
			"`, set ca_key_encryption: {key_file: /etc/mbot/kek} in authority.yaml, stop the authority and run `mbot authority migrate-keys --config authority.yaml`"})
	}
	for _, name := range slices.Sorted(maps.Keys(set.JoinTokens)) {
		if f, ok := lintJoinToken(name, set.JoinTokens[name]); ok {
			r.Findings = append(r.Findings, f)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(set.Roles)) {
		if m := time.Duration(set.Roles[name].Spec.MaxTTL); m > identity.MaxBotTTL {
			r.Findings = append(r.Findings, Finding{Severity: Warning, Role: name, Message: fmt.Sprintf(
				"role %q sets max_ttl: %s, above the %s that bot certificates never exceed; bots get %s. Set max_ttl to %s or less",
				name, m, identity.MaxBotTTL, identity.MaxBotTTL, identity.MaxBotTTL)})
		}
		for _, p := range set.Roles[name].Spec.SPIFFEIDs {
			// Two probe names: a pattern matching both covers every bot's default ID.
			if !isTemplate(p) && identity.MatchSPIFFEPattern(p, "/bot/a") && identity.MatchSPIFFEPattern(p, "/bot/b") {
				r.Findings = append(r.Findings, Finding{Severity: Warning, Role: name, Message: fmt.Sprintf(
					"role %q grants spiffe_ids %q, which covers /bot/<bot>, the default SPIFFE ID of every bot: a bot holding the role can pass for any other bot "+
						"with services that authorize spiffe://<cluster>/bot/<bot>. Grant each bot its own /bot/<name>, or give shared IDs a path of their own (/ci/<team>/*)",
					name, p)})
			}
		}
	}
	return r
}

// lintJoinToken reports a join token whose allow rules pin no owner, with
// the message the authority refuses it with at start and at mbot apply: a
// store written before that rule holds such tokens, and the authority will
// not start until they are fixed. Other compile errors need the
// authority's environment (its cluster, its files) and are its to report.
func lintJoinToken(name string, tok *resources.JoinToken) (Finding, bool) {
	_, err := authority.CompileJoinToken(name, tok, &verify.Env{})
	var unscoped *policy.UnscopedRuleError
	if !errors.As(err, &unscoped) {
		return Finding{}, false
	}
	return Finding{Severity: Blocking, Bot: tok.Spec.Bot, JoinToken: name, Message: err.Error()}, true
}

func lintBot(set *resources.Set, bot *resources.Bot, roles []RoleLogins, settings *Settings) []Finding {
	name := bot.Metadata.Name
	var out []Finding
	var granted int
	for _, rl := range roles {
		if !rl.Defined {
			// Apply refuses this; a store edited by hand can still hold it.
			out = append(out, Finding{Severity: Blocking, Bot: name, Role: rl.Role, Message: fmt.Sprintf(
				"bot %q holds role %q, which is not defined: every join is refused. Create the role or remove it from the bot's spec.roles",
				name, rl.Role)})
			continue
		}
		role := set.Roles[rl.Role]
		if role.Spec.RequireSessionMFA {
			out = append(out, Finding{Severity: Blocking, Bot: name, Role: rl.Role, Message: fmt.Sprintf(
				"bot %q holds role %q, which sets require_session_mfa: true: a bot cannot answer an MFA challenge, so joins that use the role are refused at issue time. Keep per-session MFA on the roles people use and give the bot a role without it",
				name, rl.Role)})
		}
		if role.Spec.DeviceTrustMode == "required" {
			out = append(out, Finding{Severity: Blocking, Bot: name, Role: rl.Role, Message: fmt.Sprintf(
				"bot %q holds role %q, which sets device_trust_mode: required: a bot has no trusted device, so joins that use the role are refused at issue time. Set device_trust_mode: required-for-humans on the role, or give the bot a role without device trust",
				name, rl.Role)})
		}
		for _, tmpl := range rl.Empty {
			out = append(out, Finding{Severity: Warning, Bot: name, Role: rl.Role, Message: fmt.Sprintf(
				"role %q login %s expands to nothing for bot %q: %s",
				rl.Role, tmpl, name, emptyTemplateFix(tmpl, bot))})
		}
		granted += len(rl.Logins)
	}
	if granted == 0 && len(roles) > 0 {
		out = append(out, Finding{Severity: Warning, Bot: name, Message: fmt.Sprintf(
			"bot %q gets no SSH login from any of its roles (%s): its certificates log in nowhere", name, strings.Join(bot.Spec.Roles, ", "))})
	}
	if settings != nil {
		out = append(out, lintClusterSettings(set, bot, settings)...)
	}
	return out
}

// lintClusterSettings reports authority.yaml settings meant for people
// that no bot can satisfy. The authority does not enforce them at join
// time; what does (an access proxy, a login gate) would refuse the bot's
// sessions, so they are reported instead of breaking at connect time.
func lintClusterSettings(set *resources.Set, bot *resources.Bot, settings *Settings) []Finding {
	name := bot.Metadata.Name
	var out []Finding
	if settings.RequireSessionMFA {
		out = append(out, Finding{Severity: Blocking, Bot: name, Message: fmt.Sprintf(
			"authority.yaml sets require_session_mfa: true for the whole cluster, which bot %q cannot satisfy: it cannot answer an MFA challenge, so its sessions would be refused. Remove require_session_mfa from authority.yaml and set require_session_mfa: true on the roles people use instead",
			name)})
	}
	if settings.DeviceTrustMode == "required" {
		// A role of the bot that sets its own device trust mode below
		// "required" opts the bot's sessions out of the cluster-wide mode.
		var optOut []string
		for _, rn := range bot.Spec.Roles {
			if r, ok := set.Roles[rn]; ok && r.Spec.DeviceTrustMode != "" && r.Spec.DeviceTrustMode != "required" {
				optOut = append(optOut, rn)
			}
		}
		if len(optOut) == 0 {
			out = append(out, Finding{Severity: Blocking, Bot: name, Message: fmt.Sprintf(
				"authority.yaml sets device_trust_mode: required for the whole cluster, which bot %q cannot satisfy: it has no trusted device, and none of its roles (%s) sets a device_trust_mode of its own. Set device_trust_mode: required-for-humans in authority.yaml, or device_trust_mode: required-for-humans on the bot's roles",
				name, strings.Join(bot.Spec.Roles, ", "))})
		}
	}
	return out
}

// emptyTemplateFix says why a template expanded to nothing for bot and what to change.
func emptyTemplateFix(tmpl string, bot *resources.Bot) string {
	name := bot.Metadata.Name
	start, end := strings.Index(tmpl, "{{"), strings.Index(tmpl, "}}")
	var expr, trait string
	if start >= 0 && end > start {
		expr = strings.TrimSpace(tmpl[start+2 : end])
		_, trait, _ = strings.Cut(expr, ".")
	}
	if trait == "" || strings.Count(tmpl, "{{") > 1 || (!strings.HasPrefix(expr, "internal.") && !strings.HasPrefix(expr, "external.")) {
		return "the template is malformed; write one {{internal.<trait>}} per login"
	}
	why := fmt.Sprintf("the bot has no trait %s", trait)
	switch vals, ok := bot.Spec.Traits[trait]; {
	case ok && len(vals) > 0:
		why = fmt.Sprintf("its trait %s has only empty values", trait)
	case len(bot.Spec.Traits) > 0:
		why += fmt.Sprintf(" (it has %s)", strings.Join(slices.Sorted(maps.Keys(bot.Spec.Traits)), ", "))
	}
	fix := fmt.Sprintf("add traits: {%s: [...]} to bot %q", trait, name)
	if trait == LoginsTrait {
		fix = fmt.Sprintf("set it with mbot bots add %s --roles %s --logins ...", name, strings.Join(bot.Spec.Roles, ","))
	}
	return why + ". To grant logins through it, " + fix + "; otherwise remove the template from the role"
}
