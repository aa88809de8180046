package verify_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

// TestOutboundLimit holds the service an unauthenticated proof is checked
// with (AWS STS for iam, TokenReview for Kubernetes in_cluster) and sends
// two proofs with room for one call: one waits for the service, the other
// is refused issuer_unavailable with Retry-After within the short wait and
// never reaches the service. With a service that never answers, a call
// ends at the limit's timeout.
func TestOutboundLimit(t *testing.T) {
	type service struct {
		verify   func(ctx context.Context, env *verify.Env) error
		hold     func()
		release  func()
		requests func() int
	}
	iam := func(t *testing.T) service {
		var (
			release  = make(chan struct{})
			requests atomic.Int32
		)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			select {
			case <-release:
			case <-r.Context().Done():
			}
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		t.Cleanup(srv.Close)
		proof := awsProof{url: srv.URL + "/"}.sign(t)
		return service{
			verify: func(ctx context.Context, env *verify.Env) error {
				_, err := mustCompile(t, "iam", iamSection(srv.URL, iamRoleRule), env).Verify(ctx, proof)
				return err
			},
			hold:     func() {},
			release:  func() { close(release) },
			requests: func() int { return int(requests.Load()) },
		}
	}
	kubernetes := func(t *testing.T) service {
		iss := startIssuer(t, jose.RS256)
		api := startTokenReviewServer(t)
		tok := iss.Sign(t, tokenClaims(t, "kubernetes", verify.KubernetesDefaultIssuer, "acme"))
		api.answer(tok, podReview("acme"))
		return service{
			verify: func(ctx context.Context, env *verify.Env) error {
				_, err := mustCompile(t, "kubernetes", api.section("  - service_account: ci:deployer\n"), env).Verify(ctx, tok)
				return err
			},
			hold:    func() { api.mu.Lock() },
			release: func() { api.mu.Unlock() },
			requests: func() int {
				api.mu.Lock()
				defer api.mu.Unlock()
				return api.requests
			},
		}
	}
	for name, start := range map[string]func(*testing.T) service{"iam": iam, "kubernetes in_cluster": kubernetes} {
		t.Run(name+" saturated", func(t *testing.T) {
			svc := start(t)
			env := newEnv(nil)
			if name == "iam" {
				env = awsEnv()
			}
			env.Outbound = verify.NewOutbound(1, 200*time.Millisecond, 5*time.Second)
			svc.hold()
			errs := make(chan error, 2)
			for range 2 {
				go func() { errs <- svc.verify(t.Context(), env) }()
			}
			var refused error
			select {
			case refused = <-errs:
			case <-time.After(3 * time.Second):
				t.Fatal("neither call was refused while the service was held")
			}
			svc.release()
			<-errs
			var ie *identity.Error
			if !errors.As(refused, &ie) || ie.Code != identity.CodeIssuerUnavailable || ie.RetryAfter <= 0 {
				t.Fatalf("err = %v, want issuer_unavailable with Retry-After", refused)
			}
			if n := svc.requests(); n != 1 {
				t.Errorf("the service got %d requests, want only the one that had room", n)
			}
		})
	}
	t.Run("iam call timeout", func(t *testing.T) {
		svc := iam(t)
		defer svc.release()
		env := awsEnv()
		env.Outbound = verify.NewOutbound(1, 200*time.Millisecond, 300*time.Millisecond)
		start := time.Now()
		err := svc.verify(t.Context(), env)
		wantRefusal(t, err, identity.CodeIssuerUnavailable)
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("the call took %s; the limit's timeout is 300ms", took)
		}
	})
}
