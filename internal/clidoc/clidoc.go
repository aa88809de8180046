// Package clidoc renders mbot's command tree as the Markdown of
// docs/reference/cli.md, so that the reference is made from the same
// urfave/cli definitions as --help and cannot drift from them (a test in
// docs/ fails when the committed file differs from what Markdown renders).
package clidoc

import (
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

// Regenerate is the command that rewrites the reference; stale-file
// messages name it.
const Regenerate = "go generate ./docs"

// Markdown renders every visible command of app, depth first in the order
// of the command tree, grouped by the categories of mbot --help.
func Markdown(app *cli.App) string {
	var b strings.Builder
	b.WriteString("<!-- Generated from the command definitions in commands/ by internal/clidoc.\n")
	b.WriteString("     Do not edit: run `" + Regenerate + "` after changing a command. -->\n\n")
	b.WriteString("# Command line reference\n\n")
	fmt.Fprintf(&b, "`%s`: %s.\n\n", app.Name, app.Usage)
	b.WriteString("Every flag that names an environment variable reads it when the flag is not given; ")
	b.WriteString("a flag given on the command line wins. Exit codes: 0 success, 1 the operation failed ")
	b.WriteString("(a refused join, an unreachable authority, a bad file), 2 the command line is wrong. ")
	b.WriteString("mbot never colors its output or moves the cursor, whatever the terminal, so `NO_COLOR` and `TERM=dumb` need nothing; ")
	b.WriteString("in GitHub Actions it also writes `::add-mask::` and `::warning::` workflow commands. ")
	b.WriteString("Shell completion: [`mbot completion`](#mbot-completion).\n\n")

	// The index, by category, in the order the categories first appear.
	var cats []string
	byCat := map[string][]*cli.Command{}
	for _, c := range app.Commands {
		if c.Hidden {
			continue
		}
		if _, ok := byCat[c.Category]; !ok {
			cats = append(cats, c.Category)
		}
		byCat[c.Category] = append(byCat[c.Category], c)
	}
	for _, cat := range cats {
		if cat != "" {
			fmt.Fprintf(&b, "**%s**\n\n", cat)
		}
		for _, c := range byCat[cat] {
			fmt.Fprintf(&b, "- [`mbot %s`](#%s): %s\n", c.Name, anchor("mbot "+c.Name), c.Usage)
		}
		b.WriteString("\n")
	}
	if len(app.Flags) > 0 {
		b.WriteString("## Global flags\n\n")
		flagTable(&b, app.Flags)
	}
	for _, cat := range cats {
		for _, c := range byCat[cat] {
			command(&b, []string{app.Name}, c)
		}
	}
	return b.String()
}

func command(b *strings.Builder, parent []string, c *cli.Command) {
	path := append(append([]string(nil), parent...), c.Name)
	name := strings.Join(path, " ")
	level := len(path)
	if level > 4 {
		level = 4
	}
	fmt.Fprintf(b, "%s `%s`\n\n", strings.Repeat("#", level), name)
	if c.Usage != "" {
		fmt.Fprintf(b, "%s.\n\n", sentence(c.Usage))
	}
	usage := name
	if c.ArgsUsage != "" {
		usage += " " + c.ArgsUsage
	} else if len(c.Subcommands) > 0 {
		usage += " <command>"
	}
	if len(c.Flags) > 0 {
		usage += " [flags]"
	}
	if c.UsageText != "" {
		usage = strings.TrimSpace(c.UsageText)
	}
	fmt.Fprintf(b, "```\n%s\n```\n\n", usage)
	if len(c.Aliases) > 0 {
		fmt.Fprintf(b, "Aliases: `%s`.\n\n", strings.Join(c.Aliases, "`, `"))
	}
	if d := strings.TrimSpace(c.Description); d != "" {
		// The description is preformatted for a terminal (examples indented
		// by three spaces): keep it as it is.
		fmt.Fprintf(b, "```text\n%s\n```\n\n", d)
	}
	if len(c.Flags) > 0 {
		flagTable(b, c.Flags)
	}
	var subs []*cli.Command
	for _, s := range c.Subcommands {
		if !s.Hidden {
			subs = append(subs, s)
		}
	}
	if len(subs) > 0 {
		b.WriteString("Commands:\n\n")
		for _, s := range subs {
			fmt.Fprintf(b, "- [`%s %s`](#%s): %s\n", name, s.Name, anchor(name+" "+s.Name), s.Usage)
		}
		b.WriteString("\n")
		for _, s := range subs {
			command(b, path, s)
		}
	}
}

// flagTable writes one row per visible flag: its names, environment
// variables, default and usage.
func flagTable(b *strings.Builder, flags []cli.Flag) {
	b.WriteString("| flag | environment | default | |\n|---|---|---|---|\n")
	for _, f := range flags {
		if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
			continue
		}
		names := f.Names()
		var shown []string
		for _, n := range names {
			dash := "--"
			if len(n) == 1 {
				dash = "-"
			}
			shown = append(shown, "`"+dash+n+"`")
		}
		var env, def, usage string
		if df, ok := f.(cli.DocGenerationFlag); ok {
			usage = df.GetUsage()
			if vars := df.GetEnvVars(); len(vars) > 0 {
				env = "`" + strings.Join(vars, "`, `") + "`"
			}
			// A usage that says its default itself (a zero value that means
			// "unset") is not given a second one, as in --help.
			if !strings.Contains(usage, "default") && df.TakesValue() {
				def = df.GetDefaultText()
				if def == "" {
					def = df.GetValue()
				}
				def = strings.Trim(def, `"`)
				if def != "" {
					def = "`" + def + "`"
				}
			}
		}
		if rf, ok := f.(cli.RequiredFlag); ok && rf.IsRequired() {
			def = "(required)"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", strings.Join(shown, ", "), env, def, cell(usage))
	}
	b.WriteString("\n")
}

// sentence starts s with a capital letter and drops a final period.
func sentence(s string) string {
	s = strings.TrimSuffix(s, ".")
	if s != "" && s[0] >= 'a' && s[0] <= 'z' {
		s = string(s[0]-'a'+'A') + s[1:]
	}
	return s
}

// cell makes text safe in a Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

// anchor is the id GitHub gives a heading "`text`".
func anchor(text string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// Names lists every visible command path of app ("mbot issue", "mbot
// authority start", ...), sorted; tests use it to check the reference covers
// the tree.
func Names(app *cli.App) []string {
	var out []string
	var walk func(parent string, cmds []*cli.Command)
	walk = func(parent string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden {
				continue
			}
			p := parent + " " + c.Name
			out = append(out, p)
			walk(p, c.Subcommands)
		}
	}
	walk(app.Name, app.Commands)
	sort.Strings(out)
	return out
}
