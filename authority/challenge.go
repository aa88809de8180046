package authority

import (
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

// handleJoinChallenge hands out the challenge a bound_keypair join signs:
// one round trip before the join, for a nonce the authority issued itself,
// so that a signature cannot be made ahead of time or used twice.
func (a *Authority) handleJoinChallenge(w http.ResponseWriter, r *http.Request) {
	var req identity.ChallengeRequest
	if err := decodeBody(w, r, &req); err != nil {
		a.refuseBody(w, r, "join.challenge", err)
		return
	}
	resp, err := a.JoinChallenge(r.Context(), &req, r.RemoteAddr)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// JoinChallenge issues a challenge for a join token whose method takes one.
// A refusal is recorded in the audit log; an issued challenge is not (the
// join that answers it is).
func (a *Authority) JoinChallenge(ctx context.Context, req *identity.ChallengeRequest, remote string) (*identity.ChallengeResponse, error) {
	resp, err := a.joinChallenge(ctx, req)
	if err != nil {
		ev := &store.AuditEvent{Event: "join.challenge", JoinToken: req.JoinToken, Method: verify.BoundKeypairMethod, Remote: remote}
		refusal := a.recordRefusal(ctx, ev, err)
		a.logRefusal(ctx, "challenge refused", "join_token", ev.JoinToken, "code", refusal.Code, "reason", ev.Message,
			"cause", boundedCause(refusal.Err), "remote", ev.Remote)
		return nil, refusal
	}
	return resp, nil
}

func (a *Authority) joinChallenge(ctx context.Context, req *identity.ChallengeRequest) (*identity.ChallengeResponse, error) {
	if err := identity.CheckName("join_token", req.JoinToken); err != nil {
		return nil, identity.Errorf(identity.CodeBadRequest, "%v; check --token (MBOT_TOKEN)", err)
	}
	a.refresh(ctx)
	st := a.state.Load()
	tok, err := st.joinToken(req.JoinToken)
	if err != nil && a.changedSince(ctx, st, a.Locks()) {
		st = a.state.Load()
		tok, err = st.joinToken(req.JoinToken)
	}
	if err != nil {
		return nil, err
	}
	c, ok := tok.verifier.(verify.Challenger)
	if !ok {
		m := tok.token.Spec.Method
		return nil, identity.Errorf(identity.CodeMethodMismatch, "join token %q is for %s joins, which take no challenge; only bound_keypair join tokens do: pass --join-method %s",
			req.JoinToken, m, m)
	}
	return c.Challenge(ctx)
}

// challengeKeyRow names the store row of the key bound_keypair challenges
// are authenticated with (verify.Env.ChallengeKey). It sits beside the CA
// keys, in the same form (an Ed25519 PKCS #8 key, sealed with the
// key-encryption key when one is set), so that every replica reads the same
// key, migrate-keys and migrate-store seal it with them, and a database
// dump alone cannot forge challenges. It is never rotated: a challenge
// lives 60 s, and what it protects is the signature by the runner's key.
const challengeKeyRow = "keypair-challenge"

// loadChallengeKey reads the challenge key from the store, creating it on
// the first start (concurrent first starts: the first stored wins), and
// derives the HMAC key from it.
func loadChallengeKey(ctx context.Context, st store.Store, kek *KEK) ([]byte, error) {
	material, err := st.CA(ctx, challengeKeyRow)
	if errors.Is(err, store.ErrNotFound) {
		var created []byte
		if created, err = newChallengeKey(kek); err == nil {
			material, err = st.CreateCA(ctx, challengeKeyRow, created)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("loading the bound_keypair challenge key: %w", err)
	}
	m, err := parseCAMaterial(challengeKeyRow, material, kek, false)
	if err != nil {
		return nil, fmt.Errorf("loading the bound_keypair challenge key: %w", err)
	}
	key, ok := m.key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("loading the bound_keypair challenge key: the stored %s key is a %T, not Ed25519", challengeKeyRow, m.key)
	}
	return hkdf.Key(sha256.New, key.Seed(), nil, "mbot bound_keypair challenge key v1", sha256.Size)
}

func newChallengeKey(kek *KEK) ([]byte, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return (&caMaterial{der: der}).encode(challengeKeyRow, kek), nil
}
