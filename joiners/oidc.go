package joiners

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// The generic oidc method reads a token the job already has, from a file or
// a variable the user names (Jenkins' OpenID Connect Provider plugin binds
// it to a variable; other systems write it to a file).
const (
	OIDCTokenFileEnv = "MBOT_OIDC_TOKEN_FILE"
	OIDCTokenEnvEnv  = "MBOT_OIDC_TOKEN_ENV"
)

// genericOIDC is used only with --join-method oidc: nothing in a job's
// environment says which issuer its token comes from.
type genericOIDC struct{}

func init() { register(genericOIDC{}, 0) }

func (genericOIDC) Method() string { return "oidc" }

func (genericOIDC) Signals() string { return OIDCTokenFileEnv + " or " + OIDCTokenEnvEnv }

func (genericOIDC) Detect(env Env) bool {
	return env(OIDCTokenFileEnv) != "" || env(OIDCTokenEnvEnv) != ""
}

// Proof reads the token from the file named by MBOT_OIDC_TOKEN_FILE, else
// from the variable named by MBOT_OIDC_TOKEN_ENV. The issuer chose its
// audience when it minted the token; audience is only named in messages.
func (genericOIDC) Proof(_ context.Context, env Env, audience string) (string, error) {
	if path := env(OIDCTokenFileEnv); path != "" {
		f, err := os.Open(path)
		if err != nil {
			return "", fmt.Errorf("reading the OIDC token named by %s: %w", OIDCTokenFileEnv, err)
		}
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, 64<<10))
		if err != nil {
			return "", fmt.Errorf("reading the OIDC token named by %s: %w", OIDCTokenFileEnv, err)
		}
		if tok := strings.TrimSpace(string(data)); tok != "" {
			return tok, nil
		}
		return "", fmt.Errorf("%s names %s, which is empty; write the job's OIDC token (audience %q) there", OIDCTokenFileEnv, path, audience)
	}
	if name := env(OIDCTokenEnvEnv); name != "" {
		if tok := strings.TrimSpace(env(name)); tok != "" {
			return tok, nil
		}
		return "", fmt.Errorf("%s names the variable %s, which is unset or empty; bind the job's OIDC token (audience %q) to it", OIDCTokenEnvEnv, name, audience)
	}
	return "", errors.New("the oidc join method reads the job's OIDC token from a file or a variable: set " +
		OIDCTokenFileEnv + "=<path> or " + OIDCTokenEnvEnv + "=<variable name>")
}
