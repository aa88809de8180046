package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/client/kubesecret"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/joiners"
)

// DefaultTTL is the certificate lifetime asked for when neither --ttl nor mbot.yaml says.
const DefaultTTL = time.Hour

// DefaultOut is the identity directory when neither --out nor mbot.yaml names one.
const DefaultOut = "./mbot"

// IssueOptions are the inputs of mbot issue (SPEC §4). An empty field is
// not set: it takes its value from Config (mbot.yaml), then the default.
type IssueOptions struct {
	Authority  string
	CAPin      string
	Token      string
	JoinMethod string // "auto" or a method name
	// Out and Roles describe the one output of a run without mbot.yaml; with
	// one, they may override its only output.
	Out   string
	TTL   time.Duration
	Roles []string
	// HostNames, when set, make the one output an ssh_host output for
	// these names (or set the host_names of mbot.yaml's only output).
	HostNames []string
	// Config is the path of mbot.yaml.
	Config string
	// KeypairPath is the runner's private key for a bound_keypair join;
	// RotateKeypair rotates it to a fresh key in the join.
	KeypairPath   string
	RotateKeypair bool
	// LeafClusters say where leaf clusters are reached directly (SPEC §8);
	// from mbot.yaml.
	LeafClusters []LeafCluster
	// Outputs are written by one join; when empty they come from Config,
	// or are the single identity output of Out and Roles.
	Outputs []Output
	// Env is the job's environment; nil means the process environment.
	Env joiners.Env
	// Stdout receives GitHub Actions workflow commands (::add-mask::).
	Stdout io.Writer
	// Stderr receives notices for the person reading the job's log, such
	// as the parent directories an output needed; nil discards them.
	Stderr io.Writer
	// checkProof, when set, sees the proof's fingerprint before it is sent
	// and may stop the join (mbot start: a proof the authority has seen).
	checkProof func(method string, fingerprint [sha256.Size]byte) error
	// sentProof, when set, receives the fingerprint of a proof the
	// authority accepted, or refused as a replay.
	sentProof func(fingerprint [sha256.Size]byte)
	// kube writes the outputs whose destination is a Secret; set by issue.
	kube *kubeTargets
	// wrote, when set, is called for each output as soon as it is written
	// (mbot start runs its reload command then).
	wrote func(out Output, dir string)
}

// IssueResult is what a successful issue wrote.
type IssueResult struct {
	// Dir is the first output's directory.
	Dir    string
	Method string
	// CIPlatform names the CI platform when it joined with a cloud's
	// method (cloud_build with gcp, codebuild with iam), else "".
	CIPlatform string
	Response   *identity.JoinResponse
	// Outputs are in the order asked, each with the directory it was written to.
	Outputs []IssuedOutput
}

// IssuedOutput is one output written by a join.
type IssuedOutput struct {
	// Dir is the output's directory; for a Secret, the path where pods
	// mount it (mount_path), which its files refer to.
	Dir string
	// Secret is "Secret namespace/name" when the output was written to a
	// Secret, else "".
	Secret string
	// Conflicts counts the writes of the Secret that the API server
	// refused because it had changed meanwhile, each retried.
	Conflicts int
	Grant     *identity.OutputResponse
	// Summary says what an output of a type other than identity holds and
	// how to use it, for mbot issue to print; empty for identity outputs.
	Summary string
}

// Issue runs one join for every output: detect the platform, fetch its
// proof, generate fresh keys per output, join once, and write each
// output's directory. Outputs are written only if the join succeeds; if
// any cannot be written, none is left behind. A failed run also removes
// identities that earlier runs left in the destinations, so later steps
// cannot pick up stale credentials.
func Issue(ctx context.Context, o IssueOptions) (*IssueResult, error) {
	if o.Env == nil {
		o.Env = os.Getenv
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if err := o.resolve(); err != nil {
		return nil, err
	}
	dirs, err := outputDirs(o.Outputs)
	if err != nil {
		return nil, err
	}
	var written []string
	res, err := issue(ctx, o, dirs, &written)
	if err != nil {
		// A Secret is left as it was: it holds the previous, still valid
		// credentials, or nothing, and pods that mount it keep running.
		var stale, partial []string
		for i, dir := range dirs {
			if o.Outputs[i].Destination.Secret != nil {
				continue
			}
			if ok, rerr := identity.RemoveStaleOwned(dir, o.Outputs[i].owner); ok && rerr == nil {
				if slices.Contains(written, dir) {
					partial = append(partial, dir)
				} else {
					stale = append(stale, dir)
				}
			}
		}
		if len(partial) > 0 {
			err = fmt.Errorf("%w\n(removed %s, written by this run, so that no output is used without the others)", err, strings.Join(partial, ", "))
		}
		if len(stale) > 0 {
			err = fmt.Errorf("%w\n(removed the earlier identity in %s so that nothing uses stale credentials)", err, strings.Join(stale, ", "))
		}
		return nil, err
	}
	return res, nil
}

// resolve settles every option: set fields first, then mbot.yaml, then defaults.
func (o *IssueOptions) resolve() error {
	var cfg *Config
	if o.Config != "" {
		var err error
		if cfg, err = LoadConfig(o.Config); err != nil {
			return err
		}
		o.Authority = firstSet(o.Authority, cfg.Authority)
		o.CAPin = firstSet(o.CAPin, cfg.CAPin)
		o.Token = firstSet(o.Token, cfg.Token)
		o.JoinMethod = firstSet(o.JoinMethod, cfg.JoinMethod)
		o.KeypairPath = firstSet(o.KeypairPath, cfg.KeypairPath)
		o.LeafClusters = cfg.LeafClusters
		if o.TTL == 0 {
			o.TTL = time.Duration(cfg.TTL)
		}
	}
	o.JoinMethod = firstSet(o.JoinMethod, "auto")
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	switch {
	case len(o.Outputs) > 0:
	case cfg == nil && len(o.HostNames) > 0:
		o.Outputs = []Output{{Type: OutputTypeSSHHost, Name: OutputTypeSSHHost, Destination: Destination{Dir: firstSet(o.Out, DefaultOut)}, Roles: o.Roles,
			SSHHostOutput: SSHHostOutput{HostNames: o.HostNames}}}
	case cfg == nil:
		o.Outputs = []Output{{Type: OutputTypeIdentity, Name: OutputTypeIdentity, Destination: Destination{Dir: firstSet(o.Out, DefaultOut)}, Roles: o.Roles}}
	case o.Out != "" || len(o.Roles) > 0 || len(o.HostNames) > 0:
		if len(cfg.Outputs) > 1 {
			return fmt.Errorf("--out (MBOT_OUT), --roles (MBOT_ROLES) and --host-names (MBOT_HOST_NAMES) describe one output, but %s has %d; set destination:, roles: and host_names: per output there, or unset them",
				o.Config, len(cfg.Outputs))
		}
		only := cfg.Outputs[0]
		if o.Out != "" {
			only.Destination = Destination{Dir: o.Out}
		}
		if len(o.Roles) > 0 {
			only.Roles = o.Roles
		}
		if len(o.HostNames) > 0 {
			if only.Type != OutputTypeSSHHost {
				return fmt.Errorf("--host-names (MBOT_HOST_NAMES) sets the names of an ssh_host output, but the output of %s is of type %s; set type: ssh_host there, or unset --host-names", o.Config, only.Type)
			}
			only.HostNames = o.HostNames
		}
		o.Outputs = []Output{only}
	default:
		o.Outputs = cfg.Outputs
	}
	return o.check()
}

// ErrMissingSettings is wrapped by the error for settings that were not given.
var ErrMissingSettings = errors.New("missing")

// ErrBadSetting is wrapped by the error for a setting whose value is
// malformed (--authority, --ca-pin): a mistake in the command line.
var ErrBadSetting = errors.New("malformed setting")

type settingError struct{ msg string }

func (e settingError) Error() string        { return e.msg }
func (e settingError) Is(target error) bool { return target == ErrBadSetting }

func settingErrorf(format string, args ...any) error {
	return settingError{fmt.Sprintf(format, args...)}
}

func (o *IssueOptions) check() error {
	required := func(flag, env, field string) string {
		if o.Config != "" {
			return fmt.Sprintf("%s (%s, or %s: in %s)", flag, env, field, o.Config)
		}
		return fmt.Sprintf("%s (%s)", flag, env)
	}
	var missing []string
	if o.Authority == "" {
		missing = append(missing, required("--authority", "MBOT_AUTHORITY", "authority"))
	}
	if o.Token == "" {
		missing = append(missing, required("--token", "MBOT_TOKEN", "token"))
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrMissingSettings, strings.Join(missing, ", "))
	}
	// Checked before anything is detected, fetched or spent.
	if _, err := parseAuthorityURL(o.Authority); err != nil {
		return err
	}
	if o.CAPin != "" {
		for _, p := range strings.Split(o.CAPin, ",") {
			if _, err := parsePin(strings.TrimSpace(p)); err != nil {
				return err
			}
		}
	}
	if o.TTL < 0 {
		return fmt.Errorf("--ttl %s must be positive", o.TTL)
	}
	canon := canonicalDirs{}
	for i := range o.Outputs {
		out := &o.Outputs[i]
		if err := out.CheckAndSetDefaults(); err != nil {
			return fmt.Errorf("output %d: %w", i+1, err)
		}
		if err := out.lookupOwner(); err != nil {
			return err
		}
		for j := range i {
			if o.Outputs[j].Name == out.Name {
				return fmt.Errorf("outputs %d and %d are both named %q; give each its own name", j+1, i+1, out.Name)
			}
			if err := canon.distinct(o.Outputs[j].Destination, out.Destination, fmt.Sprintf("output %d", j+1)); err != nil {
				return err
			}
		}
	}
	return nil
}

func firstSet(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// Where is where the output was written: its Secret, or its directory.
func (out IssuedOutput) Where() string { return firstSet(out.Secret, out.Dir) }

// outputDirs are the absolute directories of outputs; for a Secret, the
// path pods mount it at.
func outputDirs(outputs []Output) ([]string, error) {
	dirs := make([]string, len(outputs))
	for i, out := range outputs {
		if s := out.Destination.Secret; s != nil {
			dirs[i] = s.MountPath
			continue
		}
		dir, err := filepath.Abs(out.Destination.Dir)
		if err != nil {
			return nil, err
		}
		dirs[i] = dir
	}
	return dirs, nil
}

// withKube gives o what writes its Secrets, reading the Kubernetes
// configuration only when an output needs it.
func (o *IssueOptions) withKube() {
	if o.kube == nil {
		o.kube = &kubeTargets{env: kubesecret.Env(o.Env)}
	}
}

// issue joins and writes the outputs, adding each directory it writes to written.
func issue(ctx context.Context, o IssueOptions, dirs []string, written *[]string) (*IssueResult, error) {
	// A destination mbot will not write is refused before the proof is
	// fetched and spent.
	created, err := checkDestinations(o.Outputs, dirs)
	if err != nil {
		return nil, err
	}
	o.withKube()
	defer o.kube.close()
	for _, out := range o.Outputs {
		if out.Destination.Secret != nil {
			if err := o.kube.check(ctx, out); err != nil {
				return nil, fmt.Errorf("output %q: %w", out.Name, err)
			}
		}
	}
	var joiner joiners.Joiner
	if o.JoinMethod == "auto" {
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
	// Key generation runs beside the handshake and the proof fetch: in a
	// fresh process it costs about a millisecond of the run.
	type generated struct {
		keys     []*identity.Keys
		requests []identity.OutputRequest
		err      error
	}
	keysc := make(chan generated, 1)
	go func() {
		var g generated
		g.keys, g.requests, g.err = newOutputKeys(o.Outputs)
		keysc <- g
	}()
	ping, err := api.Ping(ctx)
	if err != nil {
		return nil, err
	}
	var (
		proof   string
		keypair *joiners.Keypair
		g       generated
		rj      *rootJoin
	)
	if joiner.Method() == joiners.BoundKeypairMethod {
		// The proof signs the output keys: they come first.
		if g = <-keysc; g.err != nil {
			return nil, g.err
		}
		if rj, err = planRootJoin(o.Outputs, g.keys, g.requests); err != nil {
			return nil, err
		}
		keypair, proof, err = keypairProof(ctx, o, api, ping.Audience, rj.requests)
	} else {
		proof, err = joiner.Proof(ctx, o.Env, ping.Audience)
	}
	if err != nil {
		if p := joiners.CIPlatform(joiner); p != "" {
			return nil, fmt.Errorf("%s join on %s: %w", joiner.Method(), p, err)
		}
		return nil, fmt.Errorf("%s join: %w", joiner.Method(), err)
	}
	fingerprint := sha256.Sum256([]byte(proof))
	if o.checkProof != nil {
		if err := o.checkProof(joiner.Method(), fingerprint); err != nil {
			return nil, err
		}
	}
	if inGitHubActions(o.Env) {
		fmt.Fprintf(o.Stdout, "::add-mask::%s\n", proof)
	}
	req := &identity.JoinRequest{
		JoinToken:  o.Token,
		Method:     joiner.Method(),
		CIPlatform: joiners.CIPlatform(joiner),
		Proof:      proof,
		TTLSeconds: int64(o.TTL / time.Second),
	}
	if keypair == nil {
		if g = <-keysc; g.err != nil {
			return nil, g.err
		}
		if rj, err = planRootJoin(o.Outputs, g.keys, g.requests); err != nil {
			return nil, err
		}
	}
	join := func(outputs []identity.OutputRequest) (*identity.JoinResponse, error) {
		req.Outputs = outputs
		resp, err := api.Join(ctx, req)
		if keypair != nil {
			if err := recordKeypairJoin(keypair, err); err != nil {
				return nil, err
			}
		}
		if err != nil {
			var refusal *identity.Error
			if errors.As(err, &refusal) {
				if refusal.Code == identity.CodeProofReplayed && o.sentProof != nil {
					o.sentProof(fingerprint)
				}
				return nil, fmt.Errorf("the authority refused the join (%s): %s", refusal.Code, refusal.Message)
			}
			return nil, err
		}
		if o.sentProof != nil {
			o.sentProof(fingerprint)
		}
		return resp, nil
	}
	issued, resp, err := obtain(ctx, o, api, dirs, g.keys, g.requests, rj, join, written)
	if err != nil {
		return nil, err
	}
	if o.Stderr != nil {
		for _, dir := range created {
			fmt.Fprintf(o.Stderr, "mbot: created the missing directory %s (mode 0700) above an output\n", dir)
		}
	}
	res := &IssueResult{Dir: dirs[0], Method: joiner.Method(), CIPlatform: joiners.CIPlatform(joiner), Response: resp, Outputs: issued}
	if err := writeGitHubOutputs(o.Env, res.Outputs); err != nil {
		return nil, err
	}
	return res, nil
}

// keypairProof opens the runner's key and signs a fresh challenge of the
// authority with it, over the join's output keys.
func keypairProof(ctx context.Context, o IssueOptions, api *API, audience string, outputs []identity.OutputRequest) (*joiners.Keypair, string, error) {
	kp, err := joiners.OpenKeypair(o.KeypairPath, o.Env, o.RotateKeypair)
	if err != nil {
		return nil, "", err
	}
	if kp.Generated {
		fmt.Fprintf(o.Stderr, "mbot: generated the runner's key %s (public key %s.pub, %s) to register with the registration secret\n",
			o.KeypairPath, o.KeypairPath, kp.PublicKey())
	}
	c, err := api.Challenge(ctx, o.Token)
	if err == nil {
		var proof string
		if proof, err = kp.Proof(o.Token, audience, c.Nonce, identity.OutputKeysDigest(outputs)); err == nil {
			return kp, proof, nil
		}
	}
	if rerr := kp.Refused(); rerr != nil {
		err = errors.Join(err, rerr)
	}
	var refusal *identity.Error
	if errors.As(err, &refusal) {
		return nil, "", fmt.Errorf("the authority refused a challenge (%s): %s", refusal.Code, refusal.Message)
	}
	return nil, "", err
}

// recordKeypairJoin records the outcome of a bound_keypair join beside the
// key: admitted, refused, or unknown (no answer), which the authority may
// have admitted.
func recordKeypairJoin(kp *joiners.Keypair, joinErr error) error {
	var refusal *identity.Error
	var err error
	switch {
	case joinErr == nil:
		err = kp.Admitted()
	case errors.As(joinErr, &refusal) && refusal.Code.HTTPStatus() < 500:
		// A refusal of the request: the authority moved nothing on. Its
		// own failures (5xx) may come after the sequence moved: unknown.
		err = kp.Refused()
	default:
		err = kp.Unknown()
	}
	if err != nil {
		return fmt.Errorf("recording the join sequence beside the key: %w (the next join may lock the join token; keep the .state file beside the key writable)", err)
	}
	return nil
}

// checkDestinations refuses a destination mbot would not write into (a
// symbolic link, another user's directory, one holding files mbot did not
// write) and returns the missing parent directories writing will create.
func checkDestinations(outputs []Output, dirs []string) ([]string, error) {
	var created []string
	for i, dir := range dirs {
		if outputs[i].Destination.Secret != nil {
			continue // checked with the API server (kubeTargets.check)
		}
		if err := identity.CheckDirOwned(dir, outputs[i].owner); err != nil {
			return nil, fmt.Errorf("output %q: %w", outputs[i].Name, err)
		}
		for _, p := range identity.MissingParents(dir) {
			if !slices.Contains(created, p) {
				created = append(created, p)
			}
		}
	}
	return created, nil
}

// newOutputKeys generates fresh keys for every output and the request
// entries that carry their public halves.
func newOutputKeys(outputs []Output) ([]*identity.Keys, []identity.OutputRequest, error) {
	keys := make([]*identity.Keys, len(outputs))
	requests := make([]identity.OutputRequest, len(outputs))
	for i := range outputs {
		out := &outputs[i]
		kind, ok := outputKinds[out.Type]
		if !ok {
			return nil, nil, fmt.Errorf("output %q: type %q is not an output type", out.Name, out.Type)
		}
		var err error
		if keys[i], err = newKeys(kind); err != nil {
			return nil, nil, err
		}
		requests[i] = identity.OutputRequest{Name: out.Name, Roles: out.Roles}
		if out.Type != OutputTypeIdentity {
			// An identity output sends no type, so that an authority that
			// predates output types understands it.
			requests[i].Type = out.Type
		}
		if keys[i].SSH != nil {
			requests[i].SSHPublicKey = keys[i].SSHPublicKey()
		}
		if keys[i].TLS != nil {
			requests[i].TLSPublicKey = keys[i].TLSPublicKeyPEM()
		}
		kind.request(out, &requests[i])
	}
	return keys, requests, nil
}

// renderOutputs lays out each output's files from the authority's answer
// resp, checking every value, and says what each output is.
func renderOutputs(outputs []Output, dirs []string, keys []*identity.Keys, resp *identity.JoinResponse) ([]IssuedOutput, [][]identity.File, error) {
	if len(resp.Outputs) != len(outputs) {
		return nil, nil, fmt.Errorf("the authority answered with %d outputs for %d asked", len(resp.Outputs), len(outputs))
	}
	issued := make([]IssuedOutput, len(outputs))
	rendered := make([][]identity.File, len(outputs))
	for i, out := range outputs {
		grant := &resp.Outputs[i]
		if grant.Name != out.Name {
			return nil, nil, fmt.Errorf("the authority answered output %q where %q was asked", grant.Name, out.Name)
		}
		if want := out.Type; grant.Type != want && (grant.Type != "" || want != OutputTypeIdentity) {
			return nil, nil, fmt.Errorf("the authority answered output %q with type %s where %s was asked", out.Name, identity.Quote(grant.Type), want)
		}
		var err error
		if rendered[i], err = outputKinds[out.Type].render(dirs[i], keys[i], resp, grant); err != nil {
			return nil, nil, fmt.Errorf("output %q: %w", out.Name, err)
		}
		issued[i] = IssuedOutput{Dir: dirs[i], Grant: grant}
		if out.Destination.Secret != nil {
			issued[i].Secret = out.Destination.String()
		}
		if d, ok := outputKinds[out.Type].(summarizer); ok {
			issued[i].Summary = d.summary(dirs[i], grant)
		}
	}
	return issued, rendered, nil
}

// writeOutputs writes each output's directory or Secret, as rendered,
// adding each directory it writes to written and filling in issued's
// Secrets.
func writeOutputs(ctx context.Context, kube *kubeTargets, outputs []Output, dirs []string, rendered [][]identity.File, issued []IssuedOutput,
	written *[]string, wrote func(Output, string)) error {
	if wrote == nil {
		wrote = func(Output, string) {}
	}
	// The directories are written together, all or nothing: if one
	// cannot be, none is replaced (and Issue removes earlier identities).
	var onDisk []identity.OutputDir
	var at []int
	for i := range outputs {
		if outputs[i].Destination.Secret == nil {
			onDisk = append(onDisk, identity.OutputDir{Path: dirs[i], Files: rendered[i], Owner: outputs[i].owner})
			at = append(at, i)
		}
	}
	if len(onDisk) > 0 {
		if err := identity.WriteDirs(onDisk); err != nil {
			var de *identity.DirError
			if errors.As(err, &de) {
				return fmt.Errorf("output %q: %w", outputs[at[de.Index]].Name, de.Err)
			}
			return err
		}
	}
	for _, i := range at {
		*written = append(*written, dirs[i])
		wrote(outputs[i], dirs[i])
	}
	// Secrets come last, each in one write: Issue never removes a Secret,
	// so one is written only once every directory is.
	for i := range outputs {
		if outputs[i].Destination.Secret == nil {
			continue
		}
		res, err := kube.write(ctx, outputs[i], rendered[i])
		if err != nil {
			return fmt.Errorf("output %q: %w", outputs[i].Name, err)
		}
		r, _ := kube.ref(outputs[i])
		issued[i].Secret = r.String()
		issued[i].Conflicts = res.Conflicts
		wrote(outputs[i], dirs[i])
	}
	return nil
}

func inGitHubActions(env joiners.Env) bool { return env("GITHUB_ACTIONS") == "true" }

// writeGitHubOutputs sets step outputs naming the identity's files (never
// their contents): unprefixed for a single output, as <name>-<key> for each
// of several.
func writeGitHubOutputs(env joiners.Env, outputs []IssuedOutput) error {
	path := env("GITHUB_OUTPUT")
	if !inGitHubActions(env) || path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("writing step outputs to GITHUB_OUTPUT: %w", err)
	}
	defer f.Close()
	for _, out := range outputs {
		prefix := ""
		if len(outputs) > 1 {
			prefix = out.Grant.Name + "-"
		}
		dir := out.Dir
		if t := out.Grant.Type; t != "" && t != OutputTypeIdentity {
			if _, err := fmt.Fprintf(f, "%sdestination-dir=%s\n", prefix, dir); err != nil {
				return err
			}
			continue
		}
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
			if _, err := fmt.Fprintf(f, "%s%s=%s\n", prefix, kv[0], kv[1]); err != nil {
				return err
			}
		}
	}
	return f.Close()
}
