package authority_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
)

// startOnce opens the authority of dir/authority.yaml (extra appended),
// serves until it is ready (the admin identity is written by then) and
// stops it; it returns Serve's error.
func startOnce(t *testing.T, dir, extra string) error {
	t.Helper()
	cfg, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"),
		[]byte("cluster_name: acme\nlisten: 127.0.0.1:0\ndata_dir: data\n"+extra))
	if err != nil {
		t.Fatal(err)
	}
	a, err := authority.Open(t.Context(), cfg, authority.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	return a.Serve(ctx, func(net.Addr) { cancel() })
}

// adminCert reads the admin identity's certificate under dir.
func adminCert(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "data", authority.AdminDirName, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestAdminIdentityRenewedAtStart checks when a start writes a new admin
// identity: one from a longer setting is replaced by one of
// admin_identity_ttl, a fresh one is kept.
func TestAdminIdentityRenewedAtStart(t *testing.T) {
	dir := t.TempDir()
	if err := startOnce(t, dir, "admin_identity_ttl: 8760h\n"); err != nil {
		t.Fatal(err)
	}
	if left := time.Until(adminCert(t, dir).NotAfter); left < 8759*time.Hour {
		t.Fatalf("admin_identity_ttl: 8760h gave an identity for %s", left)
	}
	if err := startOnce(t, dir, ""); err != nil {
		t.Fatal(err)
	}
	day := adminCert(t, dir)
	if left := time.Until(day.NotAfter); left > 24*time.Hour || left < 23*time.Hour {
		t.Errorf("the year-long admin identity was not replaced by a 24h one: it expires in %s", left)
	}
	if err := startOnce(t, dir, ""); err != nil {
		t.Fatal(err)
	}
	if again := adminCert(t, dir); !again.Equal(day) {
		t.Errorf("a fresh admin identity was replaced at the next start")
	}
}

// TestAdminIdentityRefusesSymlink checks that the authority does not write
// its admin identity through a link planted at <data_dir>/admin.
func TestAdminIdentityRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	elsewhere := filepath.Join(dir, "elsewhere")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(elsewhere, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(dir, "data", authority.AdminDirName)); err != nil {
		t.Fatal(err)
	}
	err := startOnce(t, dir, "")
	if err == nil || !strings.Contains(err.Error(), "writing the admin identity") || !strings.Contains(err.Error(), "is a symbolic link to") {
		t.Fatalf("start with a symlinked admin directory: %v, want a refusal", err)
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("the admin identity was written through the link: %v", entries)
	}
}
