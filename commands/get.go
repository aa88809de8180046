package commands

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"
)

func getCommand() *cli.Command {
	return &cli.Command{
		Name:      "get",
		Usage:     "list roles, bots, join tokens, databases, kubernetes clusters, trusted clusters, leaf clusters, bot instances or locks",
		ArgsUsage: "roles|bots|join_tokens|databases|kubernetes_clusters|trusted_clusters|leaf_clusters [NAME] | bot_instances [BOT] | locks",
		Description: `Lists the resources in effect. For bots, the table shows what each role
grants the bot once "{{internal.<trait>}}" templates expand from its traits
(logins, and below them db_users, db_names, kubernetes_users,
kubernetes_groups, spiffe_ids, dns_sans, jwt_audiences, host_names), and
marks logins that only a trait grants. On a root authority, leaf_clusters
shows whether each leaf's tunnel is connected and when it was last seen. -o yaml and -o json print the
resources in a form that mbot apply -f reads back. Examples:

   mbot get bots --config authority.yaml
   mbot get roles deploy -o yaml
   mbot get join_tokens -o json > tokens.json && mbot apply -f tokens.json

mbot get bot_instances [BOT] lists the token-joined runners (instances) of
every bot, or of BOT: instance ID, bot, join token, first join (time and
address), last renewal, generation and state (active, or locked when a copy
of that instance's identity was presented; mbot unlock bot_instance/ID).

mbot get locks lists the locks in force: what each locks (KIND/NAME, or
claim/NAME=VALUE), who set it (an admin, or the authority on seeing a copied
identity), when, why and until when (mbot lock, mbot unlock).`,
		Flags: append(adminFlags(), outputFlag("text", "yaml", "json")),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			format, err := outputFormat(c, "text", "yaml", "json")
			if err != nil {
				return err
			}
			if len(args) < 1 || len(args) > 2 {
				return usagef("usage: mbot get roles|bots|join_tokens|databases|kubernetes_clusters|trusted_clusters|leaf_clusters [NAME], or mbot get bot_instances [BOT]")
			}
			if args[0] == "locks" || args[0] == "lock" {
				if len(args) != 1 {
					return usagef("usage: mbot get locks")
				}
				return getLocks(c, format)
			}
			if args[0] == "bot_instances" || args[0] == "bot_instance" {
				return getBotInstances(c, format, args[1:])
			}
			kind, err := parseKind(args[0])
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			client, err := openAdmin(c)
			if err != nil {
				return err
			}
			defer client.Close()
			set, err := client.Resources(c.Context)
			if err != nil {
				return err
			}
			docs := set.Documents(kind)
			if name != "" {
				docs = selectDocument(docs, name)
				if len(docs) == 0 {
					return set.NotFound(kind, name)
				}
			}
			switch format {
			case "yaml":
				out, err := resources.MarshalYAMLDocuments(docs)
				if err != nil {
					return err
				}
				_, err = os.Stdout.Write(out)
				return err
			case "json":
				if name != "" {
					return writeJSON(os.Stdout, docs[0])
				}
				if docs == nil {
					docs = []resources.Document{}
				}
				return writeJSON(os.Stdout, docs)
			}
			if kind == resources.KindLeafCluster {
				tunnels, err := client.LeafTunnels(c.Context)
				if err != nil {
					return err
				}
				return writeLeafClusters(os.Stdout, set, docs, tunnels, time.Now())
			}
			if kind == resources.KindJoinToken {
				used, err := usedTokens(c, client)
				if err != nil {
					return err
				}
				return writeJoinTokens(os.Stdout, set, docs, used, time.Now())
			}
			if kind == resources.KindBot {
				settings, err := client.Settings(c.Context)
				if err != nil {
					return err
				}
				return writeBots(os.Stdout, set, docs, settings.ClusterName)
			}
			return writeTable(os.Stdout, set, kind, docs)
		},
	}
}

// usedTokens are the single-use (method token) join tokens a join was
// admitted with, and when: the audit records each such join in the same
// transaction that spends the token.
func usedTokens(c *cli.Context, client admin.Client) (map[string]time.Time, error) {
	events, err := client.Audit(c.Context, store.AuditFilter{})
	if err != nil {
		return nil, fmt.Errorf("reading the audit log for the join tokens' use: %w", err)
	}
	used := map[string]time.Time{}
	for _, ev := range events {
		if ev.Event == "join" && ev.Allowed && ev.Method == verify.TokenMethod && ev.JoinToken != "" {
			if t, seen := used[ev.JoinToken]; !seen || ev.Time.Before(t) {
				used[ev.JoinToken] = ev.Time
			}
		}
	}
	return used, nil
}

// writeJoinTokens lists join tokens; a single-use one says whether it was
// used, or expired, and when it expires.
func writeJoinTokens(w io.Writer, set *resources.Set, docs []resources.Document, used map[string]time.Time, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBOT\tMETHOD\tSINGLE USE\tALLOW")
	for _, d := range docs {
		tok := set.JoinTokens[d.Metadata.Name]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", displayName(d.Metadata.Name), displayName(tok.Spec.Bot), displayName(tok.Spec.Method),
			singleUseState(tok, used, now), orNone(allowRules(tok.Spec.Section())))
	}
	return tw.Flush()
}

// singleUseState is "used 2026-...", "expired 2026-..." or "unused, expires
// 2026-... (in 42m)" for a method token join token, "-" for the others.
func singleUseState(tok *resources.JoinToken, used map[string]time.Time, now time.Time) string {
	if tok.Spec.Method != verify.TokenMethod {
		return "-"
	}
	if t, ok := used[tok.Metadata.Name]; ok {
		return "used " + t.UTC().Format(time.RFC3339)
	}
	n := resources.Lookup(tok.Spec.Section(), "expires")
	if n == nil {
		return "unused"
	}
	expires, err := time.Parse(time.RFC3339, n.Value)
	if err != nil {
		return "unused, expires " + identity.Quote(n.Value)
	}
	if !now.Before(expires) {
		return "expired " + expires.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("unused, expires %s (in %s)", expires.UTC().Format(time.RFC3339), expires.Sub(now).Round(time.Minute))
}

func selectDocument(docs []resources.Document, name string) []resources.Document {
	for _, d := range docs {
		if d.Metadata.Name == name {
			return []resources.Document{d}
		}
	}
	return nil
}

// writeBots prints bots with what their roles grant them on cluster, templates expanded.
func writeBots(w io.Writer, set *resources.Set, docs []resources.Document, cluster string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	traitOnly := false
	fmt.Fprintln(tw, "NAME\tROLE\tLOGINS (templates expanded)")
	for _, d := range docs {
		bot := set.Bots[d.Metadata.Name]
		for i, rl := range admin.BotLogins(set, bot, cluster) {
			name := ""
			if i == 0 {
				name = displayName(bot.Metadata.Name)
			}
			logins, marked := formatLogins(rl)
			traitOnly = traitOnly || marked
			fmt.Fprintf(tw, "%s\t%s\t%s\n", name, displayName(rl.Role), logins)
			for _, g := range formatGrants(rl) {
				fmt.Fprintf(tw, "\t\t%s\n", g)
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if traitOnly {
		fmt.Fprint(w, traitOnlyNote)
	}
	return nil
}

// writeTable prints docs of kind as a table.
func writeTable(w io.Writer, set *resources.Set, kind string, docs []resources.Document) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch kind {
	case resources.KindRole:
		fmt.Fprintln(tw, "NAME\tLOGINS\tMAX TTL\tSESSION MFA\tDEVICE TRUST")
		for _, d := range docs {
			spec := set.Roles[d.Metadata.Name].Spec
			maxTTL, mfa, trust := "-", "-", "-"
			if spec.MaxTTL > 0 {
				maxTTL = time.Duration(spec.MaxTTL).String()
			}
			if spec.RequireSessionMFA {
				mfa = "required"
			}
			if spec.DeviceTrustMode != "" {
				trust = spec.DeviceTrustMode
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", displayName(d.Metadata.Name), orNone(strings.Join(spec.Logins, ", ")), maxTTL, mfa, trust)
		}
	case resources.KindBot:
		return writeBots(w, set, docs, "")
	case resources.KindDatabase:
		fmt.Fprintln(tw, "NAME\tPROTOCOL\tURI\tSERVER CA")
		for _, d := range docs {
			spec := set.Databases[d.Metadata.Name].Spec
			ca := "spec.ca"
			if spec.CAIssuedByAuthority {
				ca = "issued by this authority (database-server-ca)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", displayName(d.Metadata.Name), identity.Printable(spec.Protocol), identity.Printable(spec.URI), ca)
		}
	case resources.KindKubernetesCluster:
		fmt.Fprintln(tw, "NAME\tAPI SERVER")
		for _, d := range docs {
			spec := set.KubernetesClusters[d.Metadata.Name].Spec
			fmt.Fprintf(tw, "%s\t%s\n", displayName(d.Metadata.Name), identity.Printable(spec.APIServer))
		}
	case resources.KindTrustedCluster:
		fmt.Fprintln(tw, "NAME\tENABLED\tROOT\tCA PIN\tROLE MAP")
		for _, d := range docs {
			spec := set.TrustedClusters[d.Metadata.Name].Spec
			var maps []string
			for _, m := range spec.RoleMap {
				maps = append(maps, identity.Printable(m.Remote)+" -> "+identity.Printable(strings.Join(m.Local, ",")))
			}
			enabled := "no"
			if spec.Enabled {
				enabled = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", displayName(d.Metadata.Name), enabled, identity.Printable(spec.Root.URL), spec.Root.CAPin, orNone(strings.Join(maps, "; ")))
		}
	case resources.KindJoinToken:
		fmt.Fprintln(tw, "NAME\tBOT\tMETHOD\tALLOW")
		for _, d := range docs {
			tok := set.JoinTokens[d.Metadata.Name]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", displayName(d.Metadata.Name), displayName(tok.Spec.Bot), displayName(tok.Spec.Method), orNone(allowRules(tok.Spec.Section())))
		}
	}
	return tw.Flush()
}

// writeLeafClusters lists a root's leaf clusters with their tunnels: a
// tunnel recorded as attached but not seen for a while is one whose root
// stopped without saying so.
func writeLeafClusters(w io.Writer, set *resources.Set, docs []resources.Document, tunnels map[string]store.LeafTunnel, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCONNECTED\tLAST SEEN\tCA PIN")
	for _, d := range docs {
		t, seen := tunnels[d.Metadata.Name]
		connected, last := "no", "never"
		if seen {
			last = t.LastSeen.UTC().Format(time.RFC3339)
			if t.Connected && now.Sub(t.LastSeen) < leafSeenWithin {
				connected = "yes"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", displayName(d.Metadata.Name), connected, last, set.LeafClusters[d.Metadata.Name].Spec.CAPin)
	}
	return tw.Flush()
}

// leafSeenWithin is how recently a root must have recorded an attached
// tunnel for mbot get leaf_clusters to call it connected (it records
// every few seconds).
const leafSeenWithin = 15 * time.Second

// traitOnlyNote explains the "*" of formatLogins.
const traitOnlyNote = `
* granted only through a trait template such as {{internal.logins}}: no role lists this
  login itself, so every role of the bot that uses the template grants it
`

// formatLogins lists what a role grants a bot, marking trait-only logins
// with "*"; marked says whether it marked any.
func formatLogins(rl admin.RoleLogins) (text string, marked bool) {
	if !rl.Defined {
		return "(role not defined)", false
	}
	var parts []string
	for _, l := range rl.Logins {
		if l.TraitOnly {
			parts = append(parts, l.Name+"*")
			marked = true
		} else {
			parts = append(parts, l.Name)
		}
	}
	for _, tmpl := range rl.Empty {
		parts = append(parts, tmpl+" (expands to nothing)")
	}
	return orNone(strings.Join(parts, ", ")), marked
}

// formatGrants lists what a role grants a bot's other outputs, one
// "field: value, value" line per role field it sets.
func formatGrants(rl admin.RoleLogins) []string {
	var lines []string
	for _, f := range resources.GrantFields {
		values := rl.Grants[f.Name]
		if len(values) == 0 {
			continue
		}
		shown := make([]string, len(values))
		for i, v := range values {
			shown[i] = identity.Printable(v)
		}
		lines = append(lines, f.Name+": "+strings.Join(shown, ", "))
	}
	return lines
}

// allowRules summarizes a join token's allow rules as field=value lists,
// rules separated by " | ".
func allowRules(section *yaml.Node) string {
	allow := resources.Lookup(section, "allow")
	if allow == nil || allow.Kind != yaml.SequenceNode {
		return ""
	}
	var rules []string
	for _, rule := range allow.Content {
		var fields []string
		for i := 0; i+1 < len(rule.Content); i += 2 {
			val := rule.Content[i+1]
			v := val.Value
			if val.Kind == yaml.SequenceNode {
				var items []string
				for _, item := range val.Content {
					items = append(items, identity.Printable(item.Value))
				}
				v = strings.Join(items, ",")
			} else {
				v = identity.Printable(v)
			}
			fields = append(fields, identity.Printable(rule.Content[i].Value)+"="+v)
		}
		rules = append(rules, strings.Join(fields, " "))
	}
	return strings.Join(rules, " | ")
}

// displayName returns a resource name as it is, or quoted when it is not a
// valid name: a resource stored by an earlier version, which no longer loads,
// is listed under its stored name so that it can be removed.
func displayName(name string) string {
	if identity.CheckName("", name) == nil {
		return name
	}
	return identity.Quote(name)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// getLocks prints every lock.
func getLocks(c *cli.Context, format string) error {
	client, err := openAdmin(c)
	if err != nil {
		return err
	}
	defer client.Close()
	list, err := client.Locks(c.Context)
	if err != nil {
		return err
	}
	return writeListAs(os.Stdout, format, list, writeLocks)
}

// writeListAs prints list as YAML or JSON when format names one, else as
// table prints it.
func writeListAs[T any](w io.Writer, format string, list T, table func(io.Writer, T) error) error {
	switch format {
	case "yaml":
		out, err := yaml.Marshal(list)
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	case "json":
		return writeJSON(w, list)
	}
	return table(w, list)
}

// writeLocks prints locks as a table; reasons and names come from the
// store, so each is quoted unless it prints as itself.
func writeLocks(w io.Writer, list []admin.Lock) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "no locks")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LOCK\tLOCKED BY\tSINCE\tEXPIRES\tREASON")
	for _, l := range list {
		expires := "never"
		if !l.Expires.IsZero() {
			expires = l.Expires.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", identity.Printable(l.Name()), identity.Printable(l.LockedBy), l.Since.Format(time.RFC3339),
			expires, identity.Printable(identity.Truncate(l.Reason, 120)))
	}
	return tw.Flush()
}

// getBotInstances prints the instances of every bot, or of the bot in args.
func getBotInstances(c *cli.Context, format string, args []string) error {
	bot := ""
	if len(args) == 1 {
		bot = args[0]
	}
	client, err := openAdmin(c)
	if err != nil {
		return err
	}
	defer client.Close()
	list, err := client.BotInstances(c.Context, bot)
	if err != nil {
		return err
	}
	return writeListAs(os.Stdout, format, list, writeInstances)
}

// writeInstances prints bot instances as a table; every value comes from
// the store, so each is quoted unless it is a plain name.
func writeInstances(w io.Writer, list []admin.BotInstance) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tBOT\tJOIN TOKEN\tFIRST JOIN\tRUNNER\tLAST RENEWAL\tGENERATION\tSTATE")
	for _, in := range list {
		first, last := "-", "-"
		if !in.FirstJoin.IsZero() {
			first = in.FirstJoin.Format(time.RFC3339)
		}
		if !in.LastRenewal.IsZero() {
			last = in.LastRenewal.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", displayName(in.ID), displayName(in.Bot), displayName(in.JoinToken),
			first, orNone(identity.Printable(identity.Truncate(in.Runner, 64))), last, in.Generation, in.State)
	}
	return tw.Flush()
}
