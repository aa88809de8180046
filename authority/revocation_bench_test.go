package authority_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
	"golang.org/x/crypto/ssh"
)

// BenchmarkRevocationLists10k renders a KRL and a CRL of 10,000 revoked
// serials, reporting each list's size in bytes.
func BenchmarkRevocationLists10k(b *testing.B) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cas, err := authority.LoadCAs(ctx, st, "acme", nil)
	if err != nil {
		b.Fatal(err)
	}
	sshSerials := make([]uint64, 10000)
	tlsSerials := make([]string, 10000)
	for i := range sshSerials {
		sshSerials[i] = authority.RandomSSHSerial()
		tlsSerials[i] = fmt.Sprintf("%X", new(big.Int).Lsh(big.NewInt(int64(i+1)), 100))
	}
	now := time.Now()
	b.Run("ssh-krl", func(b *testing.B) {
		var n int
		for b.Loop() {
			n = len(authority.KRL([]ssh.PublicKey{cas.SSHUser.PublicKey()}, sshSerials, 1, now))
		}
		b.ReportMetric(float64(n), "bytes")
	})
	b.Run("crl", func(b *testing.B) {
		var n int
		for b.Loop() {
			crl, err := cas.CRLs("database-client", tlsSerials, big.NewInt(1), now)
			if err != nil {
				b.Fatal(err)
			}
			n = len(crl)
		}
		b.ReportMetric(float64(n), "bytes")
	})
}

// BenchmarkRevocationsServed10k: GET /v1/revocations/crl/tls of a CRL
// that revokes 10,000 certificates (one join token's, locked), as served
// from the replica's rendering, and its ratio to rendering the list anew
// (the store query and the signature), measured in the same run: what a
// request costs while the lock set stays the same.
func BenchmarkRevocationsServed10k(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bots.yaml"), []byte(strings.ReplaceAll(botsYAML, "ISSUER", "https://issuer.invalid")), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"), []byte("cluster_name: acme\ndata_dir: data\nresources: [bots.yaml]\n"))
	if err != nil {
		b.Fatal(err)
	}
	a, err := authority.Open(ctx, cfg, authority.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	notAfter := time.Now().Add(time.Hour)
	for e := range 100 {
		ev := &store.AuditEvent{Event: "join", Allowed: true, Bot: "deployer", JoinToken: "github-deploy", Method: "github"}
		for i := range 100 {
			ev.Certificates = append(ev.Certificates, store.IssuedCertificate{CA: "tls-ca", NotAfter: notAfter,
				Serial: fmt.Sprintf("%X", new(big.Int).Lsh(big.NewInt(int64(e*100+i+1)), 100))})
		}
		if err := a.Store().Audit(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
	if err := a.Store().AddLock(ctx, &store.Lock{Kind: "join_token", Target: "github-deploy", Reason: "leaked", Time: time.Now(), LockedBy: "bench"}); err != nil {
		b.Fatal(err)
	}
	h := a.Handler()
	get := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/revocations/crl/tls", nil))
		if rec.Code != http.StatusOK {
			b.Fatalf("GET: %d %s", rec.Code, rec.Body)
		}
		return rec.Body.Len()
	}
	get() // renders it once
	const renders = 5
	start := time.Now()
	for range renders {
		crl, err := authority.RevocationList(ctx, a.Store(), a.CAs(), a.Locks(), "crl", "tls", time.Now())
		if err != nil || len(crl) < 10000*30 {
			b.Fatalf("rendering: %d bytes, %v", len(crl), err)
		}
	}
	render := time.Since(start) / renders
	var n int
	served := time.Now()
	for b.Loop() {
		n = get()
	}
	per := time.Since(served) / time.Duration(b.N)
	b.ReportMetric(float64(n), "bytes")
	b.ReportMetric(float64(render.Microseconds()), "µs-render")
	b.ReportMetric(float64(render)/float64(per), "x-faster-than-render")
}
