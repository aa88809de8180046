package authority_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/internal/skipreport"
)

// TestRevocationListsOfALockedBot: after a join token lock, the KRL that
// export --type ssh-krl writes revokes the unexpired SSH certificate of its
// join for ssh-keygen -Q, and the tls CRL its X.509 one for openssl crl
// -verify and openssl verify -crl_check; the certificates of a join through
// another join token are in neither list.
func TestRevocationListsOfALockedBot(t *testing.T) {
	for _, tool := range []string{"ssh-keygen", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipreport.Skipf(t, "%s is not installed (CI installs openssh-client and openssl)", tool)
		}
	}
	a, ci := openAuthority(t)
	ctx := context.Background()
	locked := newOutput(t, "identity")
	resp, err := a.Join(ctx, joinRequest("github-deploy", "github", githubToken(t, ci, nil), time.Hour, locked), "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	other := newOutput(t, "identity")
	otherResp, err := a.Join(ctx, joinRequest("gitlab-deploy", "gitlab", gitlabToken(t, ci), time.Hour, other), "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Store().AddLock(ctx, &store.Lock{Kind: "join_token", Target: "github-deploy", Reason: "leaked", Time: time.Now(), LockedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	krl, err := authority.ExportRevocations(ctx, a.Store(), a.CAs(), "ssh-krl", "")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	krlPath := write("revoked_keys", krl)
	check := func(cert string) (string, error) {
		out, err := exec.Command("ssh-keygen", "-Q", "-f", krlPath, write("cert.pub", []byte(cert+"\n"))).CombinedOutput()
		return string(out), err
	}
	if out, err := check(resp.Outputs[0].SSHCertificate); err == nil || !strings.Contains(out, "REVOKED") {
		t.Errorf("ssh-keygen -Q on the locked bot's certificate: %v %s; want REVOKED", err, out)
	}
	if out, err := check(otherResp.Outputs[0].SSHCertificate); err != nil || !strings.Contains(out, "ok") {
		t.Errorf("ssh-keygen -Q on another bot's certificate: %v %s; want ok", err, out)
	}

	crlPEM, err := authority.ExportRevocations(ctx, a.Store(), a.CAs(), "crl", "tls")
	if err != nil {
		t.Fatal(err)
	}
	crlPath, caPath := write("tls.crl", crlPEM), write("ca.crt", a.CAs().TLSCertPEM)
	if out, err := exec.Command("openssl", "crl", "-verify", "-noout", "-in", crlPath, "-CAfile", caPath).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "verify OK") {
		t.Fatalf("openssl crl -verify: %v %s", err, out)
	}
	block, _ := pem.Decode(crlPEM)
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var revoked []string
	for _, e := range crl.RevokedCertificateEntries {
		revoked = append(revoked, strings.ToUpper(e.SerialNumber.Text(16)))
	}
	if len(revoked) != 1 || revoked[0] != resp.Outputs[0].TLSSerial {
		t.Errorf("the tls CRL revokes %v, want only the locked bot's %s (not %s)", revoked, resp.Outputs[0].TLSSerial, otherResp.Outputs[0].TLSSerial)
	}
	// The certificate it revoked is refused by OpenSSL with the CRL.
	certPath := write("tls.crt", []byte(resp.Outputs[0].TLSCertificate))
	out, _ := exec.Command("openssl", "verify", "-crl_check", "-CAfile", caPath, "-CRLfile", crlPath, certPath).CombinedOutput()
	if !strings.Contains(string(out), "revoked") {
		t.Errorf("openssl verify -crl_check of the locked bot's certificate: %s; want revoked", out)
	}
}

// TestRevocationsEndpoint: the lists are served with an ETag that a
// conditional request matches (304), and an unknown purpose is refused.
func TestRevocationsEndpoint(t *testing.T) {
	a, _ := openAuthority(t)
	h := a.Handler()
	get := func(path, etag string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, path := range []string{"/v1/revocations/ssh-krl", "/v1/revocations/crl/database-client"} {
		first := get(path, "")
		if first.Code != http.StatusOK || first.Header().Get("ETag") == "" || !strings.Contains(first.Header().Get("Cache-Control"), "max-age") {
			t.Fatalf("GET %s: %d %v", path, first.Code, first.Header())
		}
		if again := get(path, first.Header().Get("ETag")); again.Code != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match: %d, want 304", path, again.Code)
		}
	}
	if rec := get("/v1/revocations/crl/ssh-host", ""); rec.Code != http.StatusBadRequest {
		t.Errorf("GET a CRL of ssh-host: %d, want 400", rec.Code)
	}
}

// TestRevocationsRenderedOncePerChange: the lists are public and answered
// 200, which the guard does not charge, so 200 concurrent requests render
// each list once, not 200 times (a CRL of 10,000 serials takes 51 ms to
// sign); a lock renders it anew at once, and the locked join's
// certificate is in the next answer.
func TestRevocationsRenderedOncePerChange(t *testing.T) {
	a, ci := openAuthority(t)
	ctx := context.Background()
	h := a.Handler()
	get := func(path string) []byte {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
		return rec.Body.Bytes()
	}
	const path = "/v1/revocations/crl/tls"
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() { get(path) })
	}
	wg.Wait()
	if n := a.RevocationRenders("crl", "tls"); n != 1 {
		t.Errorf("200 concurrent GET %s rendered the CRL %d times; want once", path, n)
	}
	parse := func(pemData []byte) int {
		n := 0
		for rest := pemData; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				return n
			}
			crl, err := x509.ParseRevocationList(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			n += len(crl.RevokedCertificateEntries)
		}
	}
	if n := parse(get(path)); n != 0 {
		t.Fatalf("the CRL lists %d serials before any lock", n)
	}
	out := newOutput(t, "identity")
	if _, err := a.Join(ctx, joinRequest("github-deploy", "github", githubToken(t, ci, nil), time.Hour, out), "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Store().AddLock(ctx, &store.Lock{Kind: "join_token", Target: "github-deploy", Reason: "leaked", Time: time.Now(), LockedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	a.RefreshNow(ctx)
	if n := parse(get(path)); n != 1 {
		t.Errorf("right after the lock, the CRL lists %d serials; want the locked join's 1", n)
	}
	if n := a.RevocationRenders("crl", "tls"); n != 2 {
		t.Errorf("the CRL was rendered %d times after one lock; want 2", n)
	}
}

// TestRevocationsLastModified: a list's Last-Modified is when its revoked
// serials last changed, not when it was last rendered: If-Modified-Since
// with it gets 304 while nothing changed, and 200 with a later
// Last-Modified once a lock adds a serial.
func TestRevocationsLastModified(t *testing.T) {
	a, ci := openAuthority(t)
	ctx := context.Background()
	h := a.Handler()
	const path = "/v1/revocations/crl/tls"
	get := func(ims string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if ims != "" {
			req.Header.Set("If-Modified-Since", ims)
		}
		h.ServeHTTP(rec, req)
		return rec
	}
	first := get("")
	modified := first.Header().Get("Last-Modified")
	if first.Code != http.StatusOK || modified == "" || first.Header().Get("ETag") == "" || first.Header().Get("Cache-Control") == "" {
		t.Fatalf("GET %s: %d, headers %v", path, first.Code, first.Header())
	}
	if rec := get(modified); rec.Code != http.StatusNotModified {
		t.Errorf("If-Modified-Since its Last-Modified, nothing changed: %d, want 304", rec.Code)
	}
	out := newOutput(t, "identity")
	if _, err := a.Join(ctx, joinRequest("github-deploy", "github", githubToken(t, ci, nil), time.Hour, out), "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // Last-Modified counts in seconds
	if err := a.Store().AddLock(ctx, &store.Lock{Kind: "join_token", Target: "github-deploy", Reason: "leaked", Time: time.Now(), LockedBy: "test"}); err != nil {
		t.Fatal(err)
	}
	rec := get(modified)
	if rec.Code != http.StatusOK || rec.Header().Get("Last-Modified") == modified {
		t.Errorf("If-Modified-Since the old Last-Modified after a lock: %d, Last-Modified %q (was %q); want 200 and a later one",
			rec.Code, rec.Header().Get("Last-Modified"), modified)
	}
}
