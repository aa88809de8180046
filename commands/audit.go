package commands

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
	"github.com/urfave/cli/v2"
)

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "list recent joins, signings and resource changes, newest first",
		Description: `Every join is recorded, admitted or refused, with the bot, join token, method,
the identifying claims of the proof (repository, ref, project, ...) and the
serials of the certificates issued, or the reason code of the refusal. No
token, key or certificate is ever recorded. Examples:

   mbot audit --config authority.yaml --since 1h
   mbot audit --denied --bot deployer
   mbot audit --serial tls:3F2A9C01...   # the join that got this certificate (a server's log shows the serial)
   mbot audit -o json --limit 0 | jq '.[] | select(.code == "rule_mismatch") | .claims'`,
		Flags: append(adminFlags(),
			&cli.DurationFlag{Name: "since", Usage: "only records from this long ago or later, such as 1h or 30m (default: all records)"},
			&cli.StringFlag{Name: "bot", Usage: "only records of this bot"},
			&cli.BoolFlag{Name: "denied", Usage: "only refusals"},
			&cli.StringFlag{Name: "serial", Usage: "only the records of the certificate with this serial (ssh:DECIMAL or tls:HEX as the SERIALS column shows it, or bare): the join, renewal or exchange that issued it"},
			&cli.IntFlag{Name: "limit", Value: 100, Usage: "at most this many records (0: all)"},
			outputFlag("text", "json")),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			if len(args) > 0 {
				return usagef("mbot audit takes no arguments, got %q", args)
			}
			format, err := outputFormat(c, "text", "json")
			if err != nil {
				return err
			}
			if c.Duration("since") < 0 || c.Int("limit") < 0 {
				return usagef("--since and --limit must not be negative")
			}
			filter := store.AuditFilter{Bot: c.String("bot"), DeniedOnly: c.Bool("denied"), Limit: c.Int("limit")}
			if s := c.String("serial"); s != "" {
				if filter.Serial, err = locks.NormalizeSerial(s); err != nil {
					return usagef("--serial: %v", err)
				}
			}
			if d := c.Duration("since"); d > 0 {
				filter.Since = time.Now().Add(-d)
			}
			client, err := openAdmin(c)
			if err != nil {
				return err
			}
			defer client.Close()
			events, err := client.Audit(c.Context, filter)
			if err != nil {
				return err
			}
			if format == "json" {
				if events == nil {
					events = []store.AuditEvent{}
				}
				return writeJSON(os.Stdout, events)
			}
			return writeAuditTable(os.Stdout, events)
		},
	}
}

func writeAuditTable(w io.Writer, events []store.AuditEvent) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tEVENT\tOUTCOME\tBOT\tJOIN TOKEN\tMETHOD\tDETAILS\tSERIALS")
	for _, ev := range events {
		outcome := "allowed"
		if !ev.Allowed {
			outcome = "denied " + ev.Code
		}
		serials := make([]string, len(ev.Serials))
		for i, s := range ev.Serials {
			serials[i] = identity.Printable(s)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Time.UTC().Format(time.RFC3339), identity.Printable(ev.Event), identity.Printable(outcome),
			dash(identity.Printable(ev.Bot)), dash(identity.Printable(ev.JoinToken)), dash(identity.Printable(ev.Method)), dash(auditDetails(ev)), dash(strings.Join(serials, " ")))
	}
	return tw.Flush()
}

// identifyingClaims are the claims the table shows, in this order: who
// (repository, project, account, ...), then which ref and environment.
// The JSON output has every claim.
var identifyingClaims = [][]string{
	{"repository", "project_path", "vcs_origin", "project_id", "workspace_name", "space_id", "aws_arn", "service_account", "sub"},
	{"ref", "vcs_ref", "branch_name"},
	{"environment"},
}

// auditDetails is the claims of a join, or the message of another record,
// each value printable.
func auditDetails(ev store.AuditEvent) string {
	if ev.Event != "join" {
		parts := []string{identity.Printable(ev.Message)}
		if ev.Remote != "" {
			parts = append(parts, "by "+identity.Printable(ev.Remote))
		}
		return strings.TrimSpace(strings.Join(parts, " "))
	}
	var parts []string
	for _, group := range identifyingClaims {
		for _, k := range group {
			if v := ev.Claims[k]; v != "" {
				parts = append(parts, k+"="+identity.Printable(v))
				break
			}
		}
	}
	if ev.ClaimsUnverified && len(parts) > 0 {
		// Read from a proof that did not verify: who presented it, not who it proves.
		return "unverified: " + strings.Join(parts, " ")
	}
	return strings.Join(parts, " ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
