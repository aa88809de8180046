package commands

import (
	"slices"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/joiners"
	"github.com/urfave/cli/v2"
)

// TestCompletions checks the candidates offered for the word last typed:
// commands without help clutter, kinds after get/rm/lock, flag values from
// the lists the commands check against, and flags with two dashes.
func TestCompletions(t *testing.T) {
	app := App()
	for _, tc := range []struct {
		words        []string
		want         []string // all of these, in any order
		wantExactly  bool
		mustNotOffer []string
	}{
		{words: []string{""}, want: []string{"issue", "get", "rm", "lock", "completion", "authority"}, mustNotOffer: []string{"help", "h"}},
		{words: []string{"authority", ""}, want: []string{"start", "export", "rotate"}, mustNotOffer: []string{"help", "h"}},
		{words: []string{"get", ""}, want: []string{"roles", "bots", "join_tokens", "databases", "kubernetes_clusters", "trusted_clusters", "leaf_clusters", "bot_instances", "locks"}, wantExactly: true},
		{words: []string{"get", "bots", ""}, want: nil, wantExactly: true},
		{words: []string{"get", "--config", "a.yaml", "-o", "json", ""}, want: []string{"roles", "bots"}},
		{words: []string{"rm", "bot/x", ""}, want: []string{"role/", "bot/", "join_token/", "database/"}},
		{words: []string{"lock", ""}, want: []string{"bot/", "bot_instance/", "join_token/", "role/", "cert/", "admin/"}, wantExactly: true},
		{words: []string{"get", "-o", ""}, want: []string{"text", "yaml", "json"}, wantExactly: true},
		{words: []string{"get", "bots", "--output", ""}, want: []string{"text", "yaml", "json"}, wantExactly: true},
		{words: []string{"tokens", "add", "-o", ""}, want: []string{"env", "json"}, wantExactly: true},
		{words: []string{"authority", "export", "--type", ""}, want: authority.ExportTypes, wantExactly: true},
		{words: []string{"authority", "rotate", "--type", ""}, want: authority.RotationTypes(), wantExactly: true},
		{words: []string{"issue", "--join-method", ""}, want: append([]string{"auto"}, joiners.Methods()...), wantExactly: true},
		{words: []string{"start", "--join-method", "g"}, want: []string{"auto", "github"}},
		{words: []string{"issue", "--out", ""}, want: nil, wantExactly: true}, // the shell completes a directory
		{words: []string{"issue", "--"}, want: []string{"--authority", "--ca-pin", "--token", "--join-method", "--ttl"}, mustNotOffer: []string{"--help", "-h", "--generate-bash-completion"}},
		{words: []string{"get", "-"}, want: []string{"--output", "--config"}, mustNotOffer: []string{"-o", "--help"}},
		{words: []string{"completion", ""}, want: []string{"bash", "zsh", "fish"}, wantExactly: true},
		{words: []string{"issue", ""}, want: nil, wantExactly: true},
	} {
		got := completions(app, tc.words)
		name := strings.Join(tc.words, " ")
		for _, w := range tc.want {
			if !slices.Contains(got, w) {
				t.Errorf("mbot %s<TAB> offers %q, which lacks %q", name, got, w)
			}
		}
		if tc.wantExactly && len(got) != len(tc.want) {
			t.Errorf("mbot %s<TAB> offers %q, want exactly %q", name, got, tc.want)
		}
		for _, w := range tc.mustNotOffer {
			if slices.Contains(got, w) {
				t.Errorf("mbot %s<TAB> offers %q", name, w)
			}
		}
	}
}

// TestFlagNameIsNames: flagName, which registerCompletions uses instead of
// urfave/cli's Names to spare a regular expression per flag at start,
// names every flag of every command as Names does.
func TestFlagNameIsNames(t *testing.T) {
	app := App()
	var walk func(cmds []*cli.Command)
	n := 0
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			for _, f := range c.Flags {
				n++
				if got, want := flagName(f), f.Names()[0]; got != want {
					t.Errorf("%s: flagName %q, Names()[0] %q", c.FullName(), got, want)
				}
			}
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
	if n < 50 {
		t.Fatalf("walked %d flags; expected every command's", n)
	}
}
