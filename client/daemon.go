package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"time"

	"github.com/mbot-dev/mbot/identity"
	"gopkg.in/yaml.v3"
)

// minRenewalInterval keeps a mistyped renewal_interval from hammering the authority.
const minRenewalInterval = time.Second

// DaemonOptions are the inputs of mbot start: those of mbot issue, plus
// when to renew and where to report health.
type DaemonOptions struct {
	IssueOptions
	// RenewalInterval is the time between renewals; zero means
	// renewal_interval from mbot.yaml, else a third of the TTL.
	RenewalInterval time.Duration
	// HealthAddr, when set, serves GET /healthz there over plain HTTP.
	HealthAddr string
	// Reload delivers a value for each request to reload mbot.yaml and
	// renew at once (SIGHUP).
	Reload <-chan os.Signal
	// Log receives the daemon's progress and every failure; nil logs text to stderr.
	Log *slog.Logger
	// HealthListening, if set, is called with the health endpoint's address.
	HealthListening func(net.Addr)
}

// RenewalInterval is renewal_interval in mbot.yaml, written like ttl.
type RenewalInterval time.Duration

func (d *RenewalInterval) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v <= 0 {
		return fmt.Errorf("line %d: renewal_interval: %q is not a positive duration such as 20m or 1h", n.Line, n.Value)
	}
	*d = RenewalInterval(v)
	return nil
}

// RunDaemon joins, writes the outputs and keeps them fresh until ctx ends
// (SIGTERM, SIGINT), when it returns nil and leaves the outputs in place.
//
// A join token of method token is joined once with its single-use secret;
// after that the daemon renews with its current certificate (POST
// /v1/renew), also after a restart while that certificate is valid. Other
// methods join again with a fresh proof from the platform each time, and
// wait for one while the platform hands out the proof already used.
//
// A failed renewal is logged and retried with backoff; credentials that
// are still valid are never removed. The daemon does not exit because
// renewals fail, even once the credentials expired: it keeps retrying and
// /healthz answers 503, for the supervisor or monitoring to act on. It
// returns an error only for settings it cannot start with.
func RunDaemon(ctx context.Context, o DaemonOptions) error {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	s, err := resolveSettings(o)
	if err != nil {
		return err
	}
	d := &daemon{opts: o, set: s, log: o.Log, health: newHealth()}
	if o.HealthAddr != "" {
		stop, err := serveHealth(o.HealthAddr, d.health, d.log, o.HealthListening)
		if err != nil {
			return err
		}
		defer stop()
	}
	d.resume()
	return d.loop(ctx)
}

// settings are DaemonOptions resolved against mbot.yaml and the defaults.
type settings struct {
	issue    IssueOptions
	dirs     []string // absolute destination of each output
	interval time.Duration
}

func resolveSettings(o DaemonOptions) (*settings, error) {
	s := &settings{issue: o.IssueOptions, interval: o.RenewalInterval}
	s.issue.Outputs = slices.Clone(o.Outputs) // resolve fills them in; reloads start from the flags again
	if s.issue.Env == nil {
		s.issue.Env = os.Getenv
	}
	if s.issue.Stdout == nil {
		s.issue.Stdout = io.Discard
	}
	if err := s.issue.resolve(); err != nil {
		return nil, err
	}
	if first := s.issue.Outputs[0]; first.Cluster != "" {
		return nil, fmt.Errorf("mbot start renews with its first output's identity, but the first output is of leaf cluster %s; list an identity output of the root first", first.Cluster)
	}
	if t := s.issue.Outputs[0].Type; t != OutputTypeIdentity {
		// Renewals over mTLS present the first output's certificate: the
		// bot's identity, which only an identity output holds.
		return nil, fmt.Errorf("mbot start renews with its first output's identity, but the first output is of type %s; list an identity output first", t)
	}
	if s.issue.JoinMethod == tokenMethod && s.issue.Outputs[0].Destination.Secret != nil {
		// The identity is read back from its files to renew it over mTLS.
		return nil, fmt.Errorf("mbot start with join method token renews with its first output's identity, read back from its directory, but the first output is written to a Secret; give the first output a directory (such as an emptyDir volume)")
	}
	where := "--renewal-interval (MBOT_RENEWAL_INTERVAL)"
	if s.interval == 0 && s.issue.Config != "" {
		cfg, err := LoadConfig(s.issue.Config)
		if err != nil {
			return nil, err
		}
		if s.interval = time.Duration(cfg.RenewalInterval); s.interval != 0 {
			where = "renewal_interval in " + s.issue.Config
		}
	}
	// JWT-SVIDs live at most identity.MaxJWTSVIDTTL whatever the TTL.
	hasJWT := slices.ContainsFunc(s.issue.Outputs, func(o Output) bool { return o.Type == OutputTypeJWT })
	if s.interval == 0 {
		s.interval = s.issue.TTL / 3
		if hasJWT {
			s.interval = min(s.interval, identity.MaxJWTSVIDTTL/3)
		}
	}
	switch {
	case hasJWT && s.interval >= identity.MaxJWTSVIDTTL:
		return nil, fmt.Errorf("%s %s is not shorter than a JWT-SVID lives (%s), so a workload-identity-jwt output would expire between renewals; renew more often (such as 20m)",
			where, s.interval, identity.MaxJWTSVIDTTL)
	case s.interval < minRenewalInterval:
		return nil, fmt.Errorf("%s %s is too short; renew at most every %s", where, s.interval, minRenewalInterval)
	case s.interval >= s.issue.TTL:
		return nil, fmt.Errorf("%s %s must be shorter than --ttl %s, so that the outputs are renewed before they expire (default: a third of the TTL)",
			where, s.interval, s.issue.TTL)
	}
	if err := checkReloadPrograms(s.issue.Outputs); err != nil {
		return nil, err
	}
	dirs, err := outputDirs(s.issue.Outputs)
	if err != nil {
		return nil, err
	}
	s.dirs = dirs
	if _, err := checkDestinations(s.issue.Outputs, s.dirs); err != nil {
		return nil, err
	}
	return s, nil
}

// daemon is one running mbot start.
type daemon struct {
	opts   DaemonOptions
	set    *settings
	log    *slog.Logger
	health *health
	// self is what a token-joined daemon renews with; nil for other methods
	// and before the first token join.
	self *selfIdentity
	// pending holds the keys of a renewal that has not been answered yet;
	// its retries ask for the same keys (see store.Renewal.Keys).
	pending *pendingKeys
	// lastProof is the fingerprint of the last proof the authority saw.
	lastProof [sha256.Size]byte
	// written are the outputs the attempt under way has written, whose
	// reload commands run when it ends, whether or not it succeeded.
	written []writtenOutput
}

// wrote records an output just written, for its reload command.
func (d *daemon) wrote(out Output, dir string) {
	d.written = append(d.written, writtenOutput{out: out, dir: dir})
}

// errSameProof is what a renewal waits on when the platform hands out the
// proof the authority has already seen: it accepts each proof once.
var errSameProof = errors.New("waiting for a fresh proof")

// checkProof refuses to send the proof the authority saw last: it would be
// refused as a replay (and audited as one). Platforms hand out the same
// token for a while: the kubelet rewrites a projected service account
// token only at 80% of its lifetime, and metadata servers cache theirs.
// The renewal is retried until the platform issues a fresh one; with a
// token lifetime below the certificates' this is before they expire.
func (d *daemon) checkProof(method string, fingerprint [sha256.Size]byte) error {
	if method == tokenMethod || fingerprint != d.lastProof {
		return nil
	}
	return fmt.Errorf("%w: the %s proof is the one the last join used, and the authority accepts a proof once; "+
		"retrying until the platform issues a new one (a Kubernetes projected token is rewritten at 80%% of its expirationSeconds)", errSameProof, method)
}

// resume takes up valid credentials that an earlier run of the same
// settings left in the outputs, so that they count as valid while the first
// renewal is tried and, for a token join, can be renewed without a new secret.
func (d *daemon) resume() {
	var notAfter time.Time
	for _, dir := range d.set.dirs {
		sum, err := readSummary(dir)
		if err != nil || sum.JoinToken != d.set.issue.Token || !time.Now().Before(sum.NotAfter) {
			return
		}
		if notAfter.IsZero() || sum.NotAfter.Before(notAfter) {
			notAfter = sum.NotAfter
		}
	}
	d.health.resumed(notAfter)
	if d.set.issue.JoinMethod == tokenMethod {
		if self, err := loadSelfIdentity(d.set.dirs[0]); err == nil && self.method == tokenMethod {
			d.self = self
		}
	}
	d.log.Info("found valid credentials from an earlier run; renewing them now", "valid_until", notAfter.UTC(), "renew_with_identity", d.self != nil)
}

func (d *daemon) loop(ctx context.Context) error {
	retry := newBackoff(d.set.interval)
	timer := time.NewTimer(0) // the first attempt is at once
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			d.stopping()
			return nil
		case <-d.opts.Reload:
			d.reload()
			retry = newBackoff(d.set.interval)
		case <-timer.C:
		}
		res, err := d.refresh(ctx)
		// Each output written is reloaded, also when a later one failed:
		// its files are in place either way. An output not written is not.
		if failed := reloadWritten(ctx, d.log, d.written); failed > 0 {
			d.health.reloadFailed(failed)
		}
		d.written = nil
		if ctx.Err() != nil {
			d.stopping()
			return nil
		}
		if err != nil {
			wait := retry.next()
			d.failed(err, wait)
			timer.Reset(wait)
			continue
		}
		retry.reset()
		timer.Reset(d.renewed(res))
	}
}

func (d *daemon) stopping() {
	d.log.Info("stopping; the outputs stay in place until they expire", "valid_until", d.health.validUntil().UTC())
}

// reload reads mbot.yaml again; on an error it keeps the settings it has.
func (d *daemon) reload() {
	s, err := resolveSettings(d.opts)
	if err != nil {
		d.log.Error("reloading the settings failed; keeping the previous ones", "err", err)
		return
	}
	if s.issue.Token != d.set.issue.Token || s.issue.Authority != d.set.issue.Authority || s.issue.JoinMethod != tokenMethod {
		d.self = nil // the identity belongs to the previous join
	}
	d.set, d.pending = s, nil
	d.log.Info("reloaded the settings; renewing now", "config", s.issue.Config, "outputs", len(s.issue.Outputs), "ttl", s.issue.TTL, "renewal_interval", s.interval)
}

// refresh writes fresh credentials to every output: a renewal with the
// current identity after a token join, a new join otherwise.
func (d *daemon) refresh(ctx context.Context) (*IssueResult, error) {
	if d.self != nil {
		if time.Now().Before(d.self.notAfter) {
			return d.renewWithIdentity(ctx)
		}
		res, err := d.join(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w\n(the identity of join token %q expired at %s before it could be renewed, so only a new secret can join again: "+
				"have an admin run mbot tokens add, put the secret in MBOT_JOIN_SECRET and restart mbot start)",
				err, d.self.joinToken, d.self.notAfter.UTC().Format(time.RFC3339))
		}
		return res, nil
	}
	return d.join(ctx)
}

// join joins as mbot issue does, but never removes what is already written.
func (d *daemon) join(ctx context.Context) (*IssueResult, error) {
	d.pending = nil
	var written []string
	o := d.set.issue
	o.wrote = d.wrote
	o.checkProof = d.checkProof
	o.sentProof = func(fingerprint [sha256.Size]byte) { d.lastProof = fingerprint }
	res, err := issue(ctx, o, d.set.dirs, &written)
	if err != nil {
		return nil, err
	}
	d.self = nil
	if res.Method == tokenMethod {
		if d.self, err = loadSelfIdentity(d.set.dirs[0]); err != nil {
			return nil, fmt.Errorf("reading back the identity just written, to renew it later: %w", err)
		}
	}
	return res, nil
}

// renewed logs a success and returns the time until the next renewal.
func (d *daemon) renewed(res *IssueResult) time.Duration {
	now := time.Now()
	notAfter := res.Outputs[0].Grant.NotAfter
	for _, out := range res.Outputs[1:] {
		if out.Grant.NotAfter.Before(notAfter) {
			notAfter = out.Grant.NotAfter
		}
	}
	d.health.renewed(now, notAfter)
	wait := d.set.interval
	if lifetime := notAfter.Sub(now); wait >= lifetime {
		wait = lifetime / 3
		d.log.Warn("the authority granted a shorter lifetime than the renewal interval; renewing every third of it", "granted", lifetime.Round(time.Second), "renewal_interval", d.set.interval)
	}
	for _, w := range res.Response.Warnings {
		d.log.Warn(w)
	}
	dirs := make([]string, len(res.Outputs))
	for i, out := range res.Outputs {
		dirs[i] = out.Dir
	}
	attrs := []any{"bot", res.Response.Bot, "method", res.Method, "outputs", dirs,
		"not_after", notAfter.UTC(), "next_renewal", now.Add(wait).UTC().Round(time.Second)}
	if res.CIPlatform != "" {
		attrs = append(attrs, "ci_platform", res.CIPlatform)
	}
	d.log.Info("wrote fresh credentials", attrs...)
	return wait
}

// failed logs a failed attempt; what is written stays.
func (d *daemon) failed(err error, retryIn time.Duration) {
	validUntil := d.health.validUntil()
	waiting := errors.Is(err, errSameProof) && time.Now().Before(validUntil)
	if !waiting { // waiting for the platform is not a failure
		d.health.failed(err)
	}
	switch {
	case waiting:
		d.log.Info("the current credentials stay in place and valid, retrying", "reason", err,
			"valid_until", validUntil.UTC(), "retry_in", retryIn.Round(time.Millisecond))
	case validUntil.IsZero():
		d.log.Error("join failed; retrying", "err", err, "retry_in", retryIn.Round(time.Millisecond))
	case time.Now().Before(validUntil):
		d.log.Warn("renewal failed; the current credentials stay in place and valid, retrying", "err", err,
			"valid_until", validUntil.UTC(), "retry_in", retryIn.Round(time.Millisecond))
	default:
		d.log.Error("renewal failed and the credentials have expired; retrying", "err", err,
			"expired_at", validUntil.UTC(), "retry_in", retryIn.Round(time.Millisecond))
	}
}
