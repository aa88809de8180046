package trust

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
)

// RefreshInterval is how often a root's CA bundle is fetched again, so
// that a new root CA (rotation) is trusted soon after the root has it.
const RefreshInterval = time.Minute

// MaxLockAge is how old the root's lock list may be before the leaf
// refuses exchanges: past it, a bot locked on the root could go unseen.
// The root pushes its locks down the tunnel every few seconds.
const MaxLockAge = 15 * time.Second

// FetchFunc fetches a root's CA bundle from url over a connection pinned
// to pin (client.FetchClusterCA).
type FetchFunc func(ctx context.Context, url, pin string) (*identity.ClusterCAResponse, error)

// Roots is what a leaf knows of the roots it trusts, by trusted_cluster name.
type Roots struct {
	fetch FetchFunc
	now   func() time.Time
	mu    sync.Mutex
	roots map[string]*Root
}

// NewRoots returns an empty set of roots that fetches with fetch.
func NewRoots(fetch FetchFunc, now func() time.Time) *Roots {
	if now == nil {
		now = time.Now
	}
	return &Roots{fetch: fetch, now: now, roots: map[string]*Root{}}
}

// Root is one trusted root: its CA bundle as last fetched and its bot
// locks as last pushed.
type Root struct {
	// Name is the trusted_cluster's name; URL and Pin where it was fetched.
	Name, URL, Pin string

	mu sync.Mutex
	// pinnedCluster is spec.root.cluster_name: the cluster_name the root
	// must report ("" to take what it reports).
	pinnedCluster string
	cluster       string
	pool          *x509.CertPool
	// announced are the pins of the CAs in the bundle last fetched: the
	// root named them over a connection pinned to Pin (or to one it named
	// before), so the leaf follows the root's TLS CA rotation by them.
	announced []string
	fetched   time.Time
	lastErr   error
	// locks is the root's lock set as last pushed.
	locks   *locks.Set
	locksAt time.Time
}

// Get returns the root of trusted cluster tc, created (unfetched) if new
// or if its url or pin changed.
func (rs *Roots) Get(tc *resources.TrustedCluster) *Root {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.roots[tc.Metadata.Name]
	if r == nil || r.URL != tc.Spec.Root.URL || r.Pin != tc.Spec.Root.CAPin {
		r = &Root{Name: tc.Metadata.Name, URL: tc.Spec.Root.URL, Pin: tc.Spec.Root.CAPin, pinnedCluster: tc.Spec.Root.ClusterName}
		rs.roots[tc.Metadata.Name] = r
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pinnedCluster != tc.Spec.Root.ClusterName {
		// The same root and tunnel (its locks stay); its bundle is fetched
		// again and checked against the new pin.
		r.pinnedCluster, r.pool, r.cluster = tc.Spec.Root.ClusterName, nil, ""
	}
	return r
}

// Forget drops the roots of trusted clusters not in keep.
func (rs *Roots) Forget(keep map[string]*resources.TrustedCluster) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for name := range rs.roots {
		if _, ok := keep[name]; !ok {
			delete(rs.roots, name)
		}
	}
}

// Pins are the pins the root's serving certificate may chain to,
// comma-separated as client.NewAPI takes them: the trusted_cluster's
// spec.root.ca_pin and the pins of the CAs the root announced in its
// bundle. A root's TLS CA rotation announces the new CA at init, and its
// serving certificate switches to it at update_servers, after the leaf has
// refetched the bundle (every RefreshInterval/2), so the tunnel and the
// fetches keep working without a change on the leaf.
func (r *Root) Pins() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	pins := []string{r.Pin}
	for _, p := range r.announced {
		if !slices.Contains(pins, p) {
			pins = append(pins, p)
		}
	}
	return strings.Join(pins, ",")
}

// Cluster returns the root's cluster_name, or "" before the first fetch.
func (r *Root) Cluster() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cluster
}

// Bundle returns the root's CA pool and cluster name, fetching them first
// if they were never fetched or are older than RefreshInterval (a failed
// refresh keeps the last good bundle).
func (rs *Roots) Bundle(ctx context.Context, r *Root) (*x509.CertPool, string, error) {
	r.mu.Lock()
	fresh := r.pool != nil && rs.now().Sub(r.fetched) < RefreshInterval
	r.mu.Unlock()
	if !fresh {
		rs.Refresh(ctx, r)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pool == nil {
		return nil, "", identity.Errorf(identity.CodeRootUnavailable, "trusted cluster %s: this leaf could not fetch the root's CA from %s (%v); check spec.root.url and spec.root.ca_pin and that the root is reachable from the leaf",
			r.Name, r.URL, r.lastErr)
	}
	return r.pool, r.cluster, nil
}

// Refresh fetches the root's CA bundle now.
func (rs *Roots) Refresh(ctx context.Context, r *Root) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := rs.fetch(ctx, r.URL, r.Pins())
	var pool *x509.CertPool
	var announced []string
	if err == nil {
		pool, announced, err = parseBundle(resp.TLSCA)
	}
	if err == nil && identity.CheckName("cluster_name", resp.ClusterName) != nil {
		err = fmt.Errorf("the root answered an invalid cluster name")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil && r.pinnedCluster != "" && resp.ClusterName != r.pinnedCluster {
		err = fmt.Errorf("the root at %s reports cluster_name %s, but trusted_cluster %s pins spec.root.cluster_name %s; correct the pin, or the url if it reaches another root",
			r.URL, identity.Quote(resp.ClusterName), r.Name, r.pinnedCluster)
	}
	r.lastErr = err
	if err != nil {
		return err
	}
	r.pool, r.announced, r.cluster, r.fetched = pool, announced, resp.ClusterName, rs.now()
	return nil
}

// MinRefetch is how soon after a fetch a root identity of a CA the leaf
// does not know yet makes it fetch the root's bundle again, rather than
// wait for the next refresh: a root identity signed by the root's new TLS
// CA just after update_clients.
const MinRefetch = 2 * time.Second

// RefreshIfOlder fetches the root's CA bundle again if it was last
// fetched more than MinRefetch ago, and reports whether it did so.
func (rs *Roots) RefreshIfOlder(ctx context.Context, r *Root) bool {
	r.mu.Lock()
	stale := rs.now().Sub(r.fetched) >= MinRefetch
	r.mu.Unlock()
	return stale && rs.Refresh(ctx, r) == nil
}

// parseBundle returns the CAs of a root's bundle and their pins.
func parseBundle(bundle string) (*x509.CertPool, []string, error) {
	pool := x509.NewCertPool()
	var pins []string
	rest := []byte(bundle)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil || !c.IsCA {
			return nil, nil, errors.New("the root's CA bundle holds a certificate that is not a CA")
		}
		pool.AddCert(c)
		sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
		pins = append(pins, "sha256:"+hex.EncodeToString(sum[:]))
		n++
	}
	if n == 0 {
		return nil, nil, errors.New("the root's CA bundle is empty")
	}
	return pool, pins, nil
}

// SetLocks records the root's locks as just pushed.
func (rs *Roots) SetLocks(r *Root, view *identity.LockView) {
	var list []locks.Lock
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range view.Locks {
		list = append(list, locks.Lock{Kind: e.Kind, Target: e.Target, Reason: e.Reason, Since: e.Since, Expires: e.Expires,
			LockedBy: e.LockedBy, Cluster: r.cluster, Serials: e.Serials})
	}
	if len(view.Locks) == 0 {
		// A root from before lock entries pushes its bot and instance locks only.
		for bot, reason := range view.Locked {
			list = append(list, locks.Lock{Kind: locks.KindBot, Target: bot, Reason: reason, LockedBy: "authority", Cluster: r.cluster})
		}
		for instance, reason := range view.Instances {
			list = append(list, locks.Lock{Kind: locks.KindInstance, Target: instance, Reason: reason, LockedBy: "authority", Cluster: r.cluster})
		}
	}
	r.locks, r.locksAt = locks.NewSet(0, list), rs.now()
}

// CheckNotLocked refuses what sub names (the root identity's bot, instance,
// serial, roles and claims) when a lock of the root covers it, or when the
// leaf's copy of the root's locks is older than MaxLockAge.
func (rs *Roots) CheckNotLocked(r *Root, sub locks.Subject) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if age := rs.now().Sub(r.locksAt); r.locksAt.IsZero() || age > MaxLockAge {
		seen := "never"
		if !r.locksAt.IsZero() {
			seen = age.Truncate(time.Second).String() + " ago"
		}
		return identity.Errorf(identity.CodeRootUnavailable, "this leaf last heard from root cluster %s %s (its tunnel to %s is down), so it cannot tell whether bot %q is locked there; retry once the tunnel is back (the leaf's log says why it is down, and the root needs a leaf_cluster resource for this leaf)",
			r.cluster, seen, r.URL, sub.Bot)
	}
	if l, ok := r.locks.Match(sub, rs.now()); ok {
		if l.Cluster == "" {
			l.Cluster = r.cluster
		}
		return l.Refusal("exchange")
	}
	return nil
}
