package commands

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/joiners"
	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"
)

func tokensCommand() *cli.Command {
	return &cli.Command{
		Name:  "tokens",
		Usage: "manage join tokens for hosts with no identity provider: single-use secrets and bound key pairs",
		Subcommands: []*cli.Command{
			{
				Name:  "add",
				Usage: "create a single-use join token with a random secret, printed once (or, with --method bound_keypair, one bound to a runner's key)",
				Description: `Creates a join token of method token for --bot. Only the secret's SHA-256
hash is stored; the secret is printed once, here, and cannot be shown again.
It admits one join before --ttl runs out. Example:

   mbot tokens add --bot deployer --ttl 1h --config authority.yaml
   # on the host, with the printed values:
   MBOT_JOIN_SECRET=... mbot issue --join-method token --token NAME ...

With --method bound_keypair the join token is bound to a runner's key pair
instead, and admits every join signed by it (docs/platforms/self-hosted-keypair.md):

   mbot tokens add --bot runner --method bound_keypair --public-key runner.pub
   mbot tokens add --bot runner --method bound_keypair    # prints a registration secret
   mbot tokens add --name NAME --bot runner --method bound_keypair --rotate [--public-key new.pub]`,
				Flags: []cli.Flag{authorityConfigFlag(), outputFlag("env", "json"),
					&cli.StringFlag{Name: "bot", Required: true, Usage: "bot the join token joins as"},
					&cli.StringFlag{Name: "name", Usage: "join token name (default: <bot>-token-<random>)"},
					&cli.DurationFlag{Name: "ttl", Value: time.Hour, Usage: "how long the secret (or bound_keypair registration secret) may be used"},
					&cli.StringFlag{Name: "method", Value: "token", Usage: "token (a single-use secret) or bound_keypair (a runner's key pair)"},
					&cli.StringFlag{Name: "public-key", Usage: "bound_keypair: bind this public key file (OpenSSH .pub or PEM); without it a registration secret is printed that binds the runner's first key"},
					&cli.BoolFlag{Name: "rotate", Usage: "bound_keypair: replace the key or registration secret of the existing join token --name (this also clears a lock)"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return usagef("mbot tokens add takes no arguments, got %q", c.Args().Slice())
					}
					ttl := c.Duration("ttl")
					if ttl <= 0 {
						return usagef("--ttl %s must be positive", ttl)
					}
					switch c.String("method") {
					case "token":
						if c.IsSet("public-key") || c.Bool("rotate") {
							return usagef("--public-key and --rotate go with --method bound_keypair")
						}
					case verify.BoundKeypairMethod:
						return addBoundKeypairToken(c, ttl)
					default:
						return usagef("--method %s: mbot tokens add creates token or bound_keypair join tokens; write other methods as resources (mbot apply)", identity.Quote(c.String("method")))
					}
					bot, name, err := tokenBotAndName(c)
					if err != nil {
						return err
					}
					local, set, err := openLocalResources(c)
					if err != nil {
						return err
					}
					defer local.Close()
					if _, exists := set.JoinTokens[name]; exists {
						return usagef("a join token named %q exists already; pick another --name, or remove it first with mbot rm join_token/%s", name, name)
					}
					format, err := outputFormat(c, "env", "json")
					if err != nil {
						return err
					}
					secret := randomHex(32)
					expires := time.Now().Add(ttl).UTC().Truncate(time.Second)
					doc, err := tokenDocument(name, bot, verify.HashTokenSecret(secret), expires)
					if err != nil {
						return err
					}
					if _, err := local.Apply(c.Context, "mbot tokens add", doc); err != nil {
						return err
					}
					if format == "json" {
						return writeJSON(os.Stdout, map[string]string{"join_token": name, "bot": bot,
							"secret": secret, "expires": expires.Format(time.RFC3339)})
					}
					fmt.Fprintf(os.Stdout, "# join token %q for bot %q: single use, expires %s.\n"+
						"# The secret is shown only this once. Put it in %s of the job (from the CI system's secret store),\n"+
						"# and run: mbot issue --join-method token --token %s ...\n"+
						"MBOT_TOKEN=%s\n%s=%s\n",
						name, bot, expires.Format(time.RFC3339), joiners.JoinSecretEnv, name, name, joiners.JoinSecretEnv, secret)
					return nil
				},
			},
		},
	}
}

// tokenBotAndName reads mbot tokens add's --bot and --name, the name
// defaulting to tokenName's; --rotate needs --name.
func tokenBotAndName(c *cli.Context) (bot, name string, err error) {
	bot, name = c.String("bot"), c.String("name")
	if err := identity.CheckName("--bot", bot); err != nil {
		return "", "", usagef("%v", err)
	}
	if c.Bool("rotate") && name == "" {
		return "", "", usagef("--rotate replaces the key of an existing join token: name it with --name")
	}
	if name == "" {
		name = tokenName(bot, randomHex(4))
	}
	if err := identity.CheckName("--name", name); err != nil {
		return "", "", usagef("%v", err)
	}
	return bot, name, nil
}

// openLocalResources opens the store of the authority --config names, on
// the authority host, and reads its resources. The caller closes it.
func openLocalResources(c *cli.Context) (*admin.Local, *resources.Set, error) {
	cfg, err := authority.LoadConfig(c.String("config"))
	if err != nil {
		return nil, nil, err
	}
	local, err := admin.OpenLocal(c.Context, cfg)
	if err != nil {
		return nil, nil, err
	}
	set, err := local.Resources(c.Context)
	if err != nil {
		local.Close()
		return nil, nil, err
	}
	return local, set, nil
}

// tokenName is the default join token name, <bot>-token-<random>, with the
// bot's name cut so that the whole stays a valid name.
func tokenName(bot, random string) string {
	suffix := "-token-" + random
	if len(bot)+len(suffix) > identity.MaxNameLen {
		bot = strings.TrimRight(bot[:identity.MaxNameLen-len(suffix)], "-_.")
	}
	return bot + suffix
}

// tokenDocument is the join_token resource of a token join: the secret's
// hash and expiry, never the secret.
func tokenDocument(name, bot, secretHash string, expires time.Time) ([]byte, error) {
	type section struct {
		SecretHash string `yaml:"secret_hash"`
		Expires    string `yaml:"expires"`
	}
	type spec struct {
		Bot    string  `yaml:"bot"`
		Method string  `yaml:"method"`
		Token  section `yaml:"token"`
	}
	type document struct {
		Kind     string            `yaml:"kind"`
		Version  string            `yaml:"version"`
		Metadata map[string]string `yaml:"metadata"`
		Spec     spec              `yaml:"spec"`
	}
	return yaml.Marshal(document{Kind: "join_token", Version: "v1", Metadata: map[string]string{"name": name},
		Spec: spec{Bot: bot, Method: "token", Token: section{SecretHash: secretHash, Expires: expires.Format(time.RFC3339)}}})
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b)
}
