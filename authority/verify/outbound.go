package verify

import (
	"context"
	"fmt"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// Some proofs can only be judged by asking another service on the caller's
// behalf (AWS STS for iam, the API server's TokenReview for Kubernetes
// in_cluster), before anything about the caller is known. Outbound bounds
// those calls, so that a flood of unauthenticated joins cannot pile up
// connections to the service, or get the authority throttled by it: at most
// InFlight calls run at once; a call that finds no free slot within Wait is
// refused issuer_unavailable with Retry-After (the proof was not looked at,
// so the client may send it again) rather than queued; each call ends after
// its timeout. The OIDC discovery of an issuer can share it.
type Outbound struct {
	slots         chan struct{}
	wait, timeout time.Duration
}

// The defaults: STS and TokenReview answer in tens of milliseconds, so 16
// calls at once serve hundreds of joins a second.
const (
	DefaultOutboundInFlight = 16
	DefaultOutboundWait     = time.Second
	DefaultOutboundTimeout  = 10 * time.Second
	// outboundRetryAfter is what a refused caller is told to wait.
	outboundRetryAfter = time.Second
)

// NewOutbound returns a limit of inFlight calls at once, each waiting at
// most wait for its turn and running at most timeout.
func NewOutbound(inFlight int, wait, timeout time.Duration) *Outbound {
	return &Outbound{slots: make(chan struct{}, max(inFlight, 1)), wait: wait, timeout: timeout}
}

// outbound returns the environment's limit, the default one if none was set.
func (e *Env) outbound() *Outbound {
	e.outboundMu.Lock()
	defer e.outboundMu.Unlock()
	if e.Outbound == nil {
		e.Outbound = NewOutbound(DefaultOutboundInFlight, DefaultOutboundWait, DefaultOutboundTimeout)
	}
	return e.Outbound
}

// Call runs call in a slot with the limit's timeout, or refuses with
// issuer_unavailable if no slot frees up within its wait. service names what
// is called, for the message; tokenName is the join token the call is for.
func (o *Outbound) Call(ctx context.Context, tokenName, service string, call func(ctx context.Context) error) error {
	wait := time.NewTimer(o.wait)
	defer wait.Stop()
	select {
	case o.slots <- struct{}{}:
	case <-wait.C:
		return &identity.Error{Code: identity.CodeIssuerUnavailable, RetryAfter: outboundRetryAfter,
			Message: fmt.Sprintf("join token %q: the authority is already waiting for %d answers from %s; retry in %s", tokenName, cap(o.slots), service, outboundRetryAfter)}
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-o.slots }()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	return call(ctx)
}
