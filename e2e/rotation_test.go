package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// rotate runs `mbot authority rotate` with args and returns its result.
func (c *cluster) rotate(t *testing.T, args ...string) result {
	t.Helper()
	res := mbot(t, baseEnv(c.home), append([]string{"authority", "rotate", "--config", c.config}, args...)...)
	if res.code == 0 && !slices.Contains(args, "--status") {
		// The running authority reads a step made by another process from
		// the store within reloadInterval (250ms), even when idle.
		time.Sleep(600 * time.Millisecond)
	}
	return res
}

// issueGitLab issues an identity from a fresh GitLab job into a new directory.
func (c *cluster) issueGitLab(t *testing.T, name string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	if res := c.issue(t, c.jobEnv(gitLabJob(t, c)), tokenGitLab, out); res.code != 0 {
		t.Fatalf("mbot issue (%s): %s", name, res)
	}
	return out
}

// sshSigningCA is the SHA256 fingerprint of the CA that signed the SSH
// certificate of the identity in dir.
func sshSigningCA(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, identity.FileSSHCert))
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		t.Fatal(err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		t.Fatalf("%s is not a certificate", identity.FileSSHCert)
	}
	return ssh.FingerprintSHA256(cert.SignatureKey)
}

// exportedSSHCAs are the fingerprints of the CA keys an export lists.
func exportedSSHCAs(t *testing.T, export string) []string {
	t.Helper()
	var out []string
	for line := range strings.Lines(export) {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		out = append(out, ssh.FingerprintSHA256(pub))
	}
	return out
}

// issueSignedBy issues identities until one's SSH certificate is signed by
// ca: the running authority picks a rotation step up from the store within
// a fraction of a second, and a join that started before sees the old step.
func (c *cluster) issueSignedBy(t *testing.T, name, ca string) string {
	t.Helper()
	for range 20 {
		dir := c.issueGitLab(t, name)
		if sshSigningCA(t, dir) == ca {
			return dir
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the authority did not sign with %s after the rotation step", ca)
	return ""
}

// TestRotateSSHUserCA rotates the SSH user CA of a running authority: a
// real sshd trusting the exported user CA bundle accepts certificates of
// the old and the new CA during the grace period, and only the new one's
// once the rotation is over and the bundle exported again.
func TestRotateSSHUserCA(t *testing.T) {
	c := startCluster(t)
	oldCAs := exportedSSHCAs(t, c.export(t, "ssh-user-ca"))
	if len(oldCAs) != 1 {
		t.Fatalf("the user CA export lists %d keys before any rotation", len(oldCAs))
	}
	before := c.issueGitLab(t, "before")
	if got := sshSigningCA(t, before); got != oldCAs[0] {
		t.Fatalf("identity signed by %s, not the user CA %s", got, oldCAs[0])
	}

	res := c.rotate(t, "--type", "ssh-user", "--grace", "1h")
	if res.code != 0 || !strings.Contains(res.stdout, "ssh-user CA rotation: init") {
		t.Fatalf("rotate (init): %s", res)
	}
	bundle := exportedSSHCAs(t, c.export(t, "ssh-user-ca"))
	if len(bundle) != 2 || bundle[0] != oldCAs[0] {
		t.Fatalf("during init the user CA export lists %q, want the old CA (signing) then the new", bundle)
	}
	newCA := bundle[1]
	status := c.rotate(t, "--status")
	if status.code != 0 || !strings.Contains(status.stdout, "ssh-user") || !strings.Contains(status.stdout, " init ") ||
		!strings.Contains(status.stdout, oldCAs[0]+" "+newCA) {
		t.Errorf("rotate --status during init:\n%s", status)
	}
	if during := c.issueGitLab(t, "init"); sshSigningCA(t, during) != oldCAs[0] {
		t.Error("the new CA signs in phase init")
	}

	if res := c.rotate(t, "--type", "ssh-user", "--phase", "update_clients"); res.code != 0 || !strings.Contains(res.stdout, "update_clients") {
		t.Fatalf("rotate (update_clients): %s", res)
	}
	during := c.issueSignedBy(t, "during", newCA)

	srv := startSSHD(t, c) // trusts the bundle exported now: both CAs
	for name, dir := range map[string]string{"old CA (before the rotation)": before, "new CA (during the rotation)": during} {
		if res := srv.connect(t, c, "-F", filepath.Join(dir, "ssh_config")); res.code != 0 || strings.TrimSpace(res.stdout) != "mbot-ok" {
			t.Errorf("ssh during the grace period with a certificate of the %s: %s\nsshd:\n%s", name, res, srv.logs)
		}
	}

	// The grace period (1h) has not passed: the old CA may not be dropped yet.
	res = c.rotate(t, "--type", "ssh-user", "--phase", "update_servers")
	if res.code == 0 || !strings.Contains(res.stderr, "grace period runs until") || !strings.Contains(res.stderr, "--force") {
		t.Fatalf("update_servers before the grace period ended: %s", res)
	}
	res = c.rotate(t, "--type", "ssh-user", "--phase", "standby")
	if res.code == 0 || !strings.Contains(res.stderr, "the next phase is update_servers") {
		t.Fatalf("standby straight from update_clients: %s", res)
	}
	for _, phase := range []string{"update_servers", "standby"} {
		if res := c.rotate(t, "--type", "ssh-user", "--phase", phase, "--force"); res.code != 0 || !strings.Contains(res.stdout, "rotation: "+phase) {
			t.Fatalf("rotate (%s): %s", phase, res)
		}
	}
	if after := exportedSSHCAs(t, c.export(t, "ssh-user-ca")); len(after) != 1 || after[0] != newCA {
		t.Fatalf("after the rotation the user CA export lists %q, want only the new CA %s", after, newCA)
	}
	status = c.rotate(t, "--status")
	if strings.Contains(status.stdout, oldCAs[0]) || !strings.Contains(status.stdout, newCA) {
		t.Errorf("rotate --status after the rotation:\n%s", status)
	}

	srv = startSSHD(t, c) // trusts the bundle exported after the rotation
	if res := srv.connect(t, c, "-F", filepath.Join(during, "ssh_config")); res.code != 0 || strings.TrimSpace(res.stdout) != "mbot-ok" {
		t.Errorf("ssh after the rotation with a certificate of the new CA: %s\nsshd:\n%s", res, srv.logs)
	}
	after := c.issueSignedBy(t, "after", newCA)
	if res := srv.connect(t, c, "-F", filepath.Join(after, "ssh_config")); res.code != 0 {
		t.Errorf("ssh with an identity issued after the rotation: %s", res)
	}
	wantDenied(t, srv.connect(t, c, "-F", filepath.Join(before, "ssh_config")), "ssh after the rotation with a certificate of the old CA")
}

// servingCA dials the authority and returns the pin of the CA its serving
// certificate chains to, after checking the chain against the roots in caFile.
func servingCA(t *testing.T, c *cluster, caFile string) (string, error) {
	t.Helper()
	pemData, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemData) {
		t.Fatalf("%s holds no certificate", caFile)
	}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(c.url, "https://"), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	chain := conn.ConnectionState().VerifiedChains[0]
	sum := sha256.Sum256(chain[len(chain)-1].RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// TestRotateTLSCA rotates the TLS CA of a running authority: the ca.crt of
// an identity issued mid-rotation verifies the authority whether the old or
// the new CA signs its serving certificate; the old ca.crt and pin keep
// working until update_servers, which changes the pin.
func TestRotateTLSCA(t *testing.T) {
	c := startCluster(t)
	before := c.issueGitLab(t, "before")
	oldPin := c.pin

	if res := c.rotate(t, "--type", "tls", "--grace", "1h"); res.code != 0 {
		t.Fatalf("rotate (init): %s", res)
	}
	if res := c.rotate(t, "--type", "tls", "--phase", "update_clients"); res.code != 0 {
		t.Fatalf("rotate (update_clients): %s", res)
	}
	status := c.rotate(t, "--status").stdout
	var newPin string
	for line := range strings.Lines(status) {
		if rest, ok := strings.CutPrefix(line, "CA pin after the TLS rotation:"); ok {
			newPin = strings.TrimSpace(rest)
		}
	}
	if !strings.HasPrefix(newPin, "sha256:") || newPin == oldPin {
		t.Fatalf("rotate --status does not show the new CA pin:\n%s", status)
	}
	mid := filepath.Join(c.issueGitLab(t, "mid"), identity.FileCA)
	data, err := os.ReadFile(mid)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "BEGIN CERTIFICATE"); n != 2 {
		t.Fatalf("ca.crt of an identity issued mid-rotation holds %d CAs, want 2", n)
	}

	// The old CA still signs the serving certificate: the old ca.crt, the
	// mid-rotation one and the old pin all verify the authority.
	for name, caFile := range map[string]string{"old": filepath.Join(before, identity.FileCA), "mid-rotation": mid} {
		if pin, err := servingCA(t, c, caFile); err != nil || pin != oldPin {
			t.Errorf("the %s ca.crt during update_clients: serving CA %s, %v; want the old CA", name, pin, err)
		}
	}
	if res := c.issue(t, c.jobEnv(gitLabJob(t, c)), tokenGitLab, filepath.Join(t.TempDir(), "oldpin")); res.code != 0 {
		t.Errorf("mbot issue with the old pin during update_clients: %s", res)
	}
	// Clients given both pins work on either side of update_servers.
	bothPins := oldPin + "," + newPin
	c.pin = bothPins
	if res := c.issue(t, c.jobEnv(gitLabJob(t, c)), tokenGitLab, filepath.Join(t.TempDir(), "bothpins")); res.code != 0 {
		t.Errorf("mbot issue with both pins during update_clients: %s", res)
	}

	if res := c.rotate(t, "--type", "tls", "--phase", "update_servers", "--force"); res.code != 0 {
		t.Fatalf("rotate (update_servers): %s", res)
	}
	// The running authority, idle, reads the step from the store within a
	// fraction of a second and serves a certificate of the new CA.
	var pin string
	for range 100 {
		if pin, err = servingCA(t, c, mid); err != nil {
			t.Fatalf("the mid-rotation ca.crt does not verify the authority: %v", err)
		}
		if pin == newPin {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if pin != newPin {
		t.Fatalf("the serving certificate is still signed by %s after update_servers", pin)
	}
	if _, err := servingCA(t, c, filepath.Join(before, identity.FileCA)); err == nil {
		t.Error("a ca.crt holding only the old CA verifies the serving certificate of the new one")
	}
	for _, pin := range []string{bothPins, newPin} {
		c.pin = pin
		if res := c.issue(t, c.jobEnv(gitLabJob(t, c)), tokenGitLab, filepath.Join(t.TempDir(), "newpin")); res.code != 0 {
			t.Errorf("mbot issue with --ca-pin %s after update_servers: %s", pin, res)
		}
	}
	c.pin = oldPin
	if res := c.issue(t, c.jobEnv(gitLabJob(t, c)), tokenGitLab, filepath.Join(t.TempDir(), "oldpin-after")); res.code == 0 || !strings.Contains(res.stderr, "--ca-pin") {
		t.Errorf("mbot issue with only the old pin after update_servers: %s", res)
	}
	if got := strings.TrimSpace(c.export(t, "ca-pin")); got != newPin {
		t.Errorf("export --type ca-pin after update_servers: %s, want %s", got, newPin)
	}
	if res := c.rotate(t, "--type", "tls", "--phase", "standby", "--force"); res.code != 0 {
		t.Fatalf("rotate (standby): %s", res)
	}
	if n := strings.Count(c.export(t, "tls-ca"), "BEGIN CERTIFICATE"); n != 1 {
		t.Errorf("after the rotation the TLS CA export holds %d CAs, want 1", n)
	}
}
