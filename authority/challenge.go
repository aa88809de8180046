package authority

import (
	"context"
	"errors"
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
	resp, err := a.joinChallenge(ctx, req, refusalKey(remote))
	var refusal *identity.Error
	if errors.As(err, &refusal) && refusal.Code == identity.CodeRateLimited {
		// Too many unanswered challenges from one address: answered 429
		// like the refusal limiter's drops, and not recorded one by one.
		return nil, err
	}
	if err != nil {
		ev := &store.AuditEvent{Event: "join.challenge", JoinToken: req.JoinToken, Method: verify.BoundKeypairMethod, Remote: remote}
		refusal := a.recordRefusal(ctx, ev, err)
		a.logRefusal(ctx, "challenge refused", "join_token", ev.JoinToken, "code", refusal.Code, "reason", ev.Message,
			"cause", boundedCause(refusal.Err), "remote", ev.Remote)
		return nil, refusal
	}
	return resp, nil
}

func (a *Authority) joinChallenge(ctx context.Context, req *identity.ChallengeRequest, requester string) (*identity.ChallengeResponse, error) {
	if err := identity.CheckName("join_token", req.JoinToken); err != nil {
		return nil, identity.Errorf(identity.CodeBadRequest, "%v; check --token (MBOT_TOKEN)", err)
	}
	a.refresh(ctx)
	st := a.state.Load()
	tok, err := st.joinToken(req.JoinToken)
	if err != nil && a.refreshNow(ctx) {
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
	return c.Challenge(ctx, requester)
}
