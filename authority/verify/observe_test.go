package verify_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/joiners"
)

// observed records what Env.Observe is told.
type observed struct {
	mu    sync.Mutex
	calls []string // call, then "ok" or "error"
}

func (o *observed) observe(call string, took time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	result := "ok"
	if err != nil {
		result = "error"
	}
	if took < 0 {
		result = "negative"
	}
	o.calls = append(o.calls, call+" "+result)
}

// TestObserveSTS: each call to STS is reported to Env.Observe, an answer
// as ok and an STS failure (5xx) as an error; the authority's metrics
// count them (mbot_outbound_calls_total{call="sts"}).
func TestObserveSTS(t *testing.T) {
	sts := startSTS(t)
	awsJobEnv(t, sts)
	j, err := joiners.ByMethod("iam")
	if err != nil {
		t.Fatal(err)
	}
	proof, err := j.Proof(context.Background(), os.Getenv, "acme")
	if err != nil {
		t.Fatal(err)
	}
	var o observed
	env := &verify.Env{Audience: "acme", Observe: o.observe}
	if _, err := mustCompile(t, "iam", iamSection(sts.URL, iamRoleRule), env).Verify(context.Background(), proof); err != nil {
		t.Fatal(err)
	}

	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	t.Cleanup(down.Close)
	if _, err := mustCompile(t, "iam", iamSection(down.URL, iamRoleRule), env).Verify(context.Background(), awsProof{url: down.URL + "/"}.sign(t)); err == nil {
		t.Fatal("a proof was admitted while STS failed")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.calls) != 2 || o.calls[0] != verify.CallSTS+" ok" || o.calls[1] != verify.CallSTS+" error" {
		t.Errorf("Observe was told %v, want [sts ok, sts error]", o.calls)
	}
}
