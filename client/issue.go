package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/joiners"
)

// IssueOptions are the inputs of mbot issue (SPEC §4).
type IssueOptions struct {
	Authority  string
	CAPin      string
	Token      string
	JoinMethod string // "auto" or a method name
	Out        string
	TTL        time.Duration
	Roles      []string
	// Env is the job's environment; nil means the process environment.
	Env joiners.Env
	// Stdout receives GitHub Actions workflow commands (::add-mask::).
	Stdout io.Writer
}

// IssueResult is what a successful issue wrote.
type IssueResult struct {
	Dir      string
	Method   string
	Response *identity.JoinResponse
}

// Issue runs one join: detect the platform, fetch its proof, generate keys,
// join once, and write the identity directory. On failure it writes nothing
// and removes an earlier identity from the directory, so later steps cannot
// pick up stale credentials.
func Issue(ctx context.Context, o IssueOptions) (*IssueResult, error) {
	if o.Env == nil {
		o.Env = os.Getenv
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(o.Out)
	if err != nil {
		return nil, err
	}
	res, err := issue(ctx, o, dir)
	if err != nil {
		if removed, rerr := identity.RemoveStale(dir); removed && rerr == nil {
			err = fmt.Errorf("%w\n(removed the earlier identity in %s so that nothing uses stale credentials)", err, dir)
		}
		return nil, err
	}
	return res, nil
}

func (o *IssueOptions) check() error {
	var missing []string
	if o.Authority == "" {
		missing = append(missing, "--authority (MBOT_AUTHORITY)")
	}
	if o.Token == "" {
		missing = append(missing, "--token (MBOT_TOKEN)")
	}
	if o.Out == "" {
		missing = append(missing, "--out (MBOT_OUT)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	if o.TTL < 0 {
		return fmt.Errorf("--ttl %s must be positive", o.TTL)
	}
	return nil
}

func issue(ctx context.Context, o IssueOptions, dir string) (*IssueResult, error) {
	var joiner joiners.Joiner
	var err error
	if o.JoinMethod == "" || o.JoinMethod == "auto" {
		joiner, err = joiners.Detect(o.Env)
	} else {
		joiner, err = joiners.ByMethod(o.JoinMethod)
	}
	if err != nil {
		return nil, err
	}
	api, err := NewAPI(o.Authority, o.CAPin)
	if err != nil {
		return nil, err
	}
	defer api.CloseIdleConnections()
	ping, err := api.Ping(ctx)
	if err != nil {
		return nil, err
	}
	proof, err := joiner.Proof(ctx, o.Env, ping.Audience)
	if err != nil {
		return nil, fmt.Errorf("%s join: %w", joiner.Method(), err)
	}
	if inGitHubActions(o.Env) {
		fmt.Fprintf(o.Stdout, "::add-mask::%s\n", proof)
	}
	keys, err := identity.NewKeys()
	if err != nil {
		return nil, err
	}
	resp, err := api.Join(ctx, &identity.JoinRequest{
		JoinToken:  o.Token,
		Method:     joiner.Method(),
		Proof:      proof,
		TTLSeconds: int64(o.TTL / time.Second),
		Outputs: []identity.OutputRequest{{
			Name:         "identity",
			Roles:        o.Roles,
			SSHPublicKey: keys.SSHPublicKey(),
			TLSPublicKey: keys.TLSPublicKeyPEM(),
		}},
	})
	if err != nil {
		var refusal *identity.Error
		if errors.As(err, &refusal) {
			return nil, fmt.Errorf("the authority refused the join (%s): %s", refusal.Code, refusal.Message)
		}
		return nil, err
	}
	if len(resp.Outputs) != 1 {
		return nil, fmt.Errorf("the authority answered with %d outputs for 1 asked", len(resp.Outputs))
	}
	files, err := identity.RenderIdentity(dir, keys, resp, &resp.Outputs[0])
	if err != nil {
		return nil, err
	}
	if err := identity.WriteDir(dir, files); err != nil {
		return nil, err
	}
	if err := writeGitHubOutputs(o.Env, dir); err != nil {
		return nil, err
	}
	return &IssueResult{Dir: dir, Method: joiner.Method(), Response: resp}, nil
}

func inGitHubActions(env joiners.Env) bool { return env("GITHUB_ACTIONS") == "true" }

// writeGitHubOutputs sets step outputs naming the identity's files (never their contents).
func writeGitHubOutputs(env joiners.Env, dir string) error {
	path := env("GITHUB_OUTPUT")
	if !inGitHubActions(env) || path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("writing step outputs to GITHUB_OUTPUT: %w", err)
	}
	defer f.Close()
	for _, kv := range [][2]string{
		{"destination-dir", dir},
		{"ssh-config", filepath.Join(dir, identity.FileSSHConfig)},
		{"identity-file", filepath.Join(dir, identity.FileSSHKey)},
		{"certificate-file", filepath.Join(dir, identity.FileSSHCert)},
		{"known-hosts", filepath.Join(dir, identity.FileKnownHosts)},
		{"tls-cert", filepath.Join(dir, identity.FileTLSCert)},
		{"tls-key", filepath.Join(dir, identity.FileTLSKey)},
		{"ca-file", filepath.Join(dir, identity.FileCA)},
	} {
		if _, err := fmt.Fprintf(f, "%s=%s\n", kv[0], kv[1]); err != nil {
			return err
		}
	}
	return f.Close()
}
