//go:build unix

package bench

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/internal/simci"
)

// processCPU is the CPU time this process has used, user and system: on a
// shared machine a steadier figure than the clock.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRecordJoinAudit is what a join's record costs the SQLite store
// as BenchmarkJoins writes it (a GitHub token's claims, an SSH and an X.509
// serial, both certificates in issued_certificates), from 64 writers at
// once so that joins share commits as they do under load: "indexed" with
// the console's audit index (the audit_indexed trigger, audit_terms and
// audit_minutes), "unindexed" with the trigger dropped, in the same run
// (compare ns/op, and cpu-us/op, the process CPU time per record).
func BenchmarkRecordJoinAudit(b *testing.B) {
	claims := map[string]string{}
	for k, v := range simci.GitHubClaims() {
		claims[k] = fmt.Sprint(v)
	}
	for _, variant := range []string{"indexed", "unindexed"} {
		indexed := variant == "indexed"
		b.Run(variant, func(b *testing.B) {
			dir := b.TempDir()
			st, err := store.OpenSQLite(context.Background(), dir)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			if !indexed {
				db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, store.FileName)+"?_pragma=busy_timeout(10000)")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := db.Exec(`DROP TRIGGER audit_indexed`); err != nil {
					b.Fatal(err)
				}
				db.Close()
			}
			v, err := st.Versions(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			exp := time.Now().Add(time.Hour)
			var next atomic.Int64
			b.ResetTimer()
			cpu0 := processCPU()
			var wg sync.WaitGroup
			for range concurrency {
				wg.Go(func() {
					for i := int(next.Add(1)) - 1; i < b.N; i = int(next.Add(1)) - 1 {
						notAfter := time.Now().Add(time.Hour)
						ssh, tls := strconv.Itoa(1e9+i), fmt.Sprintf("%032X", i)
						ev := &store.AuditEvent{Event: "join", Allowed: true, Bot: "deployer", JoinToken: "github-deploy", Method: "github",
							Claims: claims, Roles: []string{"deploy"}, Outputs: []string{"identity: ssh ci, tls"},
							Serials: []string{"ssh:" + ssh, "tls:" + tls}, NotAfter: notAfter, Remote: "127.0.0.1:40000",
							Certificates: []store.IssuedCertificate{
								{CA: "ssh-user-ca", Serial: ssh, NotAfter: notAfter, Output: "identity", OutputType: "identity", Roles: []string{"deploy"}},
								{CA: "tls-ca", Serial: tls, NotAfter: notAfter, Output: "identity", OutputType: "identity", Roles: []string{"deploy"}},
							}}
						if err := st.RecordJoinSeen(context.Background(), "proof-"+strconv.Itoa(i), exp, ev, nil,
							store.Seen{Resources: v.Resources, Locks: v.Locks}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-us/op")
		})
	}
}
