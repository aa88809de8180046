package authority

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
)

// tokenMethod is the join method whose single-use secret cannot be
// presented twice: its bots renew with their certificate instead.
const tokenMethod = "token"

func (a *Authority) registerRenew(mux *routes) {
	mux.HandleFunc("POST "+identity.PathRenew, a.handleRenew)
}

func (a *Authority) handleRenew(w http.ResponseWriter, r *http.Request) {
	var req identity.RenewRequest
	if err := decodeBody(w, r, &req); err != nil {
		a.refuseBody(w, r, "renew", err)
		return
	}
	var cert *x509.Certificate
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		cert = r.TLS.VerifiedChains[0][0]
	}
	resp, err := a.Renew(r.Context(), &req, cert, r.RemoteAddr)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// Renew certifies new keys for the bot of cert, the client certificate of
// a token join or of an earlier renewal, and records the outcome in the
// audit log either way. A refusal is an *identity.Error.
func (a *Authority) Renew(ctx context.Context, req *identity.RenewRequest, cert *x509.Certificate, remote string) (*identity.JoinResponse, error) {
	start := time.Now()
	var (
		ev   *store.AuditEvent
		resp *identity.JoinResponse
		err  error
	)
	for attempt := 0; ; attempt++ {
		ev = &store.AuditEvent{Event: "renew", Method: tokenMethod, Remote: remote}
		st, ls := a.state.Load(), a.Locks()
		resp, err = a.renew(ctx, req, cert, ev)
		// Decided on resources or locks that another process changed since
		// (nothing was written, or a refusal the change may lift): decide
		// again on the current ones.
		var answered storeAnswer
		if err == nil || attempt == maxStaleRetries || errors.As(err, &answered) || (!a.changedSince(ctx, st, ls) && !errors.Is(err, store.ErrStale)) {
			break
		}
	}
	if err == nil {
		if err = a.store.Audit(ctx, ev); err != nil {
			err = fmt.Errorf("recording renewal: %w", err)
		}
	}
	if err != nil {
		refusal := a.recordRefusal(ctx, ev, err)
		a.metrics.renewal(time.Since(start), refusal)
		a.logRefusal(ctx, "renewal refused", "bot", ev.Bot, "join_token", ev.JoinToken, "generation", ev.Claims["generation"],
			"code", refusal.Code, "reason", ev.Message, "cause", boundedCause(refusal.Err), "remote", ev.Remote)
		return nil, refusal
	}
	a.metrics.renewal(time.Since(start), nil)
	a.log.Info("renewal admitted", "bot", ev.Bot, "join_token", ev.JoinToken, "generation", ev.Claims["generation"],
		"roles", ev.Roles, "not_after", ev.NotAfter, "remote", ev.Remote)
	return resp, nil
}

// renew is the renewal path: certificate → bot and lineage → join token
// and bot still there, bot not locked → roles and TTL → sign the next
// generation → advance the counter (or lock the bot) → respond.
func (a *Authority) renew(ctx context.Context, req *identity.RenewRequest, cert *x509.Certificate, ev *store.AuditEvent) (*identity.JoinResponse, error) {
	keys, err := parseKeys("renewal", req.Outputs, req.TTLSeconds)
	if err != nil {
		return nil, err
	}
	botName, lineage, err := a.renewingBot(cert)
	if err != nil {
		return nil, err
	}
	ev.Bot, ev.JoinToken = botName, lineage.JoinToken
	// The join's identifying claims, as recorded with the certificate
	// presented, go on with every renewal: a claim lock covers the whole
	// chain, its revocation lists and the leaves' exchanges included.
	joined, err := a.joinClaims(ctx, cert)
	if err != nil {
		return nil, err
	}
	ev.Claims = map[string]string{}
	for k, v := range joined {
		ev.Claims[k] = v
	}
	ev.Claims["generation"] = strconv.FormatUint(lineage.Generation, 10)
	ev.Claims["tls_serial"] = serialString(cert.SerialNumber)

	a.refresh(ctx)
	st, ls := a.state.Load(), a.Locks()
	tok, ok := st.tokens[lineage.JoinToken]
	if !ok || tok.token.Spec.Bot != botName {
		return nil, identity.Errorf(identity.CodeRenewalRefused, "join token %q, which bot %q joined with, no longer exists on this authority, so identities from it are not renewed; "+
			"have an admin run mbot tokens add --bot %s and join again with the new secret", lineage.JoinToken, botName, botName)
	}
	bot := st.set.Bots[botName] // the join token's bot exists: references are checked
	if err := checkLocks(ls, locks.Subject{Bot: botName, Instance: lineage.Chain, JoinToken: lineage.JoinToken, Claims: joined,
		Serials: []string{"tls:" + serialString(cert.SerialNumber)}}, "renewal"); err != nil {
		return nil, err
	}
	presented := lineage.Generation
	lineage.Generation++
	resp, err := a.grant(st, ls, bot, "", lineage.JoinToken, tok.token.Spec.Method, req.Outputs, req.TTLSeconds, keys, lineage, time.Time{}, ev)
	if err != nil {
		return nil, err
	}
	// Signing comes first so that a refused grant never advances the
	// counter; the certificates are dropped if the counter refuses.
	err = a.store.AdvanceGeneration(ctx, store.Renewal{Bot: botName, JoinToken: lineage.JoinToken, Chain: lineage.Chain,
		Generation: presented, Keys: keysFingerprint(req.Outputs), Remote: ev.Remote,
		Seen: store.Seen{Resources: st.version, Locks: ls.Generation(), Check: true}})
	var (
		mismatch *store.GenerationMismatch
		locked   *store.InstanceLockedError
	)
	switch {
	case errors.Is(err, store.ErrUnlockedChain):
		return nil, identity.Errorf(identity.CodeRenewalRefused, "this identity of bot %q is no longer renewed: an admin unlocked its instance (mbot unlock) after a copy of it was presented, "+
			"which ends the renewals of that instance, the copy's and the original's alike; join again with a new secret (mbot tokens add --bot %s)", botName, botName)
	case errors.Is(err, store.ErrUnknownChain):
		return nil, identity.Errorf(identity.CodeRenewalRefused, "this identity of bot %q is no longer renewed: join token %q was removed or used to join again since it was issued; "+
			"join again with a new secret (mbot tokens add --bot %s)", botName, lineage.JoinToken, botName)
	case errors.As(err, &mismatch):
		ev.Claims["instance"] = lineage.Chain
		a.recordInstanceLock(ctx, mismatch, ev)
		return nil, storeAnswer{instanceLockedError(mismatch.Lock)}
	case errors.As(err, &locked):
		a.reloadLocksLogged(ctx)
		return nil, storeAnswer{instanceLockedError(locked.Lock)}
	case errors.Is(err, store.ErrStale):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("advancing the generation counter: %w", err)
	}
	ev.Allowed = true
	return resp, nil
}

// joinClaims are the identifying claims of the join a renewal chain
// started with, as recorded with cert (the chain's latest certificate);
// none for a certificate recorded before certificates were.
func (a *Authority) joinClaims(ctx context.Context, cert *x509.Certificate) (map[string]string, error) {
	issued, err := a.store.IssuedCertificates(ctx, store.IssuedFilter{CA: caTLS + "-ca", Serial: serialString(cert.SerialNumber), Limit: 1})
	if err != nil {
		return nil, fmt.Errorf("reading the certificate presented: %w", err)
	}
	if len(issued) == 0 {
		return nil, nil
	}
	claims := map[string]string{}
	for k, v := range issued[0].Claims {
		if k != "generation" && k != "tls_serial" {
			claims[k] = v
		}
	}
	return claims, nil
}

// renewingBot checks that cert is a current bot certificate of this
// cluster, signed by its TLS CA, and reads its bot name and lineage.
func (a *Authority) renewingBot(cert *x509.Certificate) (string, identity.Lineage, error) {
	if cert == nil {
		return "", identity.Lineage{}, identity.Errorf(identity.CodeIdentityRequired,
			"a renewal is authenticated by the bot's current certificate: present the tls.crt and tls.key of the identity to renew (mbot start does)")
	}
	roots := x509.NewCertPool()
	for _, root := range a.CAs().TLSRoots() {
		roots.AddCert(root) // during a TLS CA rotation, certificates of either CA renew
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", identity.Lineage{}, identity.Errorf(identity.CodeIdentityRequired,
			"certificate %q is not a current certificate of this authority (%v); join again", cert.Subject.CommonName, err)
	}
	prefix := "spiffe://" + a.cfg.ClusterName + "/bot/"
	var bot string
	for _, u := range cert.URIs {
		if name, ok := strings.CutPrefix(u.String(), prefix); ok && name != "" {
			bot = name
		}
	}
	if bot == "" {
		return "", identity.Lineage{}, identity.Errorf(identity.CodeIdentityRequired,
			"certificate %q is not a bot identity of cluster %s; renew with the tls.crt of the bot's identity", cert.Subject.CommonName, a.cfg.ClusterName)
	}
	lineage, err := identity.LineageOf(cert)
	if errors.Is(err, identity.ErrNoLineage) {
		return "", identity.Lineage{}, identity.Errorf(identity.CodeRenewalRefused,
			"this certificate of bot %q comes from a join that renews by joining again with a fresh proof from its platform; only token joins renew with their certificate", bot)
	}
	if err != nil {
		return "", identity.Lineage{}, identity.Errorf(identity.CodeRenewalRefused, "certificate of bot %q: %v", bot, err)
	}
	return bot, lineage, nil
}

// newLineage starts a renewal chain for a token join: its single-use
// secret cannot be presented again, so its daemon renews with its
// certificate. Other methods renew by joining again with a fresh proof.
func newLineage(req *identity.JoinRequest) identity.Lineage {
	if req.Method != tokenMethod {
		return identity.Lineage{}
	}
	chain := make([]byte, 16)
	if _, err := rand.Read(chain); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return identity.Lineage{JoinToken: req.JoinToken, Chain: hex.EncodeToString(chain), Generation: 1}
}

// recordInstanceLock applies a lock the store has just written to this
// process, and logs and audits it naming the instance's runner: the lock is
// a record of its own, beside the refused renewal (ev) that caused it.
func (a *Authority) recordInstanceLock(ctx context.Context, mismatch *store.GenerationMismatch, ev *store.AuditEvent) {
	l := mismatch.Lock
	a.reloadLocksLogged(ctx)
	a.metrics.locks.Inc()
	a.log.Error("locked a bot instance: a stale certificate generation was presented, so the instance's identity was copied; the bot's other instances keep renewing",
		"bot", l.Bot, "join_token", l.JoinToken, "instance", l.Instance, "first_join", l.FirstJoin, "runner", l.Runner,
		"presented", mismatch.Presented, "current", mismatch.Current, "remote", ev.Remote)
	lockEv := &store.AuditEvent{Event: "bot_instance.lock", Allowed: true, Bot: l.Bot, JoinToken: l.JoinToken, Method: tokenMethod,
		Remote: ev.Remote, Claims: map[string]string{"instance": l.Instance, "runner": l.Runner},
		Message: fmt.Sprintf("locked bot instance %s of bot %s (join token %q, %s): %s; the bot's other instances keep renewing",
			l.Instance, l.Bot, l.JoinToken, runnerOf(l), l.Reason)}
	if !l.FirstJoin.IsZero() {
		lockEv.Claims["first_join"] = l.FirstJoin.Format(time.RFC3339)
	}
	lockEv.Bound()
	a.auditAdmin(context.WithoutCancel(ctx), lockEv)
}

// instanceLockedError is the refusal of a locked instance's renewal, in
// the lock set's one shape.
func instanceLockedError(l *store.InstanceLock) error {
	return locks.Lock{Kind: locks.KindInstance, Target: l.Instance, Reason: l.Reason, Since: l.Time, LockedBy: "authority", Automatic: true,
		Bot: l.Bot, JoinToken: l.JoinToken, FirstJoin: l.FirstJoin, Runner: l.Runner}.Refusal("renewal")
}

// storeAnswer is a refusal the store gave in the renewal's own
// transaction (it locked the instance, or found it locked): the renewal is
// not decided again.
type storeAnswer struct{ error }

func (e storeAnswer) Unwrap() error { return e.error }

// maxStaleRetries bounds how often a join, renewal or exchange decides
// again because resources or locks changed while it was decided.
const maxStaleRetries = 5

// keysFingerprint identifies the public keys a renewal asks certificates
// for, so that a retry of a renewal whose answer was lost is recognised.
func keysFingerprint(outputs []identity.OutputRequest) string {
	h := sha256.New()
	for _, o := range outputs {
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00", o.Name, o.SSHPublicKey, o.TLSPublicKey)
	}
	return hex.EncodeToString(h.Sum(nil))
}
