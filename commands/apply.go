package commands

import (
	"fmt"
	"io"
	"os"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/urfave/cli/v2"
)

func applyCommand() *cli.Command {
	return &cli.Command{
		Name:      "apply",
		Usage:     "create or replace roles, bots, join tokens, databases and kubernetes clusters from YAML or JSON files",
		ArgsUsage: " ",
		Description: `Each file holds resources as YAML documents separated by ---, or a list of
them (what mbot get -o json prints). A file is checked and applied as a
whole; files are applied in the order given. A running authority uses the
change for its next join, without a restart. Resource files listed under
resources: in authority.yaml are applied again at every start and win over
changes made here to the same names. Example:

   mbot apply --config authority.yaml -f deploy.yaml
   mbot get bots -o yaml > bots.yaml && mbot apply -f bots.yaml   # round trip`,
		Flags: append(adminFlags(),
			&cli.StringSliceFlag{Name: "file", Aliases: []string{"f"},
				Usage: "resource file to apply (- for standard input); repeat for several"}),
		Action: func(c *cli.Context) error {
			args, err := positionalArgs(c)
			if err != nil {
				return err
			}
			if len(args) > 0 {
				return usagef("mbot apply takes files with -f, not arguments: %q", args)
			}
			files := c.StringSlice("file")
			if len(files) == 0 {
				return usagef("mbot apply needs -f FILE")
			}
			data := make([][]byte, len(files))
			for i, f := range files {
				var err error
				if files[i], data[i], err = readResourceFile(f); err != nil {
					return err
				}
			}
			client, err := openAdmin(c)
			if err != nil {
				return err
			}
			defer client.Close()
			for i, f := range files {
				applied, err := client.Apply(c.Context, f, data[i])
				if err != nil {
					return err
				}
				if len(applied) == 0 {
					fmt.Fprintf(os.Stderr, "mbot: %s holds no resources\n", f)
				}
				for _, name := range applied {
					fmt.Printf("applied %s\n", name)
				}
			}
			return nil
		},
	}
}

// readResourceFile reads a resource file (- is standard input), turning a
// list of resources into the YAML documents that apply reads. It returns
// the name to give the file in messages.
func readResourceFile(name string) (string, []byte, error) {
	var (
		data []byte
		err  error
	)
	if name == "-" {
		name = "(standard input)"
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return "", nil, fmt.Errorf("reading resources: %w", err)
	}
	if data, err = resources.ListToDocuments(data); err != nil {
		return "", nil, fmt.Errorf("%s: %w", name, err)
	}
	return name, data, nil
}
