// Command gen writes docs/reference/cli.md from mbot's command definitions.
// It is run by go generate in docs/ (docs/doc.go):
//
//	go generate ./docs
package main

import (
	"fmt"
	"os"

	"github.com/mbot-dev/mbot/commands"
	"github.com/mbot-dev/mbot/internal/clidoc"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gen <output file>")
		os.Exit(2)
	}
	if err := os.WriteFile(os.Args[1], []byte(clidoc.Markdown(commands.App())), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
