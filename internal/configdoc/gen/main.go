// Command gen regenerates the field tables of the configuration references
// (docs/reference/authority-yaml.md, mbot-yaml.md) from the config structs
// (internal/configdoc). It is run by go generate in docs/ (docs/doc.go):
//
//	go generate ./docs
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/mbot-dev/mbot/internal/configdoc"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gen <docs directory>")
		os.Exit(2)
	}
	for _, p := range configdoc.Pages {
		path := filepath.Join(os.Args[1], p.Path)
		data, err := os.ReadFile(path)
		if err == nil {
			var out string
			if out, err = configdoc.Regenerate(string(data), p.Tables); err == nil {
				err = os.WriteFile(path, []byte(out), 0o644)
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "gen: %s: %v\n", path, err)
			os.Exit(1)
		}
	}
}
