//go:build linux

package bench

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/authoritytest"
	"github.com/mbot-dev/mbot/internal/testservers"
)

// BenchmarkJoinsByStorage is BenchmarkJoins for each store: SQLite, one
// authority on PostgreSQL, and two replicas on one PostgreSQL database
// (clients alternate between them, as a round-robin load balancer would).
// Each of the 64 clients opens a fresh TLS connection per join and
// verifies the authority's chain like mbot issue. Compare joins/s and
// p99-ms of the three in one run:
//
//	go test ./bench -run '^$' -bench JoinsByStorage -benchtime 4000x
func BenchmarkJoinsByStorage(b *testing.B) {
	// One PostgreSQL for every run (the benchmark function runs each
	// sub-benchmark several times), a fresh database per run.
	pg := testservers.StartPostgresForStore(b)
	var dbs atomic.Int64
	postgres := func(b *testing.B) string {
		return testservers.PostgresStorageYAML(b, pg.CreateDatabase(b, fmt.Sprintf("bench_%d", dbs.Add(1))))
	}
	b.Run("sqlite", func(b *testing.B) {
		benchJoinsThrough(b, []*authoritytest.Env{startEnv(b).Env})
	})
	b.Run("postgres-1", func(b *testing.B) {
		cfg := postgres(b)
		benchJoinsThrough(b, []*authoritytest.Env{startEnvWith(b, cfg).Env})
	})
	b.Run("postgres-2", func(b *testing.B) {
		cfg := postgres(b)
		first := startEnvWith(b, cfg)
		second := authoritytest.StartWithIssuer(b, first.Issuer, "bench", first.resources, cfg)
		benchJoinsThrough(b, []*authoritytest.Env{first.Env, second})
	})
}

// envWith is an env that remembers its resources, for a second replica.
type envWith struct {
	*env
	resources string
}

func startEnvWith(tb testing.TB, extraConfig string) *envWith {
	resources := strings.Replace(botsYAML, "KUBE_CA", fmt.Sprintf("%q", benchCAPEM(tb)), 1)
	return &envWith{env: &env{authoritytest.Start(tb, "bench", resources, extraConfig)}, resources: resources}
}

// benchJoinsThrough runs b.N joins, request i through replicas[i%len].
func benchJoinsThrough(b *testing.B, replicas []*authoritytest.Env) {
	e := &env{replicas[0]}
	tokens := e.mintTokens(b, b.N)
	keys, err := identity.NewKeys()
	if err != nil {
		b.Fatal(err)
	}
	hosts := make([]string, len(replicas))
	tlsCfgs := make([]*tls.Config, len(replicas))
	for i, r := range replicas {
		hosts[i] = r.URL[len("https://"):]
		roots := x509.NewCertPool()
		roots.AddCert(r.Authority.CAs().TLSCert)
		tlsCfgs[i] = &tls.Config{RootCAs: roots, CurvePreferences: identity.TLSCurves, MinVersion: tls.VersionTLS13}
	}
	requests := make([][]byte, b.N)
	for i, tok := range tokens {
		body, _ := json.Marshal(identity.JoinRequest{
			JoinToken: "github-deploy", Method: "github", Proof: tok, TTLSeconds: 3600,
			Outputs: []identity.OutputRequest{{Name: "identity", SSHPublicKey: keys.SSHPublicKey(), TLSPublicKey: keys.TLSPublicKeyPEM()}},
		})
		req, _ := http.NewRequest(http.MethodPost, "https://"+hosts[i%len(hosts)]+identity.PathJoin, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Close = true
		var buf bytes.Buffer
		if err := req.Write(&buf); err != nil {
			b.Fatal(err)
		}
		requests[i] = buf.Bytes()
	}
	latencies := make([]time.Duration, b.N)
	var next, failures atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < b.N; i = int(next.Add(1)) - 1 {
				t0 := time.Now()
				r := i % len(hosts)
				if err := joinOnce(hosts[r], tlsCfgs[r], requests[i]); err != nil {
					if failures.Add(1) == 1 {
						b.Error(err)
					}
				}
				latencies[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "joins/s")
	b.ReportMetric(ms(latencies[len(latencies)/2]), "p50-ms")
	b.ReportMetric(ms(latencies[len(latencies)*99/100]), "p99-ms")
	b.ReportMetric(float64(failures.Load()), "failures")
}
