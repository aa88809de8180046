package authority

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/authority/trust"
	"github.com/mbot-dev/mbot/identity"
)

// exchangeMethod is what the audit log and the certificates' key IDs say
// a leaf's certificates were obtained by.
const exchangeMethod = "exchange"

// handleExchange serves POST /v1/exchange straight from a client.
func (a *Authority) handleExchange(w http.ResponseWriter, r *http.Request) {
	a.serveExchange(w, r, r.RemoteAddr)
}

// serveExchange answers one exchange, from a client or relayed by a root
// down the tunnel (remote says which).
func (a *Authority) serveExchange(w http.ResponseWriter, r *http.Request, remote string) {
	var req identity.ExchangeRequest
	if err := decodeBody(w, r, &req); err != nil {
		r.RemoteAddr = remote
		a.refuseBody(w, r, exchangeMethod, err)
		return
	}
	resp, err := a.Exchange(r.Context(), &req, remote)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// serveExchangeRefused answers an exchange with refusal, recorded in the
// audit log with who the request claims to be.
func (a *Authority) serveExchangeRefused(w http.ResponseWriter, r *http.Request, remote string, refusal error) {
	ev := &store.AuditEvent{Event: exchangeMethod, Method: exchangeMethod, Remote: remote}
	var req identity.ExchangeRequest
	if err := decodeBody(w, r, &req); err == nil {
		if chain, err := trust.Presented(&req); err == nil {
			claimed, bot := trust.ClaimedRoot(chain[0])
			ev.Bot = identity.Truncate(bot, identity.MaxNameLen)
			ev.Claims = map[string]string{"root_cluster": identity.Truncate(claimed, 64), "remote_roles": strings.Join(chain[0].Subject.OrganizationalUnit, ",")}
			ev.ClaimsUnverified = true
		}
	}
	e := a.recordRefusal(r.Context(), ev, refusal)
	a.log.Warn("exchange refused", "root_cluster", ev.Claims["root_cluster"], "bot", ev.Bot, "code", e.Code, "reason", ev.Message, "remote", ev.Remote)
	writeError(w, e)
}

// Exchange certifies, with this authority's CAs, the keys an exchange
// request asks for on behalf of a root identity, and records the outcome
// in the audit log either way. A refusal is an *identity.Error.
func (a *Authority) Exchange(ctx context.Context, req *identity.ExchangeRequest, remote string) (*identity.JoinResponse, error) {
	start := time.Now()
	var (
		ev   *store.AuditEvent
		resp *identity.JoinResponse
		err  error
	)
	for attempt := 0; ; attempt++ {
		ev = &store.AuditEvent{Event: exchangeMethod, Method: exchangeMethod, Remote: remote}
		st, ls := a.state.Load(), a.Locks()
		resp, err = a.exchange(ctx, req, ev)
		// Decided on resources or locks that another process changed since
		// (nothing was written, or a refusal the change may lift): decide
		// again on the current ones.
		if err == nil || attempt == maxStaleRetries || (!a.changedSince(ctx, st, ls) && !errors.Is(err, store.ErrStale)) {
			break
		}
	}
	if err != nil {
		refusal := a.recordRefusal(ctx, ev, err)
		a.metrics.join(exchangeMethod, time.Since(start), refusal)
		a.logRefusal(ctx, "exchange refused", "root_cluster", ev.Claims["root_cluster"], "bot", ev.Bot, "remote_roles", ev.Claims["remote_roles"],
			"code", refusal.Code, "reason", ev.Message, "remote", ev.Remote)
		return nil, refusal
	}
	a.metrics.join(exchangeMethod, time.Since(start), nil)
	a.log.Info("exchange admitted", "root_cluster", ev.Claims["root_cluster"], "bot", ev.Bot, "remote_roles", ev.Claims["remote_roles"],
		"roles", ev.Roles, "not_after", ev.NotAfter, "remote", ev.Remote)
	return resp, nil
}

// exchange is the leaf's path, top to bottom: presented chain → trusted
// cluster of its root (enabled) → verify chain, signature, cluster, time →
// bot not locked on the root → role map → sign (the join's grant) →
// record the exchange once (replay) → respond.
func (a *Authority) exchange(ctx context.Context, req *identity.ExchangeRequest, ev *store.AuditEvent) (*identity.JoinResponse, error) {
	chain, err := trust.Presented(req)
	if err != nil {
		return nil, err
	}
	claimed, bot := trust.ClaimedRoot(chain[0])
	ev.Bot = identity.Truncate(bot, identity.MaxNameLen)
	ev.Claims = map[string]string{"root_cluster": claimed, "remote_roles": strings.Join(chain[0].Subject.OrganizationalUnit, ",")}
	ev.ClaimsUnverified = true
	if claimed == "" {
		// An identity a leaf issued on an exchange (/mbot/cluster/<root>/bot/<bot>)
		// is no bot of that leaf: trust is not transitive.
		return nil, identity.Errorf(identity.CodeExchangeInvalid, "certificate %s is not a bot identity (URI SAN spiffe://<root cluster>/bot/<bot>); exchange the tls.crt of a bot's identity output of the root, not one a leaf issued on an exchange",
			identity.Quote(identity.Truncate(chain[0].Subject.CommonName, 64)))
	}

	// Trust disabled or removed by another process (mbot apply, mbot rm in
	// local mode) stops exchanges at once: one version query per exchange.
	if !a.refreshNow(ctx) {
		a.refresh(ctx)
	}
	st := a.state.Load()
	tc, root, err := a.trustedRoot(ctx, st, claimed)
	if err != nil {
		return nil, err
	}
	ev.JoinToken = tc.Metadata.Name
	pool, rootCluster, err := a.trust.Bundle(ctx, root)
	if err != nil {
		return nil, err
	}
	exch, p, err := trust.Verify(req, trust.VerifyOptions{Roots: pool, RootCluster: rootCluster, LeafCluster: a.cfg.ClusterName, Now: time.Now()})
	if err != nil && a.trust.RefreshIfOlder(ctx, root) {
		// Perhaps signed by a CA the root added since the last fetch (a
		// TLS CA rotation's update_clients): check against the new bundle.
		pool, rootCluster, _ = a.trust.Bundle(ctx, root)
		exch, p, err = trust.Verify(req, trust.VerifyOptions{Roots: pool, RootCluster: rootCluster, LeafCluster: a.cfg.ClusterName, Now: time.Now()})
	}
	if err != nil {
		return nil, err
	}
	ev.ClaimsUnverified = false
	ev.Claims["root_serial"] = exch.Serial
	if err := a.trust.CheckNotLocked(root, locks.Subject{Bot: exch.Bot, Instance: exch.Instance, Roles: exch.Roles,
		Serials: []string{"tls:" + exch.Serial}, Claims: exch.Claims}); err != nil {
		return nil, err
	}
	roleMap, err := trust.CompileRoleMap(tc.Spec.RoleMap)
	if err != nil {
		return nil, fmt.Errorf("trusted_cluster %s: %w", tc.Metadata.Name, err)
	}
	mapped, unmapped := roleMap.Map(exch.Roles)
	var local, undefined []string
	for _, r := range mapped {
		if _, ok := st.set.Roles[r]; ok {
			local = append(local, r)
		} else {
			undefined = append(undefined, r)
		}
	}
	ev.Roles = local
	if len(local) == 0 {
		return nil, roleUnmapped(a.cfg.ClusterName, tc.Metadata.Name, exch.Roles, unmapped, undefined)
	}
	keys, err := parseKeys(exchangeMethod, p.Outputs, p.TTLSeconds)
	if err != nil {
		return nil, err
	}
	// The root's name goes into the certificates' names (a SPIFFE ID path
	// segment, a CN, an SSH key ID): a name, whatever the root reports.
	if err := identity.CheckName("root cluster name", exch.RootCluster); err != nil {
		return nil, identity.Errorf(identity.CodeExchangeInvalid, "the root identity names its cluster %s, which this leaf cannot name it by (%v); the root's cluster_name must be a name",
			identity.Quote(identity.Truncate(exch.RootCluster, 64)), err)
	}
	// The root's bot, on this leaf: the mapped roles and no traits, named
	// apart from this leaf's own bots (exchangedName).
	leafBot := &resources.Bot{Metadata: resources.Metadata{Name: exch.Bot}, Spec: resources.BotSpec{Roles: local}}
	ls := a.Locks()
	resp, err := a.grant(st, ls, leafBot, exch.RootCluster, tc.Metadata.Name, exchangeMethod, p.Outputs, p.TTLSeconds, keys, identity.Lineage{}, exch.NotAfter, ev)
	if err != nil {
		return nil, err
	}
	ev.Allowed = true
	if err := a.store.RecordJoinSeen(ctx, trust.ProofID(req), p.Time.Add(identity.ExchangeWindow), ev, nil,
		store.Seen{Resources: st.version, Locks: ls.Generation()}); err != nil {
		if errors.Is(err, store.ErrStale) {
			return nil, err
		}
		if errors.Is(err, store.ErrReplay) {
			return nil, identity.Errorf(identity.CodeProofReplayed, "this exchange request was already used; each is accepted once, so make a new one (mbot issue does for every run)")
		}
		return nil, fmt.Errorf("recording exchange: %w", err)
	}
	return resp, nil
}

// trustedRoot finds the trusted cluster whose root is cluster claimed: the
// one that pins that cluster_name (spec.root.cluster_name), else the one
// whose root reports it. Two roots reporting one name are refused, never
// one of them picked: a second root must not pass for another.
func (a *Authority) trustedRoot(ctx context.Context, st *state, claimed string) (*resources.TrustedCluster, *trust.Root, error) {
	names := slices.Sorted(maps.Keys(st.set.TrustedClusters))
	a.trust.Forget(st.set.TrustedClusters)
	var found []string
	for _, name := range names {
		tc := st.set.TrustedClusters[name]
		if tc.Spec.Root.ClusterName == claimed {
			found = []string{name}
			break
		}
		if tc.Spec.Root.ClusterName != "" {
			continue // pinned to another name
		}
		root := a.trust.Get(tc)
		cluster := root.Cluster()
		if cluster == "" {
			// Disabled too: its tunnel stays, and trust_disabled needs the name.
			if _, c, err := a.trust.Bundle(ctx, root); err == nil {
				cluster = c
			}
		}
		if cluster == "" {
			cluster = name // the root is not reached: its name is the best guess
		}
		if cluster == claimed {
			found = append(found, name)
		}
	}
	switch len(found) {
	case 0:
		return nil, nil, identity.Errorf(identity.CodeUnknownRoot, "cluster %s trusts no root cluster named %s; an admin of %s adds a trusted_cluster for it (spec.root: its url, ca_pin and cluster_name)",
			a.cfg.ClusterName, identity.Quote(identity.Truncate(claimed, 64)), a.cfg.ClusterName)
	case 1:
	default:
		return nil, nil, identity.Errorf(identity.CodeRootNameCollision, "on cluster %s, the roots of trusted_clusters %s all report cluster_name %s, so none is trusted for it; an admin of %s pins the real root's name in its spec.root.cluster_name (and removes or corrects the other)",
			a.cfg.ClusterName, strings.Join(found, ", "), claimed, a.cfg.ClusterName)
	}
	tc := st.set.TrustedClusters[found[0]]
	if !tc.Spec.Enabled {
		return nil, nil, trustDisabled(a.cfg.ClusterName, claimed, tc.Metadata.Name, false)
	}
	return tc, a.trust.Get(tc), nil
}

// trustDisabled is the refusal of an exchange of root claimed on leaf,
// whose trusted_cluster tc has enabled: false, or was removed.
func trustDisabled(leaf, claimed, tc string, removed bool) error {
	if removed {
		return identity.Errorf(identity.CodeTrustDisabled, "leaf cluster %s trusts root cluster %s no more: its trusted_cluster %s was removed; an admin of %s applies it again to restore the trust",
			leaf, claimed, tc, leaf)
	}
	return identity.Errorf(identity.CodeTrustDisabled, "leaf cluster %s trusts root cluster %s no more: trusted_cluster %s has enabled: false; an admin of %s enables it again with mbot apply",
		leaf, claimed, tc, leaf)
}

// roleUnmapped is the refusal of an exchange whose root roles give no leaf role.
func roleUnmapped(leaf, tc string, remote, unmapped, undefined []string) error {
	var parts []string
	for _, r := range unmapped {
		parts = append(parts, fmt.Sprintf("role %s maps to no role on %s", r, leaf))
	}
	if len(undefined) > 0 {
		parts = append(parts, fmt.Sprintf("the role_map maps to %s, which %s not defined on %s", strings.Join(undefined, ", "),
			map[bool]string{true: "is", false: "are"}[len(undefined) == 1], leaf))
	}
	if len(remote) == 0 {
		parts = append(parts, "the root identity carries no role")
	}
	return identity.Errorf(identity.CodeRoleUnmapped, "%s; add a role_map entry to trusted_cluster %s on %s (or define the leaf role)",
		strings.Join(parts, "; "), tc, leaf)
}
