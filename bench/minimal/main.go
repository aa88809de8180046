// Command minimal is BenchmarkStart's comparison: a Go program that links
// the packages on mbot's design card (urfave/cli/v2, x/crypto/ssh,
// go-oidc/v3, aws-sdk-go-v2's config, GCP metadata, azidentity) and, for
// `--version`, does only the unavoidable work: parse the arguments and print
// the version. Each package is reached from a command's action, so the
// linker keeps what mbot's client would keep of it and its initializers
// run, but nothing else is done at start. `minimal issue --out DIR` is
// BenchmarkIssue's comparison (issue.go): one identity output's
// unavoidable work.
package main

import (
	"context"
	"fmt"
	"os"

	"cloud.google.com/go/compute/metadata"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"
)

func main() {
	app := &cli.App{
		Name:    "minimal",
		Version: "v0.0.0",
		Commands: []*cli.Command{
			{Name: "issue", Flags: []cli.Flag{&cli.StringFlag{Name: "out", Required: true}}, Action: func(c *cli.Context) error {
				return issue(c.Context, c.String("out"))
			}},
			{Name: "ssh", Action: func(c *cli.Context) error {
				_, err := ssh.ParsePublicKey([]byte(c.Args().First()))
				return err
			}},
			{Name: "oidc", Action: func(c *cli.Context) error {
				p, err := oidc.NewProvider(c.Context, c.Args().First())
				if err != nil {
					return err
				}
				_, err = p.Verifier(&oidc.Config{ClientID: "mbot"}).Verify(c.Context, c.Args().Get(1))
				return err
			}},
			{Name: "aws", Action: func(c *cli.Context) error {
				cfg, err := config.LoadDefaultConfig(c.Context)
				if err != nil {
					return err
				}
				_, err = cfg.Credentials.Retrieve(c.Context)
				return err
			}},
			{Name: "gcp", Action: func(c *cli.Context) error {
				tok, err := metadata.GetWithContext(c.Context, "instance/service-accounts/default/identity?audience=mbot")
				fmt.Println(tok)
				return err
			}},
			{Name: "azure", Action: func(c *cli.Context) error {
				cred, err := azidentity.NewManagedIdentityCredential(nil)
				if err != nil {
					return err
				}
				_, err = cred.GetToken(c.Context, policy.TokenRequestOptions{Scopes: []string{"api://mbot/.default"}})
				return err
			}},
		},
	}
	if err := app.RunContext(context.Background(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
