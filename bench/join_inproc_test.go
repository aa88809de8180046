package bench

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/mbot-dev/mbot/identity"
)

// BenchmarkJoinLogic measures Authority.Join alone (verify, rules, sign,
// replay and audit records), without TLS or HTTP.
func BenchmarkJoinLogic(b *testing.B) {
	e := startEnv(b)
	tokens := e.mintTokens(b, b.N)
	keys, err := identity.NewKeys()
	if err != nil {
		b.Fatal(err)
	}
	out := identity.OutputRequest{Name: "identity", SSHPublicKey: keys.SSHPublicKey(), TLSPublicKey: keys.TLSPublicKeyPEM()}
	var next atomic.Int64
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			req := &identity.JoinRequest{JoinToken: "github-deploy", Method: "github", Proof: tokens[i], TTLSeconds: 3600,
				Outputs: []identity.OutputRequest{out}}
			if _, err := e.Authority.Join(context.Background(), req, "bench"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
