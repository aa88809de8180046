package commands

import (
	"fmt"
	"os"
	"time"

	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/joiners"
	"github.com/urfave/cli/v2"
	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"
)

// addBoundKeypairToken is mbot tokens add --method bound_keypair: it binds
// a join token to a public key, or to a registration secret printed once.
func addBoundKeypairToken(c *cli.Context, ttl time.Duration) error {
	bot, name, err := tokenBotAndName(c)
	if err != nil {
		return err
	}
	var section keypairSection
	var fingerprint string
	if path := c.String("public-key"); path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("--public-key: %w", err)
		}
		key, err := verify.ParseKeypairPublicKey(string(raw))
		if err != nil {
			return usagef("--public-key %s: %v", path, err)
		}
		section.PublicKey = string(trimNewline(ssh.MarshalAuthorizedKey(key)))
		fingerprint = ssh.FingerprintSHA256(key)
	}
	format, err := outputFormat(c, "env", "json")
	if err != nil {
		return err
	}
	local, set, err := openLocalResources(c)
	if err != nil {
		return err
	}
	defer local.Close()
	existing, exists := set.JoinTokens[name]
	switch {
	case exists && !c.Bool("rotate"):
		return usagef("a join token named %q exists already; pass --rotate to bind a new key or registration secret to it, or pick another --name", name)
	case !exists && c.Bool("rotate"):
		return usagef("there is no join token named %q to rotate; leave out --rotate to create it", name)
	case exists && (existing.Spec.Method != verify.BoundKeypairMethod || existing.Spec.Bot != bot):
		return usagef("join token %q is a %s join token of bot %q; --rotate replaces the key of a bound_keypair join token of --bot", name, existing.Spec.Method, existing.Spec.Bot)
	}
	var secret string
	var expires time.Time
	if section.PublicKey == "" {
		secret = randomHex(32)
		expires = time.Now().Add(ttl).UTC().Truncate(time.Second)
		section.RegistrationSecretHash = verify.HashTokenSecret(secret)
		section.RegistrationExpires = expires.Format(time.RFC3339)
	}
	doc, err := keypairTokenDocument(name, bot, section)
	if err != nil {
		return err
	}
	if _, err := local.Apply(c.Context, "mbot tokens add", doc); err != nil {
		return err
	}
	if format == "json" {
		out := map[string]string{"join_token": name, "bot": bot, "method": verify.BoundKeypairMethod}
		if secret != "" {
			out["registration_secret"], out["expires"] = secret, expires.Format(time.RFC3339)
		} else {
			out["public_key"] = fingerprint
		}
		return writeJSON(os.Stdout, out)
	}
	if secret == "" {
		fmt.Fprintf(os.Stdout, "# join token %q for bot %q is bound to key %s.\n"+
			"# On the runner, with that key's private half at --keypair-path:\n"+
			"#   mbot start --join-method bound_keypair --token %s --keypair-path PATH ...\n"+
			"MBOT_TOKEN=%s\n", name, bot, fingerprint, name, name)
		return nil
	}
	fmt.Fprintf(os.Stdout, "# join token %q for bot %q binds the first key registered with this secret, until %s.\n"+
		"# The secret is shown only this once. On the runner, put it in %s and run:\n"+
		"#   mbot start --join-method bound_keypair --token %s --keypair-path PATH ...   (the key is generated at PATH)\n"+
		"MBOT_TOKEN=%s\n%s=%s\n",
		name, bot, expires.Format(time.RFC3339), joiners.RegistrationSecretEnv, name, name, joiners.RegistrationSecretEnv, secret)
	return nil
}

// keypairSection is spec.bound_keypair as mbot tokens add writes it: a
// public key, or a registration secret's hash, never the secret.
type keypairSection struct {
	PublicKey              string `yaml:"public_key,omitempty"`
	RegistrationSecretHash string `yaml:"registration_secret_hash,omitempty"`
	RegistrationExpires    string `yaml:"registration_expires,omitempty"`
}

func keypairTokenDocument(name, bot string, section keypairSection) ([]byte, error) {
	type spec struct {
		Bot          string         `yaml:"bot"`
		Method       string         `yaml:"method"`
		BoundKeypair keypairSection `yaml:"bound_keypair"`
	}
	type document struct {
		Kind     string            `yaml:"kind"`
		Version  string            `yaml:"version"`
		Metadata map[string]string `yaml:"metadata"`
		Spec     spec              `yaml:"spec"`
	}
	return yaml.Marshal(document{Kind: "join_token", Version: "v1", Metadata: map[string]string{"name": name},
		Spec: spec{Bot: bot, Method: verify.BoundKeypairMethod, BoundKeypair: section}})
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
