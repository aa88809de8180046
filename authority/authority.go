// Package authority is the mbot authority: it verifies join proofs against
// join tokens' allow rules, signs SSH and X.509 certificates for bots, and
// records every join in the audit log.
package authority

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/authority/trust"
	"github.com/mbot-dev/mbot/authority/tunnel"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
)

// Version is set at build time.
var Version = "dev"

// Authority is a running authority's state.
type Authority struct {
	cfg   *Config
	store timedStore
	// cas is swapped whole when a CA rotation changes phase (reloadCAs).
	cas atomic.Pointer[CAs]
	kek *KEK
	// serving is the TLS config for the current CAs (ServingTLS).
	serving atomic.Pointer[servingTLS]
	// listening is the address Serve listens on, once it does.
	listening atomic.Pointer[net.Addr]
	// metrics are served on metrics_listen (metrics.go).
	metrics *metrics
	env     *verify.Env
	log     *slog.Logger

	// state is swapped whole when resources change, so joins never lock.
	state    atomic.Pointer[state]
	reloadMu sync.Mutex
	// checked is when (UnixNano) the store's resources version was last compared.
	checked atomic.Int64
	// lockReadErrors quiets the error of reading locks while the store is down.
	lockReadErrors repeatedErrorLog
	// lockViewErrors quiets the error of reading the locks to push to leaves.
	lockViewErrors repeatedErrorLog
	lockSet        lockSet
	// adminOnly is set by OpenLocal: the store is opened for admin commands,
	// never to serve joins, so a join token stored before allow rules had to
	// pin an owner is left out instead of locking the admin out; mbot lint
	// reports it and mbot apply replaces it. Open and Apply still refuse it.
	adminOnly bool
	// refusals limits refused requests per remote address (refusals.go);
	// limiter caps the work of addresses it limits (guard.go).
	refusals refusalLimiter
	limiter  *limiter
	// revocations holds the revocation lists as last rendered (revocation.go).
	revocations *revocationCache
	// issuer is the OIDC issuer URL once Serve knows its port (issuerURL).
	issuer atomic.Pointer[string]
	// trust is what this authority, as a leaf, knows of its roots;
	// hub holds the tunnels of its leaves, as a root (clusters.go).
	trust *trust.Roots
	hub   *tunnel.Hub
	// leafCAs are the TLS CAs each attached leaf announced (clusters.go).
	leafCAs leafCAs
	// lockPushes pushes the locks to each leaf on its own (clusters.go).
	lockPushes lockPushes
	// pushedSerials are the certificates the pushed claim and join_token
	// locks cover (clusters.go).
	pushedSerials pushedSerials
	// fixing is set by OpenLocal when the stored resources do not load:
	// admin commands then work on what does, so that the rest can be
	// replaced or removed.
	fixing bool
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
	// Read the resource files before the store: a mistake in them must not
	// leave a new data_dir behind.
	fromFiles, err := readResourceFiles(cfg)
	if err != nil {
		return nil, err
	}
	undo := freshDataDir(cfg.DataDir)
	a, err := openStore(ctx, cfg, opts)
	if err != nil {
		undo()
		return nil, err
	}
	if err := a.applyFiles(ctx, fromFiles); err != nil {
		a.Close()
		undo()
		return nil, err
	}
	return a, nil
}

// freshDataDir returns a function that removes what a first start creates in
// dataDir (the directory if it did not exist, else a new mbot.db and its
// journal files), so that a start that fails leaves nothing behind; or does
// nothing when the store already exists.
func freshDataDir(dataDir string) func() {
	db := filepath.Join(dataDir, store.FileName)
	if _, err := os.Lstat(db); !errors.Is(err, fs.ErrNotExist) {
		return func() {}
	}
	if _, err := os.Lstat(dataDir); errors.Is(err, fs.ErrNotExist) {
		// The top-most directory the start creates (MkdirAll may make several).
		top := filepath.Clean(dataDir)
		for parent := filepath.Dir(top); parent != top; parent = filepath.Dir(top) {
			if _, err := os.Lstat(parent); !errors.Is(err, fs.ErrNotExist) {
				break
			}
			top = parent
		}
		return func() { _ = os.RemoveAll(top) }
	}
	return func() {
		for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
			_ = os.Remove(db + suffix)
		}
	}
}

// readResourceFiles parses the config's resource files.
func readResourceFiles(cfg *Config) ([]resources.Resource, error) {
	var fromFiles []resources.Resource
	for _, path := range cfg.Resources {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading resources: %w", err)
		}
		parsed, err := resources.Parse(path, data)
		if err != nil {
			return nil, err
		}
		fromFiles = append(fromFiles, parsed...)
	}
	return fromFiles, nil
}

// ResourceFileSet is the set of cfg's resources: files alone, checked as a
// start checks them, read without opening or creating the store: what the
// first start will apply, for mbot lint before it.
func ResourceFileSet(cfg *Config) (*resources.Set, error) {
	fromFiles, err := readResourceFiles(cfg)
	if err != nil {
		return nil, err
	}
	set := resources.NewSet(fromFiles)
	if err := set.CheckReferences(); err != nil {
		return nil, err
	}
	return set, nil
}

// StoreCreated says whether cfg's store exists: for SQLite, whether
// data_dir holds the database a first start creates; a PostgreSQL database
// is provisioned by the operator, so it is taken to exist.
func StoreCreated(cfg *Config) bool {
	if cfg.Storage.Type == "postgres" {
		return true
	}
	_, err := os.Stat(filepath.Join(cfg.DataDir, store.FileName))
	return err == nil
}

// OpenLocal opens an authority's store for admin commands on its host (like
// tctl): resources can be read and changed, and a running authority on the
// same store picks the changes up. Resource files are not re-applied.
func OpenLocal(ctx context.Context, cfg *Config, opts Options) (*Authority, error) {
	a, err := openStore(ctx, cfg, opts)
	if err != nil {
		return nil, err
	}
	a.adminOnly = true
	if err := a.reload(ctx); err != nil {
		a.fixing = true
		if lerr := a.reloadFixing(ctx, err); lerr != nil {
			a.Close()
			return nil, err
		}
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
	kek, err := LoadKEK(cfg)
	if err != nil {
		return nil, err
	}
	st, err := OpenStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	m := newMetrics()
	a := &Authority{cfg: cfg, store: timedStore{Store: st, m: m}, metrics: m, log: opts.Logger, kek: kek,
		env:   &verify.Env{Audience: cfg.Audience, HTTPClient: opts.HTTPClient, Now: opts.Now, Observe: m.outbound},
		trust: trust.NewRoots(client.FetchClusterCA, nil), hub: tunnel.NewHub(), limiter: newLimiter(), revocations: newRevocationCache()}
	a.env.Keypairs = st
	m.watch(a, st.Pools())
	cas, err := LoadCAs(ctx, st, cfg.ClusterName, kek)
	if err != nil {
		st.Close()
		return nil, err
	}
	a.cas.Store(cas)
	if a.env.ChallengeKey, err = loadChallengeKey(ctx, st, kek); err != nil {
		st.Close()
		return nil, err
	}
	if err := a.lockSet.reload(ctx, st); err != nil {
		st.Close()
		return nil, fmt.Errorf("reading bot locks: %w", err)
	}
	if changes := st.Changes(); changes != nil {
		go a.followChanges(changes)
	}
	return a, nil
}

// OpenStore opens the store the config's storage section names: SQLite
// in data_dir, or the PostgreSQL database that replicas share.
func OpenStore(ctx context.Context, cfg *Config) (store.Store, error) {
	if cfg.Storage.Type == "postgres" {
		return store.OpenPostgres(ctx, cfg.Storage.DSN)
	}
	return store.OpenSQLite(ctx, cfg.DataDir)
}

// followChanges reloads resources, CAs under rotation and locks (of bots,
// instances and admins) as soon as the store says another replica changed
// them (PostgreSQL's LISTEN/NOTIFY), instead of at the next join after
// reloadInterval. It ends when the store closes.
func (a *Authority) followChanges(changes <-chan struct{}) {
	for range changes {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		// Before the first load (Open still starting) there is nothing to refresh.
		if a.state.Load() == nil {
			a.reloadLocksLogged(ctx)
		} else {
			a.refreshNow(ctx)
		}
		cancel()
	}
}

// applyFiles applies the config's resource files, as every start does.
func (a *Authority) applyFiles(ctx context.Context, fromFiles []resources.Resource) error {
	if err := a.Apply(ctx, fromFiles, "resources files at start"); err != nil {
		return err
	}
	return a.store.PruneProofs(ctx, time.Now())
}

// Close releases the store.
func (a *Authority) Close() error { return a.store.Close() }

// CAs returns the authority's certificate authorities.
func (a *Authority) CAs() *CAs { return a.cas.Load() }

// Config returns the authority's configuration.
func (a *Authority) Config() *Config { return a.cfg }

// Store returns the authority's store.
func (a *Authority) Store() store.Store { return a.store.Store }

// Apply checks resources against everything already stored (references,
// join token sections), stores them and makes them effective for the next
// join. actor names who applied them, for the audit log.
func (a *Authority) Apply(ctx context.Context, add []resources.Resource, actor string) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	stored, stale, err := a.loadStored(ctx)
	if err != nil {
		return err
	}
	for _, r := range stale {
		replaced := slices.ContainsFunc(add, func(n resources.Resource) bool { return n.Kind == r.kind && n.Name() == r.name })
		if !replaced && !a.fixing {
			return r.err
		}
	}
	st, err := a.compile(append(stored, add...), 0, false)
	if err != nil {
		return err
	}
	if err := st.set.CheckClusterNames(adminName); err != nil {
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
	stored, stale, err := a.loadStored(ctx)
	if err != nil {
		return err
	}
	removingStale := false
	for _, r := range stale {
		switch {
		case r.kind == kind && r.name == name:
			removingStale = true
		case !a.fixing:
			return r.err
		}
	}
	if !removingStale {
		if err := resources.NewSet(stored).CheckRemovable(kind, name); err != nil {
			return err
		}
	}
	rest := stored[:0:0]
	for _, r := range stored {
		if r.Kind != kind || r.Name() != name {
			rest = append(rest, r)
		}
	}
	if _, err := a.compile(rest, 0, false); err != nil {
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

// auditAdmin records an admin action that has already taken effect, or a
// refusal that has no other record (which the guard may summarise
// instead, guard.go): a failure to record it is logged, not returned.
func (a *Authority) auditAdmin(ctx context.Context, ev *store.AuditEvent) {
	if st := stateOf(ctx); st != nil && !ev.Allowed {
		if ev.Code != "" {
			st.code = identity.ErrorCode(ev.Code)
		}
		if st.limited {
			return
		}
	}
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
	stored, stale, err := a.loadStored(ctx)
	if err == nil && len(stale) > 0 {
		err = stale[0].err
	}
	if err != nil {
		return a.reloadFixing(ctx, err)
	}
	next, err := a.compile(stored, version, a.adminOnly)
	if err != nil {
		return a.reloadFixing(ctx, err)
	}
	// Removing a bot lifts its lock: read them again with the resources.
	if err := a.reloadLocks(ctx); err != nil {
		return fmt.Errorf("reading bot locks: %w", err)
	}
	// A CA rotation step bumps the resources version too. CAs that do not
	// load (a key sealed with another KEK) leave the current ones in use.
	if err := a.reloadCAs(ctx); err != nil {
		a.log.Error("keeping the current CAs", "err", err)
	}
	a.state.Store(next)
	a.checked.Store(time.Now().UnixNano())
	return nil
}

// reloadCAs loads the CAs again if a rotation changed in the store.
func (a *Authority) reloadCAs(ctx context.Context) error {
	rotations, err := a.store.CARotations(ctx)
	if err != nil {
		return err
	}
	cur := a.CAs()
	if cur != nil && len(rotations) == len(cur.rotations) && !slices.ContainsFunc(rotations, func(r store.CARotation) bool {
		return cur.rotations[r.CA] != r
	}) {
		return nil
	}
	cas, err := LoadCAs(ctx, a.store.Store, a.cfg.ClusterName, a.kek)
	if err != nil {
		return fmt.Errorf("loading the CAs after a rotation step: %w", err)
	}
	a.cas.Store(cas)
	a.log.Info("CA rotation changed; CAs reloaded", "rotations", len(rotations))
	if addr := a.listening.Load(); addr != nil {
		// Its ca.crt and pin follow the TLS CA's rotation.
		return a.ensureAdminIdentity(ctx, *addr)
	}
	return nil
}

// refreshNow reads the store's resources and locks versions (one query)
// and reloads what another process changed, and reports whether it
// reloaded anything.
func (a *Authority) refreshNow(ctx context.Context) bool {
	v, err := a.store.Versions(ctx)
	if err != nil {
		return false
	}
	a.checked.Store(time.Now().UnixNano())
	if v.Resources != a.state.Load().version {
		if err := a.reload(ctx); err != nil {
			a.log.Error("reloading resources changed in the store; keeping the previous ones", "err", err)
			return false
		}
		return true
	}
	if v.Locks != a.Locks().Generation() {
		a.reloadLocksLogged(ctx)
		return true
	}
	return false
}

// refresh picks up resource and lock changes made by other processes,
// checking the store at most every reloadInterval. A bad change keeps the
// current state. Joins, renewals and exchanges do not depend on it to be
// current: their commit checks the versions they were decided on.
func (a *Authority) refresh(ctx context.Context) {
	now := time.Now().UnixNano()
	last := a.checked.Load()
	if now-last < int64(reloadInterval) || !a.checked.CompareAndSwap(last, now) {
		return
	}
	a.refreshNow(ctx)
}

// reloadLocksLogged reads the locks again, logging a failure that repeats
// (the store is down) once per repeatedErrorEvery.
func (a *Authority) reloadLocksLogged(ctx context.Context) {
	if err := a.reloadLocks(ctx); err != nil {
		a.lockReadErrors.failed(a.log, "reading locks from the store; keeping the previous ones", err)
		return
	}
	a.lockReadErrors.succeeded(a.log, "reading locks from the store works again")
}

// staleResource is a stored resource that no longer loads: stored by an
// earlier version whose checks were looser.
type staleResource struct {
	kind, name string
	err        error
}

// loadStored parses every stored resource. Those that no longer load are
// left out and returned as stale, each with an error that says what to do.
func (a *Authority) loadStored(ctx context.Context) ([]resources.Resource, []staleResource, error) {
	rows, err := a.store.Resources(ctx)
	if err != nil {
		return nil, nil, err
	}
	var out []resources.Resource
	var stale []staleResource
	for _, row := range rows {
		parsed, err := resources.Parse(fmt.Sprintf("stored %s/%s", row.Kind, row.Name), row.Body)
		if err != nil {
			stale = append(stale, staleResource{kind: row.Kind, name: row.Name,
				err: fmt.Errorf("%w; %s/%s was stored by an earlier version and no longer passes this one's checks: apply a corrected version or remove it (mbot rm %s/%s --config <authority.yaml>)",
					err, row.Kind, row.Name, row.Kind, row.Name)})
			continue
		}
		out = append(out, parsed...)
	}
	return out, stale, nil
}

// reloadFixing is what a reload that failed with err does: an error, except
// for admin commands opened by OpenLocal on resources that do not load,
// which go on with those that do (and a placeholder, granting nothing, for
// each that does not, so that it can be listed and removed) and say so.
func (a *Authority) reloadFixing(ctx context.Context, err error) error {
	if !a.fixing {
		return err
	}
	stored, stale, lerr := a.loadStored(ctx)
	if lerr != nil {
		return err
	}
	for _, r := range stale {
		meta := resources.Metadata{Name: r.name, Description: "stored by an earlier version; no longer loads"}
		src := resources.Source{File: "stored " + r.kind + "/" + r.name}
		switch r.kind {
		case resources.KindRole:
			stored = append(stored, resources.Resource{Kind: r.kind, Role: &resources.Role{Metadata: meta, Source: src}})
		case resources.KindBot:
			stored = append(stored, resources.Resource{Kind: r.kind, Bot: &resources.Bot{Metadata: meta, Source: src}})
		case resources.KindJoinToken:
			stored = append(stored, resources.Resource{Kind: r.kind, JoinToken: &resources.JoinToken{Metadata: meta, Source: src}})
		case resources.KindDatabase:
			stored = append(stored, resources.Resource{Kind: r.kind, Database: &resources.Database{Metadata: meta, Source: src}})
		case resources.KindKubernetesCluster:
			stored = append(stored, resources.Resource{Kind: r.kind, KubernetesCluster: &resources.KubernetesCluster{Metadata: meta, Source: src}})
		case resources.KindTrustedCluster:
			// Disabled: a trusted cluster that does not load trusts nothing.
			stored = append(stored, resources.Resource{Kind: r.kind, TrustedCluster: &resources.TrustedCluster{Metadata: meta, Source: src}})
		case resources.KindLeafCluster:
			stored = append(stored, resources.Resource{Kind: r.kind, LeafCluster: &resources.LeafCluster{Metadata: meta, Source: src}})
		}
	}
	a.state.Store(&state{set: resources.NewSet(stored), tokens: map[string]*compiledToken{}})
	a.log.Warn("the stored resources do not load; replace or remove what this names (mbot apply, mbot rm)", "err", err)
	return nil
}

// compile checks every resource and compiles every join token. With
// skipUnscoped, a join token whose allow rules pin no owner is left out
// instead of failing the whole state (see Authority.adminOnly).
func (a *Authority) compile(all []resources.Resource, version int64, skipUnscoped bool) (*state, error) {
	set := resources.NewSet(all)
	if err := set.CheckReferences(); err != nil {
		return nil, err
	}
	s := &state{set: set, tokens: make(map[string]*compiledToken, len(set.JoinTokens)), version: version}
	for name, tok := range set.JoinTokens {
		v, err := CompileJoinToken(name, tok, a.env)
		var unscoped *policy.UnscopedRuleError
		if err != nil && skipUnscoped && errors.As(err, &unscoped) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.tokens[name] = &compiledToken{token: tok, verifier: v}
	}
	return s, nil
}

// CompileJoinToken compiles tok's method section into its verifier. Errors
// name the file and line, as at start and at mbot apply; mbot lint reports
// the same for join tokens already stored.
func CompileJoinToken(name string, tok *resources.JoinToken, env *verify.Env) (verify.Verifier, error) {
	method, ok := verify.Methods[tok.Spec.Method]
	if !ok {
		return nil, fmt.Errorf("%s: join_token %q: spec.method %q is not supported; supported methods: %v",
			tok.Source, name, tok.Spec.Method, verify.MethodNames())
	}
	v, err := method.Compile(name, tok.Spec.Section(), env)
	if err != nil {
		return nil, withFile(tok.Source, fmt.Sprintf("join_token %q", name), err)
	}
	return v, nil
}

// withFile prefixes a "line N: msg" error from a method's section parser
// with the resource file, as "file:N: what: msg".
func withFile(src resources.Source, what string, err error) error {
	var line int
	var rest string
	if n, _ := fmt.Sscanf(err.Error(), "line %d:", &line); n == 1 {
		_, rest, _ = strings.Cut(err.Error(), ": ")
		return &fileError{msg: fmt.Sprintf("%s:%d: %s: %s", src.File, line, what, rest), err: err}
	}
	return fmt.Errorf("%s: %s: %w", src, what, err)
}

// fileError is a section error with its file in front; it unwraps to the
// section's error, so that mbot lint can tell an unscoped rule.
type fileError struct {
	msg string
	err error
}

func (e *fileError) Error() string { return e.msg }
func (e *fileError) Unwrap() error { return e.err }

// reloadLocks reads the store's locks into this process's copy.
func (a *Authority) reloadLocks(ctx context.Context) error {
	start := time.Now()
	err := a.lockSet.reload(ctx, a.store.Store)
	a.metrics.storeCall("reload_locks", start, err)
	return err
}
