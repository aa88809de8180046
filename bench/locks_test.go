package bench

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
)

// BenchmarkJoinLockCheck is what the lock set adds to a join: joins with no
// lock, and joins with 1,000 claim and 1,000 certificate locks none of
// which covers them, in the same run (compare ns/op of the two).
func BenchmarkJoinLockCheck(b *testing.B) {
	for _, n := range []int{0, 1000} {
		b.Run(fmt.Sprintf("locks=%d", 2*n), func(b *testing.B) {
			e := startEnv(b)
			for i := range n {
				for _, req := range []authority.LockRequest{
					{Kind: "claim", Target: "repository=other/app-" + strconv.Itoa(i), Reason: "bench"},
					{Kind: "cert", Target: "ssh:" + strconv.Itoa(i+1), Reason: "bench"},
				} {
					if _, err := e.Authority.Lock(context.Background(), req, "bench"); err != nil {
						b.Fatal(err)
					}
				}
			}
			tokens := e.mintTokens(b, b.N)
			keys, err := identity.NewKeys()
			if err != nil {
				b.Fatal(err)
			}
			out := identity.OutputRequest{Name: "identity", SSHPublicKey: keys.SSHPublicKey(), TLSPublicKey: keys.TLSPublicKeyPEM()}
			b.ResetTimer()
			for i := range b.N {
				req := &identity.JoinRequest{JoinToken: "github-deploy", Method: "github", Proof: tokens[i], TTLSeconds: 3600,
					Outputs: []identity.OutputRequest{out}}
				if _, err := e.Authority.Join(context.Background(), req, "bench"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRecordJoinSeen is the store side of the check: a join's commit
// on SQLite without (RecordJoin) and with the versions comparison
// (RecordJoinSeen) that makes mbot rm, apply and lock count at once, in the
// same run.
func BenchmarkRecordJoinSeen(b *testing.B) {
	for _, checked := range []bool{false, true} {
		b.Run(map[bool]string{false: "unchecked", true: "seen"}[checked], func(b *testing.B) {
			st, err := store.OpenSQLite(context.Background(), b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			v, err := st.Versions(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			exp := time.Now().Add(time.Hour)
			b.ResetTimer()
			for i := range b.N {
				ev := &store.AuditEvent{Event: "join", Allowed: true, Bot: "deployer", Claims: map[string]string{"repository": "acme/app"}}
				id := "proof-" + strconv.Itoa(i)
				if checked {
					err = st.RecordJoinSeen(context.Background(), id, exp, ev, nil, store.Seen{Resources: v.Resources, Locks: v.Locks})
				} else {
					err = st.RecordJoin(context.Background(), id, exp, ev)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
