package authority

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/authority/trust"
	"github.com/mbot-dev/mbot/authority/tunnel"
	"github.com/mbot-dev/mbot/client"
	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// Trusted clusters (SPEC §8), both ends. A leaf keeps one tunnel per
// enabled trusted_cluster attached to its root (runLeafTunnels) and serves
// exchanges straight (exchange.go) and down the tunnel. A root takes the
// tunnels of the leaves its leaf_cluster resources name, relays exchanges
// to them, and pushes its bot locks down every tunnel.

// lockPushInterval is how often a root checks its bot locks for a change
// to push; unchanged locks are pushed every lockHeartbeat, which is what
// keeps the leaves' copies fresh (trust.MaxLockAge).
const (
	lockPushInterval = 100 * time.Millisecond
	lockHeartbeat    = 3 * time.Second
)

func (a *Authority) registerClusters(mux *routes) {
	mux.HandleFunc("GET "+identity.PathClusterCA, a.handleClusterCA)
	mux.HandleFunc("POST "+identity.PathExchange, a.handleExchange)
	mux.HandleFunc("GET "+identity.PathTunnel, a.handleTunnel)
	mux.HandleFunc("POST /v1/clusters/{leaf}/exchange", a.handleRelay)
}

// handleClusterCA serves the TLS CA bundle that bot identities are checked by.
func (a *Authority) handleClusterCA(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, identity.ClusterCAResponse{ClusterName: a.cfg.ClusterName, TLSCA: string(a.CAs().TLSCertPEM), SSHHostCA: a.CAs().SSHHostCAKeys()})
}

// tunnelTLS is what a tunnel dial (tunnel.WantsTunnel) is served: it must
// present a client certificate of any CA, checked against its
// leaf_cluster's pin by handleTunnel, not against this authority's CA.
func tunnelTLS(base *tls.Config) *tls.Config {
	tunnelCfg := base.Clone()
	tunnelCfg.ClientAuth = tls.RequireAnyClientCert
	tunnelCfg.ClientCAs = nil
	return tunnelCfg
}

// handleTunnel attaches a leaf's tunnel: its client certificate must chain
// to a CA of the pin of the leaf_cluster named by its common name.
func (a *Authority) handleTunnel(w http.ResponseWriter, r *http.Request) {
	leaf, err := a.tunnelLeaf(r)
	if err != nil {
		a.logRefusal(r.Context(), "tunnel refused", "remote", r.RemoteAddr, "err", err)
		a.auditAdmin(r.Context(), &store.AuditEvent{Event: "tunnel", Remote: r.RemoteAddr, Code: string(identity.CodeUnknownLeaf), Message: identity.Truncate(err.Error(), 400)})
		writeError(w, err)
		return
	}
	if err := a.hub.Attach(w, leaf); err != nil {
		a.log.Error("attaching a tunnel", "leaf", leaf, "err", err)
		return
	}
	a.log.Info("leaf tunnel attached", "leaf", leaf, "remote", r.RemoteAddr)
	a.auditAdmin(context.WithoutCancel(r.Context()), &store.AuditEvent{Event: "tunnel", Allowed: true, Remote: r.RemoteAddr,
		Claims: map[string]string{"leaf": leaf}, Message: "leaf " + leaf + " attached its tunnel"})
	go func() {
		ctx := context.WithoutCancel(r.Context())
		if view, err := a.lockView(ctx); err != nil {
			a.log.Error("reading the locks to push to a leaf", "leaf", leaf, "err", err)
		} else {
			a.pushLocks(ctx, leaf, view)
		}
		a.learnLeafCAs(ctx, leaf)
	}()
}

// leafCAs are the TLS CAs each leaf announced down its tunnel, by leaf,
// with the spec.ca_pin of its leaf_cluster when it announced them. A
// leaf's TLS CA rotation announces the new CA at init; its tunnel
// certificates come from the new CA from update_servers on, which the root
// accepts by these, without a change to the leaf_cluster. They are kept in
// memory: a root restarted after the leaf's update_servers needs the
// leaf's new pin in spec.ca_pin (docs/trusted-clusters.md).
type leafCAs struct {
	mu    sync.Mutex
	byPin map[string]announcedCAs
}

type announcedCAs struct {
	specPin string
	pins    []string
	// sshHost are the leaf's SSH host CA keys (ssh.PublicKey.Marshal, as strings).
	sshHost []string
}

// get returns what leaf announced while its leaf_cluster pinned specPin.
func (l *leafCAs) get(leaf, specPin string) (announcedCAs, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	got, ok := l.byPin[leaf]
	return got, ok && got.specPin == specPin
}

// announced reports whether leaf, while its leaf_cluster pinned specPin,
// announced a CA of pin.
func (l *leafCAs) announced(leaf, specPin, pin string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	got, ok := l.byPin[leaf]
	return ok && got.specPin == specPin && slices.Contains(got.pins, pin)
}

// set records what leaf announced and reports whether it changed.
func (l *leafCAs) set(leaf string, got announcedCAs) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byPin == nil {
		l.byPin = map[string]announcedCAs{}
	}
	old, ok := l.byPin[leaf]
	l.byPin[leaf] = got
	return !ok || old.specPin != got.specPin || !slices.Equal(old.pins, got.pins) || !slices.Equal(old.sshHost, got.sshHost)
}

// learnLeafCAs asks leaf, down its tunnel (authenticated by its
// leaf_cluster's pin, or by a CA the leaf announced before), for its TLS
// CA bundle and records the CAs in it.
func (a *Authority) learnLeafCAs(ctx context.Context, leaf string) {
	lc, ok := a.state.Load().set.LeafClusters[leaf]
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+leaf+identity.PathClusterCA, nil)
	resp, err := a.hub.RoundTrip(leaf, req)
	if err != nil {
		a.log.Warn("asking a leaf for its CAs", "leaf", leaf, "err", err)
		return
	}
	defer resp.Body.Close()
	var ca identity.ClusterCAResponse
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ca) != nil {
		return // a leaf that does not announce its CAs: its pin alone is accepted
	}
	got := announcedCAs{specPin: lc.Spec.CAPin}
	for rest := []byte(ca.TLSCA); ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil && c.IsCA {
			got.pins = append(got.pins, CAPin(c))
		}
	}
	got.sshHost = sshKeys(ca.SSHHostCA)
	if a.leafCAs.set(leaf, got) {
		a.log.Info("leaf announced its TLS CAs; its tunnel certificates may chain to any of them", "leaf", leaf, "ca_pins", strings.Join(got.pins, ","))
	}
}

func (a *Authority) tunnelLeaf(r *http.Request) (string, error) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), identity.TunnelProtocol) {
		return "", identity.Errorf(identity.CodeBadRequest, "a tunnel request upgrades to %s", identity.TunnelProtocol)
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", identity.Errorf(identity.CodeIdentityRequired, "a leaf's tunnel presents a client certificate of the leaf's TLS CA")
	}
	cert := r.TLS.PeerCertificates[0]
	// The leaf is named by the tunnel identity alone, never by the CN: the
	// leaf's TLS CA also signs bot identities, whose CN is a bot's name.
	name, ok := TunnelIdentity(cert)
	if !ok {
		return "", identity.Errorf(identity.CodeUnknownLeaf, "the tunnel's certificate (CN %s) carries no tunnel identity (one URI SAN spiffe://<leaf>%s); a leaf authority's tunnel certificate does, no bot, user or admin certificate can",
			identity.Quote(identity.Truncate(cert.Subject.CommonName, 64)), identity.TunnelSPIFFEPath)
	}
	a.refresh(r.Context())
	lc, ok := a.state.Load().set.LeafClusters[name]
	if !ok {
		return "", identity.Errorf(identity.CodeUnknownLeaf, "cluster %s does not know leaf cluster %s; an admin of %s adds a leaf_cluster resource named after it with its ca_pin",
			a.cfg.ClusterName, identity.Quote(identity.Truncate(name, 64)), a.cfg.ClusterName)
	}
	roots := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		if pin := CAPin(c); c.IsCA && (pin == lc.Spec.CAPin || a.leafCAs.announced(name, lc.Spec.CAPin, pin)) {
			roots.AddCert(c)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", identity.Errorf(identity.CodeUnknownLeaf, "the tunnel of leaf %s presents no certificate of the CA pinned by leaf_cluster %s (%s); check its spec.ca_pin against mbot authority export --type ca-pin on the leaf",
			name, name, identity.Quote(identity.Truncate(err.Error(), 120)))
	}
	return name, nil
}

// TunnelIdentity returns the leaf a tunnel certificate names: its one URI
// SAN must be spiffe://<leaf>/mbot/cluster-tunnel (identity.TunnelSPIFFEPath)
// with a valid cluster name.
func TunnelIdentity(cert *x509.Certificate) (string, bool) {
	if len(cert.URIs) != 1 {
		return "", false
	}
	u := cert.URIs[0]
	if u.Scheme != "spiffe" || u.Path != identity.TunnelSPIFFEPath || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Port() != "" ||
		identity.CheckName("leaf", u.Host) != nil {
		return "", false
	}
	return u.Host, true
}

// handleRelay forwards an exchange, unchanged, down the named leaf's
// tunnel and answers with the leaf's answer. The root cannot read
// anything useful in it: the keys it certifies are the client's.
func (a *Authority) handleRelay(w http.ResponseWriter, r *http.Request) {
	leaf := r.PathValue("leaf")
	ev := &store.AuditEvent{Event: "relay", Method: exchangeMethod, Remote: r.RemoteAddr, Claims: map[string]string{"leaf": identity.Truncate(leaf, 64)}}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err == nil {
		var req identity.ExchangeRequest
		if json.Unmarshal(body, &req) == nil {
			if chain, perr := trust.Presented(&req); perr == nil {
				_, ev.Bot = trust.ClaimedRoot(chain[0])
				ev.Bot = identity.Truncate(ev.Bot, identity.MaxNameLen)
			}
		}
	}
	status, answer, err := a.relay(r.Context(), leaf, body, err)
	if err != nil {
		refusal := a.recordRefusal(r.Context(), ev, err)
		a.logRefusal(r.Context(), "relay refused", "leaf", leaf, "bot", ev.Bot, "code", refusal.Code, "reason", ev.Message, "remote", ev.Remote)
		writeError(w, refusal)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(answer)
	// Recorded once answered: the leaf has decided and audited already,
	// and the client need not wait for the root's record too.
	ev.Allowed = status == http.StatusOK
	if !ev.Allowed {
		var e identity.ErrorResponse
		_ = json.Unmarshal(answer, &e)
		ev.Code, ev.Message = identity.Truncate(string(e.Code), 64), "the leaf refused: "+identity.Truncate(e.Message, 400)
	}
	a.auditAdmin(context.WithoutCancel(r.Context()), ev)
}

// relay sends body to leaf's exchange endpoint down its tunnel.
func (a *Authority) relay(ctx context.Context, leaf string, body []byte, readErr error) (int, []byte, error) {
	if readErr != nil {
		return 0, nil, identity.Errorf(identity.CodeBadRequest, "reading the exchange to relay: %v", readErr)
	}
	a.refresh(ctx)
	if _, ok := a.state.Load().set.LeafClusters[leaf]; !ok || identity.CheckName("leaf", leaf) != nil {
		return 0, nil, identity.Errorf(identity.CodeUnknownLeaf, "cluster %s has no leaf cluster named %s; check cluster: of the output (mbot get leaf_clusters on the root lists them)",
			a.cfg.ClusterName, identity.Quote(identity.Truncate(leaf, 64)))
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+leaf+identity.PathExchange, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hub.RoundTrip(leaf, req)
	if errors.Is(err, tunnel.ErrBusy) {
		return 0, nil, &identity.Error{Code: identity.CodeLeafBusy, Err: err, RetryAfter: time.Second,
			Message: fmt.Sprintf("leaf cluster %s's tunnel to root %s carries %d exchanges at once and more are waiting; retry in a second (mbot issue retries by itself), or send the exchange to the leaf directly (leaf_clusters[].url in mbot.yaml)",
				leaf, a.cfg.ClusterName, tunnel.MaxInFlight)}
	}
	if err != nil {
		seen := "never since this root started"
		if s, ok := a.hub.Statuses()[leaf]; ok {
			seen = "last seen " + s.LastSeen.UTC().Format(time.RFC3339)
		}
		return 0, nil, &identity.Error{Code: identity.CodeLeafUnreachable, Err: err,
			Message: fmt.Sprintf("leaf cluster %s is not connected to root %s (%s); while it runs and trusts this root its authority redials by itself, so retry shortly, or send the exchange to the leaf directly (leaf_clusters[].url in mbot.yaml)",
				leaf, a.cfg.ClusterName, seen)}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, nil, &identity.Error{Code: identity.CodeLeafUnreachable, Err: err,
			Message: fmt.Sprintf("leaf cluster %s dropped its tunnel while answering; retry", leaf)}
	}
	if resp.StatusCode == http.StatusOK {
		if err := a.checkLeafAnswer(ctx, leaf, answer); err != nil {
			return 0, nil, err
		}
	}
	return resp.StatusCode, answer, nil
}

// sshKeys parses authorized_keys lines into their keys' wire form.
func sshKeys(lines string) []string {
	var out []string
	for _, line := range strings.Split(lines, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err == nil {
			out = append(out, string(k.Marshal()))
		} else {
			out = append(out, "unparsable: "+line)
		}
	}
	return out
}

// checkLeafAnswer is the root's defence in depth for what it relays: a
// leaf's answer is passed on only if its CAs are the ones the root knows
// for that leaf (leaf_cluster spec.ca_pin and the CAs the leaf announced
// over the pinned tunnel), its identity certificates chain to them, and it
// names the leaf. Otherwise nothing of it reaches the client.
func (a *Authority) checkLeafAnswer(ctx context.Context, leaf string, answer []byte) error {
	refuse := func(format string, args ...any) error {
		return identity.Errorf(identity.CodeLeafAnswerUnverified, "the answer of leaf cluster %s down its tunnel %s, so root %s did not pass it on and nothing was written; check the leaf's log and spec.ca_pin of leaf_cluster %s (mbot authority export --type ca-pin on the leaf)",
			leaf, fmt.Sprintf(format, args...), a.cfg.ClusterName, leaf)
	}
	lc, ok := a.state.Load().set.LeafClusters[leaf]
	if !ok {
		return refuse("came after its leaf_cluster was removed")
	}
	known, ok := a.leafCAs.get(leaf, lc.Spec.CAPin)
	if !ok {
		a.learnLeafCAs(ctx, leaf) // just attached: learn them first
		known, _ = a.leafCAs.get(leaf, lc.Spec.CAPin)
	}
	var resp identity.JoinResponse
	if err := json.Unmarshal(answer, &resp); err != nil {
		return refuse("is not a join answer")
	}
	if resp.ClusterName != leaf {
		return refuse("names cluster %s", identity.Quote(identity.Truncate(resp.ClusterName, 64)))
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := []byte(resp.TLSCA); ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil || !c.IsCA {
			return refuse("holds a TLS CA bundle entry that is no CA certificate")
		}
		if pin := CAPin(c); pin != lc.Spec.CAPin && !slices.Contains(known.pins, pin) {
			return refuse("holds TLS CA %s, which the leaf_cluster does not pin and the leaf did not announce", pin)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return refuse("holds no TLS CA")
	}
	for _, k := range sshKeys(resp.SSHHostCA) {
		if !slices.Contains(known.sshHost, k) {
			return refuse("holds an SSH host CA the leaf did not announce over its tunnel (known_hosts would trust it)")
		}
	}
	for _, out := range resp.Outputs {
		if out.Type != "" && out.Type != identity.OutputIdentity {
			continue // signed by CAs of other kinds, which the root does not know
		}
		block, _ := pem.Decode([]byte(out.TLSCertificate))
		if block == nil {
			return refuse("holds identity output %s without a certificate", identity.Quote(identity.Truncate(out.Name, 64)))
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err == nil {
			_, err = c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		}
		if err != nil {
			return refuse("holds a certificate for output %s that does not chain to the leaf's TLS CA", identity.Quote(identity.Truncate(out.Name, 64)))
		}
	}
	return nil
}

// lockView is this authority's locks as pushed to leaves: those an
// exchange of one of its identities can meet. A claim or join_token lock
// names the unexpired identity certificates it covers, which the leaf
// cannot tell from the certificate itself; when those cannot be read, no
// view is pushed (a leaf that hears nothing for MaxLockAge refuses every
// exchange).
func (a *Authority) lockView(ctx context.Context) (*identity.LockView, error) {
	ls, now := a.Locks(), time.Now()
	covered, err := a.pushedSerials.of(ctx, a.store, ls, now)
	if err != nil {
		return nil, err
	}
	view := &identity.LockView{Locked: map[string]string{}, Instances: map[string]string{}, Locks: []identity.LockEntry{}}
	for _, l := range ls.List(now) {
		switch l.Kind {
		case locks.KindBot:
			view.Locked[l.Target] = l.Reason
		case locks.KindInstance:
			view.Instances[l.Target] = l.Reason
		case locks.KindCert, locks.KindClaim, locks.KindRole:
		case locks.KindJoinToken:
			if l.Automatic {
				continue // a copied bound_keypair key: its verifier refuses its joins
			}
		default:
			continue
		}
		view.Locks = append(view.Locks, identity.LockEntry{Kind: l.Kind, Target: l.Target, Reason: l.Reason, Since: l.Since,
			Expires: l.Expires, LockedBy: l.LockedBy, Serials: covered[l.Name()]})
	}
	return view, nil
}

// pushedSerials are, per claim and join_token lock (by Name), the
// unexpired identity certificates it covers, as of one lock set. A lock
// set's covered certificates only shrink as they expire (what a lock
// covers is refused from then on, and a join or renewal committed before
// it is in the store when the set is read), so they are read from the
// store once per lock set, not at every push.
type pushedSerials struct {
	mu      sync.Mutex
	set     *locks.Set
	serials map[string][]string
}

func (p *pushedSerials) of(ctx context.Context, st store.Store, ls *locks.Set, now time.Time) (map[string][]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.set == ls {
		return p.serials, nil
	}
	var named []locks.Lock
	for _, l := range ls.List(now) {
		if l.Kind == locks.KindClaim || l.Kind == locks.KindJoinToken && !l.Automatic {
			named = append(named, l)
		}
	}
	serials := map[string][]string{}
	if len(named) > 0 {
		issued, err := st.IssuedCertificates(ctx, store.IssuedFilter{ValidAt: now, CA: caTLS + "-ca"})
		if err != nil {
			return nil, fmt.Errorf("reading the certificates the claim and join_token locks cover: %w", err)
		}
		for _, l := range named {
			one := locks.NewSet(0, []locks.Lock{l})
			for _, c := range issued {
				if _, ok := one.Match(locks.Subject{JoinToken: c.JoinToken, Claims: c.Claims}, now); ok {
					serials[l.Name()] = append(serials[l.Name()], "tls:"+c.Serial)
				}
			}
		}
	}
	p.set, p.serials = ls, serials
	return serials, nil
}

// pushLocks sends view down leaf's tunnel.
func (a *Authority) pushLocks(ctx context.Context, leaf string, view *identity.LockView) {
	body, _ := json.Marshal(view)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+leaf+identity.PathTunnelLocks, bytes.NewReader(body))
	resp, err := a.hub.RoundTrip(leaf, req)
	if err != nil {
		a.log.Warn("pushing bot locks to a leaf", "leaf", leaf, "err", err)
		return
	}
	resp.Body.Close()
}

// lockPushes pushes lock views to the leaves concurrently, each leaf on
// its own with its own timeout (pushLocks), so that a stalled leaf never
// delays another's. A leaf has at most one push in flight; the newest view
// that arrives meanwhile waits behind it, and older ones are skipped.
type lockPushes struct {
	mu      sync.Mutex
	running map[string]bool
	waiting map[string]*identity.LockView
}

func (p *lockPushes) push(ctx context.Context, leaf string, view *identity.LockView, send func(context.Context, string, *identity.LockView)) {
	p.mu.Lock()
	if p.running == nil {
		p.running, p.waiting = map[string]bool{}, map[string]*identity.LockView{}
	}
	if p.running[leaf] {
		p.waiting[leaf] = view
		p.mu.Unlock()
		return
	}
	p.running[leaf] = true
	p.mu.Unlock()
	go func() {
		for {
			send(ctx, leaf, view)
			p.mu.Lock()
			next, ok := p.waiting[leaf]
			delete(p.waiting, leaf)
			if !ok {
				delete(p.running, leaf)
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			view = next
		}
	}()
}

// runLeafHub pushes the bot locks to every attached leaf when they change
// and every lockHeartbeat, and records the tunnels' state for mbot get
// leaf_clusters.
func (a *Authority) runLeafHub(ctx context.Context) {
	var pushed *locks.Set
	var lastPush, lastLearn time.Time
	recorded := map[string]tunnel.Status{}
	every(ctx, lockPushInterval, func(now time.Time) {
		if len(a.state.Load().set.LeafClusters) == 0 && len(recorded) == 0 {
			return
		}
		a.refresh(ctx)
		if current := a.Locks(); current != pushed || now.Sub(lastPush) >= lockHeartbeat {
			if view, err := a.lockView(ctx); err != nil {
				a.lockViewErrors.failed(a.log, "reading the locks to push to the leaves; the leaves keep the last ones", err)
			} else {
				a.lockViewErrors.succeeded(a.log, "reading the locks to push to the leaves works again")
				for _, leaf := range a.hub.Leaves() {
					a.lockPushes.push(ctx, leaf, view, a.pushLocks)
				}
				pushed, lastPush = current, now
			}
		}
		if now.Sub(lastLearn) >= lockHeartbeat {
			// Aside, so that a slow leaf never holds up the lock pushes.
			for _, leaf := range a.hub.Leaves() {
				go a.learnLeafCAs(ctx, leaf)
			}
			lastLearn = now
		}
		for leaf, s := range a.hub.Statuses() {
			if old, ok := recorded[leaf]; ok && old.Connected == s.Connected && s.LastSeen.Sub(old.LastSeen) < lockHeartbeat {
				continue
			}
			if err := a.store.RecordLeafTunnel(ctx, leaf, store.LeafTunnel{Connected: s.Connected, LastSeen: s.LastSeen}); err != nil {
				a.log.Error("recording a leaf's tunnel", "leaf", leaf, "err", err)
				continue
			}
			recorded[leaf] = s
		}
	})
}

// LeafTunnels returns the recorded tunnel state of every leaf seen.
func (a *Authority) LeafTunnels(ctx context.Context) (map[string]store.LeafTunnel, error) {
	return a.store.LeafTunnels(ctx)
}

// runLeafTunnels keeps one tunnel attached to the root of every trusted
// cluster, started and stopped as the resources change. A disabled trust
// keeps its tunnel, and so does a removed one until this authority
// stops: through it, jobs relayed by the root are told trust_disabled (and
// recorded here) for as long as the trust is off, rather than the root
// answering leaf_unreachable.
func (a *Authority) runLeafTunnels(ctx context.Context) {
	type running struct {
		url, pin string
		removed  *atomic.Bool
		stop     context.CancelFunc
	}
	tunnels := map[string]*running{}
	sync := func(time.Time) {
		a.refresh(ctx)
		want := a.state.Load().set.TrustedClusters
		for name, t := range tunnels {
			tc, ok := want[name]
			switch {
			case !ok:
				if !t.removed.Swap(true) {
					a.log.Warn("trusted cluster removed: its tunnel stays attached, answering trust_disabled to exchanges the root relays, until this authority stops",
						"trusted_cluster", name, "root", t.url)
					a.auditAdmin(ctx, &store.AuditEvent{Event: "trust", Allowed: true, JoinToken: name, Claims: map[string]string{"root_url": t.url},
						Message: "trusted_cluster " + name + " was removed: its tunnel to " + t.url + " stays attached and answers trust_disabled until this authority stops"})
				}
			case tc.Spec.Root.URL != t.url || tc.Spec.Root.CAPin != t.pin:
				t.stop()
				delete(tunnels, name)
			default:
				t.removed.Store(false)
			}
		}
		for _, name := range slices.Sorted(maps.Keys(want)) {
			tc := want[name]
			if _, ok := tunnels[name]; ok {
				continue
			}
			removed := &atomic.Bool{}
			l, err := a.leafTunnel(tc, removed)
			if err != nil {
				a.log.Error("trusted cluster: cannot dial its root", "trusted_cluster", name, "err", err)
				continue
			}
			tctx, stop := context.WithCancel(ctx)
			tunnels[name] = &running{url: tc.Spec.Root.URL, pin: tc.Spec.Root.CAPin, removed: removed, stop: stop}
			go l.Run(tctx)
		}
	}
	// Roots' CA bundles are fetched ahead of need, so that an exchange
	// rarely waits for one and a rotated root CA is trusted soon.
	refreshed := time.Now()
	sync(refreshed)
	every(ctx, time.Second, func(now time.Time) {
		sync(now)
		if now.Sub(refreshed) < trust.RefreshInterval/2 {
			return
		}
		refreshed = now
		for _, tc := range a.state.Load().set.TrustedClusters {
			if tc.Spec.Enabled {
				if err := a.trust.Refresh(ctx, a.trust.Get(tc)); err != nil {
					a.log.Warn("trusted cluster: cannot refresh the root's CA; keeping the last one", "trusted_cluster", tc.Metadata.Name, "err", err)
				}
			}
		}
	})
	for _, t := range tunnels {
		t.stop()
	}
}

// leafTunnel is the tunnel to tc's root: it serves exchanges relayed by
// the root and the root's bot locks. Once removed is set (the
// trusted_cluster was removed), it refuses every exchange (trust_disabled)
// and takes no locks.
func (a *Authority) leafTunnel(tc *resources.TrustedCluster, removed *atomic.Bool) (*tunnel.Leaf, error) {
	cfg, err := client.PinnedTLSConfig(tc.Spec.Root.URL, tc.Spec.Root.CAPin)
	if err != nil {
		return nil, err
	}
	root := a.trust.Get(tc)
	// Each dial checks the root against the pins of now: spec.root.ca_pin
	// and the CAs the root announced, which follow its TLS CA rotation.
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		cur, err := client.PinnedTLSConfig(tc.Spec.Root.URL, root.Pins())
		if err != nil {
			return err
		}
		return cur.VerifyConnection(cs)
	}
	mux := newRoutes()
	from := "tunnel from " + tc.Spec.Root.URL
	mux.HandleFunc("POST "+identity.PathExchange, func(w http.ResponseWriter, r *http.Request) {
		if removed.Load() {
			claimed := tc.Spec.Root.ClusterName
			if claimed == "" {
				claimed = root.Cluster()
			}
			if claimed == "" {
				claimed = tc.Metadata.Name
			}
			a.serveExchangeRefused(w, r, from, trustDisabled(a.cfg.ClusterName, claimed, tc.Metadata.Name, true))
			return
		}
		a.serveExchange(w, r, from)
	})
	// The root asks for this authority's TLS CAs, so that it follows their rotation.
	mux.HandleFunc("GET "+identity.PathClusterCA, a.handleClusterCA)
	mux.HandleFunc("POST "+identity.PathTunnelLocks, func(w http.ResponseWriter, r *http.Request) {
		var view identity.LockView
		if err := decodeBody(w, r, &view); err != nil {
			writeError(w, identity.Errorf(identity.CodeBadRequest, "not a lock list: %v", err))
			return
		}
		if !removed.Load() {
			a.trust.SetLocks(root, &view)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	// Every request down the tunnel is the root's: never held back, but its
	// refusals are recorded one by one only within one bucket (guard.go).
	handler := a.guarded(mux, false, func(*http.Request) string { return from })
	return &tunnel.Leaf{RootURL: tc.Spec.Root.URL, TLS: cfg, Certificate: a.tunnelCertificate, Handler: handler,
		Log: a.log.With("trusted_cluster", tc.Metadata.Name)}, nil
}

// tunnelCertificate is a fresh client certificate for this authority's
// tunnels, from the TLS CA that signs its serving certificate (the one its
// pin names, also during a rotation). Its one URI SAN,
// spiffe://<cluster_name>/mbot/cluster-tunnel, is what the root checks and
// names the leaf by; CN = cluster_name too, for the roots of before.
func (a *Authority) tunnelCertificate() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	id := &url.URL{Scheme: "spiffe", Host: a.cfg.ClusterName, Path: identity.TunnelSPIFFEPath}
	cas := a.CAs()
	signed, err := cas.servingTLS.Sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: a.cfg.ClusterName, Organization: []string{a.cfg.ClusterName}},
		URIs:        []*url.URL{id},
		NotAfter:    time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key.Public())
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{signed.DER, cas.servingTLS.Cert.Raw}, PrivateKey: key}, nil
}
