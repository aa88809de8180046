//go:build linux

package bench

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

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
	targets := make([]joinTarget, len(replicas))
	for i, r := range replicas {
		targets[i] = targetOf(r)
	}
	load := mbotJoinLoad(b, replicas[0].Issuer, targets, b.N)
	b.ResetTimer()
	r := runLoad(b, b.N, load)
	b.StopTimer()
	b.ReportMetric(r.rate, "joins/s")
	b.ReportMetric(ms(r.p50), "p50-ms")
	b.ReportMetric(ms(r.p99), "p99-ms")
}
