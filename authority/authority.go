// Package authority is the mbot authority: it verifies join proofs against
// join tokens' allow rules, signs SSH and X.509 certificates for bots, and
// records every join in the audit log.
package authority

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/authority/verify"
)

// Version is set at build time.
var Version = "dev"

// Authority is a running authority's state.
type Authority struct {
	cfg   *Config
	store *store.Store
	cas   *CAs
	env   *verify.Env
	log   *slog.Logger

	// state is swapped whole when resources change, so joins never lock.
	state    atomic.Pointer[state]
	reloadMu sync.Mutex
	// checked is when (UnixNano) the store's resources version was last compared.
	checked atomic.Int64
	locks   lockTables
}

// state is one consistent view of the resources with their join tokens compiled.
type state struct {
	set    *resources.Set
	tokens map[string]*compiledToken
	// version is the store's resources version this state was built from.
	version int64
}

// reloadInterval bounds how stale a join's view of resources changed by
// another process (mbot apply on the authority host, another replica) can be.
const reloadInterval = 250 * time.Millisecond

type compiledToken struct {
	token    *resources.JoinToken
	verifier verify.Verifier
}

// Options tune an authority beyond its config file; the zero value is production.
type Options struct {
	Logger *slog.Logger
	// HTTPClient fetches OIDC discovery and keys; tests use one that trusts a loopback issuer.
	HTTPClient *http.Client
	// Now is the clock used to check proof lifetimes.
	Now func() time.Time
}

// Open opens the store, creates the CAs on first start, applies the
// config's resource files (they win over run-time edits of the same names)
// and compiles every join token. Any error in a resource file is returned
// with its file, line and field.
func Open(ctx context.Context, cfg *Config, opts Options) (*Authority, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	a, err := openStore(ctx, cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := a.applyFiles(ctx); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// OpenLocal opens an authority's store for admin commands on its host (like
// tctl): resources can be read and changed, and a running authority on the
// same store picks the changes up. Resource files are not re-applied.
func OpenLocal(ctx context.Context, cfg *Config, opts Options) (*Authority, error) {
	a, err := openStore(ctx, cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := a.reload(ctx); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

func openStore(ctx context.Context, cfg *Config, opts Options) (*Authority, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	st, err := store.OpenSQLite(ctx, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	a := &Authority{cfg: cfg, store: st, log: opts.Logger,
		env: &verify.Env{Audience: cfg.Audience, HTTPClient: opts.HTTPClient, Now: opts.Now}}
	if a.cas, err = LoadCAs(ctx, st, cfg.ClusterName); err != nil {
		st.Close()
		return nil, err
	}
	if err := a.locks.reload(ctx, st); err != nil {
		st.Close()
		return nil, fmt.Errorf("reading bot locks: %w", err)
	}
	return a, nil
}

// applyFiles applies the config's resource files, as every start does.
func (a *Authority) applyFiles(ctx context.Context) error {
	var fromFiles []resources.Resource
	for _, path := range a.cfg.Resources {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading resources: %w", err)
		}
		parsed, err := resources.Parse(path, data)
		if err != nil {
			return err
		}
		fromFiles = append(fromFiles, parsed...)
	}
	if err := a.Apply(ctx, fromFiles, "resources files at start"); err != nil {
		return err
	}
	return a.store.PruneProofs(ctx, time.Now())
}

// Close releases the store.
func (a *Authority) Close() error { return a.store.Close() }

// CAs returns the authority's certificate authorities.
func (a *Authority) CAs() *CAs { return a.cas }

// Config returns the authority's configuration.
func (a *Authority) Config() *Config { return a.cfg }

// Store returns the authority's store.
func (a *Authority) Store() *store.Store { return a.store }

// Apply checks resources against everything already stored (references,
// join token sections), stores them and makes them effective for the next
// join. actor names who applied them, for the audit log.
func (a *Authority) Apply(ctx context.Context, add []resources.Resource, actor string) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	stored, err := a.loadStored(ctx)
	if err != nil {
		return err
	}
	if _, err := a.compile(append(stored, add...), 0); err != nil {
		return err
	}
	rows := make([]store.StoredResource, len(add))
	names := make([]string, len(add))
	for i, r := range add {
		rows[i] = store.StoredResource{Kind: r.Kind, Name: r.Name(), Body: r.Body}
		names[i] = r.Kind + "/" + r.Name()
	}
	if len(rows) > 0 {
		if err := a.store.PutResources(ctx, rows); err != nil {
			return fmt.Errorf("storing resources: %w", err)
		}
		a.audit(ctx, "resource.apply", actor, strings.Join(names, " "))
	}
	return a.reloadLocked(ctx)
}

// Delete removes a resource unless something still refers to it.
func (a *Authority) Delete(ctx context.Context, kind, name, actor string) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	stored, err := a.loadStored(ctx)
	if err != nil {
		return err
	}
	if err := resources.NewSet(stored).CheckRemovable(kind, name); err != nil {
		return err
	}
	rest := stored[:0:0]
	for _, r := range stored {
		if r.Kind != kind || r.Name() != name {
			rest = append(rest, r)
		}
	}
	if _, err := a.compile(rest, 0); err != nil {
		return fmt.Errorf("cannot remove %s/%s: %w", kind, name, err)
	}
	if err := a.store.DeleteResource(ctx, kind, name); err != nil {
		return err
	}
	a.audit(ctx, "resource.rm", actor, kind+"/"+name)
	return a.reloadLocked(ctx)
}

// Resources returns the resources in effect.
func (a *Authority) Resources() *resources.Set { return a.state.Load().set }

func (a *Authority) audit(ctx context.Context, event, actor, message string) {
	a.auditAdmin(ctx, &store.AuditEvent{Event: event, Allowed: true, Message: message, Remote: actor})
}

// auditAdmin records an admin action that has already taken effect: a
// failure to record it is logged, not returned.
func (a *Authority) auditAdmin(ctx context.Context, ev *store.AuditEvent) {
	if err := a.store.Audit(ctx, ev); err != nil {
		a.log.Error("writing audit record", "event", ev.Event, "err", err)
	}
}

// reload rebuilds the state from the store.
func (a *Authority) reload(ctx context.Context) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	return a.reloadLocked(ctx)
}

func (a *Authority) reloadLocked(ctx context.Context) error {
	version, err := a.store.ResourcesVersion(ctx)
	if err != nil {
		return err
	}
	stored, err := a.loadStored(ctx)
	if err != nil {
		return err
	}
	next, err := a.compile(stored, version)
	if err != nil {
		return err
	}
	// Removing a bot lifts its lock: read them again with the resources.
	if err := a.locks.reload(ctx, a.store); err != nil {
		return fmt.Errorf("reading bot locks: %w", err)
	}
	a.state.Store(next)
	a.checked.Store(time.Now().UnixNano())
	return nil
}

// refreshNow reloads the resources at once if another process changed them,
// and reports whether it did.
func (a *Authority) refreshNow(ctx context.Context) bool {
	version, err := a.store.ResourcesVersion(ctx)
	if err != nil || version == a.state.Load().version {
		return false
	}
	if err := a.reload(ctx); err != nil {
		a.log.Error("reloading resources changed in the store; keeping the previous ones", "err", err)
		return false
	}
	return true
}

// refresh picks up resource changes and bot locks made by other processes,
// checking the store at most every reloadInterval. A bad change keeps the
// current state.
func (a *Authority) refresh(ctx context.Context) {
	now := time.Now().UnixNano()
	last := a.checked.Load()
	if now-last < int64(reloadInterval) || !a.checked.CompareAndSwap(last, now) {
		return
	}
	if a.refreshNow(ctx) {
		return // reloading the resources read the locks too
	}
	if err := a.locks.reload(ctx, a.store); err != nil {
		a.log.Error("reading bot locks from the store; keeping the previous ones", "err", err)
	}
}

func (a *Authority) loadStored(ctx context.Context) ([]resources.Resource, error) {
	rows, err := a.store.Resources(ctx)
	if err != nil {
		return nil, err
	}
	var out []resources.Resource
	for _, row := range rows {
		parsed, err := resources.Parse(fmt.Sprintf("stored %s/%s", row.Kind, row.Name), row.Body)
		if err != nil {
			return nil, err
		}
		out = append(out, parsed...)
	}
	return out, nil
}

func (a *Authority) compile(all []resources.Resource, version int64) (*state, error) {
	set := resources.NewSet(all)
	if err := set.CheckReferences(); err != nil {
		return nil, err
	}
	s := &state{set: set, tokens: make(map[string]*compiledToken, len(set.JoinTokens)), version: version}
	for name, tok := range set.JoinTokens {
		method, ok := verify.Methods[tok.Spec.Method]
		if !ok {
			return nil, fmt.Errorf("%s: join_token %q: spec.method %q is not supported; supported methods: %v",
				tok.Source, name, tok.Spec.Method, verify.MethodNames())
		}
		v, err := method.Compile(name, tok.Spec.Section(), a.env)
		if err != nil {
			return nil, withFile(tok.Source, fmt.Sprintf("join_token %q", name), err)
		}
		s.tokens[name] = &compiledToken{token: tok, verifier: v}
	}
	return s, nil
}

// withFile prefixes a "line N: msg" error from a method's section parser
// with the resource file, as "file:N: what: msg".
func withFile(src resources.Source, what string, err error) error {
	var line int
	var rest string
	if n, _ := fmt.Sscanf(err.Error(), "line %d:", &line); n == 1 {
		_, rest, _ = strings.Cut(err.Error(), ": ")
		return fmt.Errorf("%s:%d: %s: %s", src.File, line, what, rest)
	}
	return fmt.Errorf("%s: %s: %w", src, what, err)
}
