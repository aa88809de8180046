package authority

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// maxOutputs bounds the outputs one join may ask for.
const maxOutputs = 16

// maxTTLSeconds bounds the TTL a request may ask for: anything above the
// caps is lowered to them with a warning, but a TTL this long is no honest
// request, and its nanoseconds would overflow a time.Duration.
const maxTTLSeconds = 366 * 24 * 60 * 60

// maxProof bounds a proof: the largest real one, an AWS signed request or a
// JWT with every claim of its platform, is a few kilobytes.
const maxProof = 64 << 10

// Join admits or refuses one join request and records the outcome in the
// audit log either way. A refusal is an *identity.Error. Every value of the
// record and the log line is bounded (store.AuditEvent.Bound) whatever the
// request carries.
func (a *Authority) Join(ctx context.Context, req *identity.JoinRequest, remote string) (*identity.JoinResponse, error) {
	start := time.Now()
	ev := &store.AuditEvent{Event: "join", JoinToken: req.JoinToken, Method: req.Method, Remote: remote}
	resp, err := a.join(ctx, req, ev)
	if err != nil {
		refusal := a.recordRefusal(ctx, ev, err)
		a.metrics.join(req.Method, time.Since(start), refusal)
		a.logRefusal(ctx, "join refused", "join_token", ev.JoinToken, "method", ev.Method, "bot", ev.Bot,
			"code", refusal.Code, "reason", ev.Message, "cause", boundedCause(refusal.Err), "remote", ev.Remote,
			"truncated_bytes", ev.TruncatedBytes)
		return nil, refusal
	}
	a.metrics.join(req.Method, time.Since(start), nil)
	a.log.Info("join admitted", "join_token", ev.JoinToken, "method", ev.Method, "bot", ev.Bot,
		"roles", ev.Roles, "not_after", ev.NotAfter, "remote", ev.Remote)
	return resp, nil
}

// boundedCause is the underlying error of a refusal as logged: it may
// quote what the caller sent, so it gets the audit message's bound.
func boundedCause(err error) any {
	if err == nil {
		return nil
	}
	return identity.Truncate(err.Error(), store.MaxAuditMessage)
}

// recordRefusal records a refused request in the audit log, unless the
// guard summarises it (guard.go), and returns the refusal to answer with.
func (a *Authority) recordRefusal(ctx context.Context, ev *store.AuditEvent, err error) *identity.Error {
	var refusal *identity.Error
	switch {
	case errors.As(err, &refusal):
	case errors.Is(err, store.ErrUnavailable):
		refusal = storeUnavailable(ev.Event, err)
	default:
		refusal = &identity.Error{Code: identity.CodeInternal, Message: "the authority failed to complete the " + ev.Event + "; see its log", Err: err}
	}
	ev.Allowed, ev.Code, ev.Message = false, string(refusal.Code), refusal.Message
	var detail auditDetail
	if errors.As(refusal.Err, &detail) {
		ev.Message = string(detail)
	} else if full, ok := locks.AuditDetail(refusal.Err); ok {
		ev.Message = full
	}
	// Certificates signed before a late refusal (replay) are never handed out.
	ev.Serials, ev.Outputs, ev.NotAfter, ev.Certificates = nil, nil, time.Time{}, nil
	ev.Bound()
	if st := stateOf(ctx); st != nil {
		st.code = refusal.Code
		if st.limited {
			return refusal
		}
	}
	if aerr := a.store.Audit(context.WithoutCancel(ctx), ev); aerr != nil {
		a.log.Error("recording refused "+ev.Event, "err", aerr)
	}
	return refusal
}

// auditDetail is a refusal's full reason, for the audit record and the log:
// the caller gets only the refusal's Message.
type auditDetail string

func (d auditDetail) Error() string { return string(d) }

// join is the whole path, top to bottom: request → join token → verify proof
// → allow rules → bot (not locked), roles and TTL → sign → record → respond.
func (a *Authority) join(ctx context.Context, req *identity.JoinRequest, ev *store.AuditEvent) (*identity.JoinResponse, error) {
	keys, err := parseOutputKeys(req)
	if err != nil {
		return nil, err
	}
	a.refresh(ctx)
	st, ls := a.state.Load(), a.Locks()
	tok, err := st.joinToken(req.JoinToken)
	if err != nil && a.changedSince(ctx, st, ls) {
		// A join token applied a moment ago by another process (mbot tokens
		// add, mbot apply) may not be loaded yet: look once more. Whoever
		// loaded it (this join, or the replica's change listener at the same
		// moment), the state is newer than st.
		st, ls = a.state.Load(), a.Locks()
		tok, err = st.joinToken(req.JoinToken)
	}
	if err != nil {
		return nil, err
	}
	ev.Bot = tok.token.Spec.Bot
	if tok.token.Spec.Method != req.Method {
		m := tok.token.Spec.Method
		return nil, identity.Errorf(identity.CodeMethodMismatch, "join token %q is for %s joins, but this client presented a %s proof; use a join token for %s, or pass --join-method %s from a %s job",
			req.JoinToken, m, req.Method, req.Method, m, m)
	}

	adm, err := verifyProof(ctx, tok.verifier, req, ev.Remote)
	if err != nil {
		// Record who presented the refused proof (never the proof itself),
		// marked as unverified: nothing is admitted on these claims.
		if u, ok := tok.verifier.(verify.UnverifiedClaimer); ok {
			if c := u.UnverifiedClaims(req.Proof); c != nil {
				ev.Claims, ev.ClaimsUnverified = c.Flatten(), true
			}
		}
		return nil, err
	}
	ev.Claims = adm.Claims.Flatten()
	recordCIPlatform(ev, req.CIPlatform)
	lineage := newLineage(req)
	advanced := false
	for attempt := 0; ; attempt++ {
		resp, err := a.admit(st, ls, tok, req, adm, keys, lineage, ev)
		if err != nil {
			// A refusal on resources or locks another process changed since
			// (mbot unlock, an apply that allows it) is decided again.
			if attempt == maxStaleRetries || !a.changedSince(ctx, st, ls) {
				return nil, err
			}
			if st, ls, tok, adm, err = a.readmit(ctx, req, tok, adm, ev); err != nil {
				return nil, err
			}
			continue
		}
		if adm.Advance != nil && !advanced {
			if err := adm.Advance(ctx); err != nil {
				return nil, err
			}
			advanced = true
		}
		ev.Allowed = true
		// A token join's renewal chain is recorded with the join, in one
		// transaction: a consumed single-use secret always leaves a chain.
		// The commit checks that resources and locks are still those the
		// join was admitted on.
		var chain *store.Chain
		if lineage.Generation > 0 {
			chain = &store.Chain{Bot: ev.Bot, JoinToken: req.JoinToken, ID: lineage.Chain, Runner: ev.Remote}
		}
		err = a.store.RecordJoinSeen(ctx, adm.ProofID, adm.UsableUntil, ev, chain, store.Seen{Resources: st.version, Locks: ls.Generation()})
		switch {
		case errors.Is(err, store.ErrStale) && attempt < maxStaleRetries:
			// Changed by mbot rm, apply or lock (any process) since this
			// process read them: admit again on the current ones.
			a.refreshNow(ctx)
			if st, ls, tok, adm, err = a.readmit(ctx, req, tok, adm, ev); err != nil {
				return nil, err
			}
			continue
		case errors.Is(err, store.ErrReplay):
			return nil, identity.Errorf(identity.CodeProofReplayed, "join token %q: this proof was already used to join; each is accepted once, so fetch a fresh one from the platform (for a token join: mbot tokens add prints a new secret)",
				req.JoinToken)
		case err != nil:
			return nil, fmt.Errorf("recording join: %w", err)
		}
		return resp, nil
	}
}

// readmit prepares a join to be decided again on the resources and locks
// now in effect: its join token as it is now, and the proof verified again
// if the join token changed.
func (a *Authority) readmit(ctx context.Context, req *identity.JoinRequest, tok *compiledToken, adm *verify.Admission, ev *store.AuditEvent) (
	*state, *locks.Set, *compiledToken, *verify.Admission, error) {
	ev.Allowed, ev.Roles, ev.Outputs, ev.Serials, ev.NotAfter = false, nil, nil, nil, time.Time{}
	st, ls := a.state.Load(), a.Locks()
	next, err := st.joinToken(req.JoinToken)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if next.token.Spec.Method != tok.token.Spec.Method {
		return nil, nil, nil, nil, identity.Errorf(identity.CodeMethodMismatch, "join token %q became a %s join token while this join was admitted; join again",
			req.JoinToken, next.token.Spec.Method)
	}
	if !reflect.DeepEqual(next.token.Spec, tok.token.Spec) {
		if adm, err = verifyProof(ctx, next.verifier, req, ev.Remote); err != nil {
			return nil, nil, nil, nil, err
		}
		ev.Claims = adm.Claims.Flatten()
		recordCIPlatform(ev, req.CIPlatform)
	}
	return st, ls, next, adm, nil
}

// admit is the part of a join decided on the resources and locks in effect
// (st, ls), which it repeats when they change before its commit: allow
// rules, bot and locks, roles and TTL, signing.
func (a *Authority) admit(st *state, ls *locks.Set, tok *compiledToken, req *identity.JoinRequest, adm *verify.Admission,
	keys []outputKeys, lineage identity.Lineage, ev *store.AuditEvent) (*identity.JoinResponse, error) {
	if ok, why := policy.MatchRules(tok.verifier.Rules(), adm.Claims); !ok {
		// The caller learns which fields failed, not the patterns they failed:
		// those are for the admins who read the audit record.
		return nil, &identity.Error{Code: identity.CodeRuleMismatch,
			Message: fmt.Sprintf("join token %q admits no token with these claims (%s): %s; run from a job the join token's allow rules name, or ask its admins to change them",
				req.JoinToken, adm.Claims, why.Public()),
			Err: auditDetail(fmt.Sprintf("join token %q admits no token with these claims (%s): %s; change the join token's allow rules or run from a matching job",
				req.JoinToken, adm.Claims, why))}
	}
	bot := st.set.Bots[tok.token.Spec.Bot]
	if err := checkLocks(ls, locks.Subject{Bot: bot.Metadata.Name, JoinToken: req.JoinToken, Claims: ev.Claims}, "join"); err != nil {
		return nil, err
	}
	return a.grant(st, ls, bot, "", req.JoinToken, req.Method, req.Outputs, req.TTLSeconds, keys, lineage, time.Time{}, ev)
}

// recordCIPlatform adds the CI platform the client reports to the audit
// record of a join with a cloud's method. What the proof shows
// (ci_platform, from CodeBuild's role session or Cloud Build's service
// account) is kept; a report the proof does not confirm is recorded as
// ci_platform_reported: nothing is admitted on it.
func recordCIPlatform(ev *store.AuditEvent, reported string) {
	if reported == "" || ev.Claims["ci_platform"] == reported {
		return
	}
	if method, ok := identity.CIPlatforms[reported]; !ok || method != ev.Method {
		reported = identity.Printable(identity.Truncate(reported, 64)) + " (unknown for " + ev.Method + ")"
	}
	if ev.Claims == nil {
		ev.Claims = map[string]string{}
	}
	ev.Claims["ci_platform_reported"] = reported
}

// grant resolves every output's roles and TTL and signs its certificates:
// the part of a join that a renewal and a trusted cluster's exchange
// repeat. Certificates of a renewal chain carry its lineage (zero for joins
// that renew by joining again). No certificate outlives limit, when set
// (an exchange's: the root identity it was exchanged for). root is the
// root cluster of an exchanged identity, "" for this cluster's own bots:
// the certificates name an exchanged identity apart (exchangedName).
func (a *Authority) grant(st *state, ls *locks.Set, bot *resources.Bot, root, joinToken, method string, outputs []identity.OutputRequest,
	ttlSeconds int64, keys []outputKeys, lineage identity.Lineage, limit time.Time, ev *store.AuditEvent) (*identity.JoinResponse, error) {
	// The bot as the roles' templates see it: its traits and the {{mbot.*}} variables.
	tb := *bot
	tb.Spec.Traits = resources.IdentityTraits(bot.Spec.Traits, bot.Metadata.Name, a.cfg.ClusterName, root)
	bot = &tb
	resp := &identity.JoinResponse{
		ClusterName:  a.cfg.ClusterName,
		Bot:          bot.Metadata.Name,
		JoinToken:    joinToken,
		Method:       method,
		TLSCA:        string(a.CAs().TLSCertPEM),
		SSHHostCA:    a.CAs().SSHHostCAKeys(),
		HostPatterns: a.cfg.SSH.HostPatterns,
	}
	for i, out := range outputs {
		grant, err := policy.ResolveGrant(st.set, bot, out.Roles, time.Duration(ttlSeconds)*time.Second, identity.MaxBotTTL)
		if err != nil {
			return nil, err
		}
		if err := checkLocks(ls, locks.Subject{Roles: grant.Roles}, ev.Event); err != nil {
			return nil, err
		}
		if grant.CapNote != "" {
			resp.TTLCapped = true
			resp.Warnings = append(resp.Warnings, fmt.Sprintf("output %q: %s", out.Name, grant.CapNote))
		}
		notAfter := time.Now().Add(grant.TTL).Truncate(time.Second)
		if !limit.IsZero() && notAfter.After(limit) {
			notAfter = limit
			resp.TTLCapped = true
			resp.Warnings = append(resp.Warnings, fmt.Sprintf("output %q: valid until %s, when the root identity it was exchanged for expires",
				out.Name, limit.UTC().Format(time.RFC3339)))
		}
		kind := outputKinds[out.OutputType()] // checked by parseKeys
		signed, err := kind.sign(&signCtx{cas: a.CAs(), cluster: a.cfg.ClusterName, root: root, set: st.set, bot: bot, joinToken: joinToken,
			out: &outputs[i], grant: grant, keys: keys[i], lineage: lineage, notAfter: notAfter,
			issuer: a.issuerURL(), claims: ev.Claims})
		if err != nil {
			return nil, err
		}
		if signed.SSHHost != nil {
			// The host's sshd reads the KRL from the output (RevokedKeys), so
			// each renewal brings it up to date in the same request.
			krl, err := RevocationList(context.Background(), a.store, a.CAs(), ls, "ssh-krl", "", time.Now())
			if err != nil {
				return nil, err
			}
			signed.SSHHost.RevokedKeys = krl
		}
		if signed.DatabaseServer != nil {
			// Likewise the database server's ssl_crl_file / ssl_crl.
			crl, err := RevocationList(context.Background(), a.store, a.CAs(), ls, "crl", caDatabaseClient, time.Now())
			if err != nil {
				return nil, err
			}
			signed.DatabaseServer.CRL = string(crl)
		}
		resp.Outputs = append(resp.Outputs, *signed)
		for _, r := range grant.Roles {
			if !slices.Contains(ev.Roles, r) {
				ev.Roles = append(ev.Roles, r)
			}
		}
		ev.Outputs = append(ev.Outputs, kind.audit(signed))
		sshCA, tlsCA := kind.signers()
		issued := store.IssuedCertificate{NotAfter: signed.NotAfter, Output: out.Name, OutputType: out.OutputType(),
			BotInstance: lineage.Chain, Roles: grant.Roles}
		if signed.SSHCertificate != "" {
			ev.Serials = append(ev.Serials, fmt.Sprintf("ssh:%d", signed.SSHSerial))
			issued.CA, issued.Serial = sshCA, strconv.FormatUint(signed.SSHSerial, 10)
			ev.Certificates = append(ev.Certificates, issued)
		}
		if signed.TLSSerial != "" {
			ev.Serials = append(ev.Serials, "tls:"+signed.TLSSerial)
			issued.CA, issued.Serial = tlsCA, signed.TLSSerial
			ev.Certificates = append(ev.Certificates, issued)
		}
		if signed.JWT != nil {
			// No list revokes a JWT-SVID: it is recorded, by its jti, so that
			// mbot lock can say until when those it covers stay valid.
			for _, s := range signed.JWT.SVIDs {
				if jti := jwtID(s.Token); jti != "" {
					issued.CA, issued.Serial = jwtIssuedCA, jti
					ev.Certificates = append(ev.Certificates, issued)
				}
			}
		}
		if ev.NotAfter.IsZero() || signed.NotAfter.After(ev.NotAfter) {
			ev.NotAfter = signed.NotAfter
		}
	}
	return resp, nil
}

// verifyProof verifies the join's proof; a proof that signs the request
// it comes in (bound_keypair) is verified with the request's output keys.
func verifyProof(ctx context.Context, v verify.Verifier, req *identity.JoinRequest, remote string) (*verify.Admission, error) {
	if rv, ok := v.(verify.RequestVerifier); ok {
		return rv.VerifyJoin(ctx, req.Proof, verify.JoinContext{OutputKeys: identity.OutputKeysDigest(req.Outputs), Retry: retryDigest(req), Remote: remote})
	}
	return v.Verify(ctx, req.Proof)
}

// retryDigest fingerprints the whole join request for bound_keypair's
// retry exemption (verify.JoinContext.Retry): every output as sent (name,
// type, roles, keys, and what it asks for, audiences included) and the TTL.
// It is empty, so that no retry is admitted, unless every output carries a
// key: a keyless output (workload-identity-jwt) answered twice is a second
// bearer credential, not a retry.
func retryDigest(req *identity.JoinRequest) string {
	if len(req.Outputs) == 0 {
		return ""
	}
	for _, o := range req.Outputs {
		if o.SSHPublicKey == "" && o.TLSPublicKey == "" {
			return ""
		}
	}
	b, err := json.Marshal(struct {
		JoinToken  string                   `json:"join_token"`
		TTLSeconds int64                    `json:"ttl_seconds"`
		Outputs    []identity.OutputRequest `json:"outputs"`
	}{req.JoinToken, req.TTLSeconds, req.Outputs})
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(append([]byte("mbot join retry v1\x00"), b...))
	return hex.EncodeToString(sum[:])
}

func (s *state) joinToken(name string) (*compiledToken, error) {
	tok, ok := s.tokens[name]
	if !ok {
		return nil, identity.Errorf(identity.CodeUnknownJoinToken, "there is no join token named %q on this authority; check --token (MBOT_TOKEN) or create it with mbot apply", name)
	}
	return tok, nil
}

// parseOutputKeys checks the request's shape and parses every output's keys.
// The join token and method are checked first: they are recorded and
// logged with every refusal.
func parseOutputKeys(req *identity.JoinRequest) ([]outputKeys, error) {
	if err := identity.CheckName("join_token", req.JoinToken); err != nil {
		return nil, identity.Errorf(identity.CodeBadRequest, "%v; check --token (MBOT_TOKEN)", err)
	}
	if _, ok := verify.Methods[req.Method]; !ok {
		return nil, identity.Errorf(identity.CodeBadRequest, "method %s is not a join method of this authority (%s); pass one of them with --join-method",
			identity.Quote(identity.Truncate(req.Method, 40)), strings.Join(verify.MethodNames(), ", "))
	}
	switch {
	case req.Proof == "":
		return nil, identity.Errorf(identity.CodeBadRequest, "the request carries no proof of identity")
	case len(req.Proof) > maxProof:
		return nil, identity.Errorf(identity.CodeBadRequest, "the proof is %d bytes; a %s proof is a few kilobytes, at most %d bytes", len(req.Proof), req.Method, maxProof)
	}
	return parseKeys("join", req.Outputs, req.TTLSeconds)
}

// parseKeys checks the outputs and TTL of a join or renewal and parses every output's keys.
func parseKeys(what string, outputs []identity.OutputRequest, ttlSeconds int64) ([]outputKeys, error) {
	switch {
	case len(outputs) == 0 || len(outputs) > maxOutputs:
		return nil, identity.Errorf(identity.CodeBadRequest, "a %s asks for 1 to %d outputs, not %d", what, maxOutputs, len(outputs))
	case ttlSeconds < 0:
		return nil, identity.Errorf(identity.CodeBadRequest, "ttl must not be negative")
	case ttlSeconds > maxTTLSeconds:
		return nil, identity.Errorf(identity.CodeBadRequest, "ttl of %d seconds is longer than any certificate this authority signs; ask for at most %s (--ttl)",
			ttlSeconds, identity.MaxBotTTL)
	}
	keys := make([]outputKeys, len(outputs))
	seen := map[string]bool{}
	for i, out := range outputs {
		// An output name reaches the SSH certificate's key ID, which sshd
		// logs, and the audit log: checked before the proof is looked at.
		if err := identity.CheckName("output name", out.Name); err != nil {
			return nil, identity.Errorf(identity.CodeBadRequest, "outputs[%d]: %v", i, err)
		}
		for _, r := range out.Roles {
			if err := identity.CheckName("role", r); err != nil {
				return nil, identity.Errorf(identity.CodeBadRequest, "output %q: %v", out.Name, err)
			}
		}
		if seen[out.Name] {
			return nil, identity.Errorf(identity.CodeBadRequest, "output %q appears twice", out.Name)
		}
		seen[out.Name] = true
		k, err := checkOutput(&out)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	return keys, nil
}

// quoteError is a parser's error about what the caller sent, as a refusal
// message carries it: parsers quote the offending bytes as they are, and
// the message reaches the log and terminals.
func quoteError(err error) string {
	return identity.Quote(identity.Truncate(err.Error(), 200))
}

// checkSSHKey applies the key policy of identity.CheckPublicKey to an SSH
// key; security-key (sk-*) types are refused, as a bot has no token to touch.
func checkSSHKey(k ssh.PublicKey) error {
	switch k.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoRSA:
		if ck, ok := k.(ssh.CryptoPublicKey); ok {
			return identity.CheckPublicKey(ck.CryptoPublicKey())
		}
	}
	return fmt.Errorf("key type %s is not accepted; use an Ed25519 key, an ECDSA key on P-256 or P-384, or RSA of at least 2048 bits", k.Type())
}
