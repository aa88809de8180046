package authority_test

import (
	"context"
	"fmt"
	"math/big"
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
