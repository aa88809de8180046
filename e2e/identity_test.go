package e2e

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// identityFiles are the files of the default identity output (SPEC §4).
var identityFiles = []string{"key", "key.pub", "key-cert.pub", "tls.key", "tls.crt", "ca.crt",
	"known_hosts", "ssh_config", "identity.json"}

// secretFiles must be readable by the owner only.
var secretFiles = []string{"key", "tls.key", "identity.json"}

// summary is the part of identity.json the tests read.
type summary struct {
	Cluster   string    `json:"cluster"`
	Bot       string    `json:"bot"`
	JoinToken string    `json:"join_token"`
	Method    string    `json:"method"`
	Roles     []string  `json:"roles"`
	Logins    []string  `json:"logins"`
	NotAfter  time.Time `json:"not_after"`
	NotBefore time.Time `json:"not_before"`
}

// checkIdentity checks an identity directory against SPEC §4 and the
// authority's CAs, and returns its identity.json.
func checkIdentity(t *testing.T, c *cluster, dir, token, method string) summary {
	t.Helper()
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatalf("identity directory: %v", err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("%s has mode %o, want 0700", dir, st.Mode().Perm())
	}
	for _, name := range identityFiles {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("identity file missing: %v", err)
			continue
		}
		perm := fi.Mode().Perm()
		switch {
		case slices.Contains(secretFiles, name) && perm != 0o600:
			t.Errorf("%s has mode %o, want 0600", name, perm)
		case perm&0o022 != 0:
			t.Errorf("%s has mode %o: writable by others", name, perm)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	sum := readSummary(t, dir)
	if sum.Cluster != clusterName || sum.Bot != botName || sum.JoinToken != token || sum.Method != method {
		t.Errorf("identity.json names cluster %q bot %q join_token %q method %q; want %q %q %q %q",
			sum.Cluster, sum.Bot, sum.JoinToken, sum.Method, clusterName, botName, token, method)
	}
	if !slices.Equal(sum.Roles, []string{roleName}) || !slices.Contains(sum.Logins, c.login) {
		t.Errorf("identity.json has roles %v logins %v; want roles [%s] and login %s", sum.Roles, sum.Logins, roleName, c.login)
	}
	if !sum.NotAfter.After(time.Now()) {
		t.Errorf("identity.json not_after %s is not in the future", sum.NotAfter)
	}

	if key := readFile(t, filepath.Join(dir, "key")); !strings.HasPrefix(key, "-----BEGIN OPENSSH PRIVATE KEY-----") {
		t.Errorf("key is not an OpenSSH private key")
	}
	if key := readFile(t, filepath.Join(dir, "tls.key")); !strings.HasPrefix(key, "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("tls.key is not a PKCS#8 PEM key")
	}

	cert := parseSSHCert(t, filepath.Join(dir, "key-cert.pub"))
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(readFile(t, filepath.Join(dir, "key.pub"))))
	if err != nil {
		t.Fatalf("key.pub: %v", err)
	}
	userCA, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.export(t, "ssh-user-ca")))
	if err != nil {
		t.Fatalf("ssh-user-ca: %v", err)
	}
	switch {
	case cert.CertType != ssh.UserCert:
		t.Errorf("key-cert.pub is not a user certificate (type %d)", cert.CertType)
	case !bytes.Equal(cert.Key.Marshal(), pub.Marshal()):
		t.Errorf("key-cert.pub certifies another key than key.pub")
	case !bytes.Equal(cert.SignatureKey.Marshal(), userCA.Marshal()):
		t.Errorf("key-cert.pub is not signed by the authority's SSH user CA")
	case !slices.Contains(cert.ValidPrincipals, c.login):
		t.Errorf("key-cert.pub principals %v lack %s", cert.ValidPrincipals, c.login)
	case time.Unix(int64(cert.ValidBefore), 0).After(sum.NotAfter.Add(time.Second)):
		t.Errorf("key-cert.pub valid until %s, after identity.json not_after %s", time.Unix(int64(cert.ValidBefore), 0), sum.NotAfter)
	}

	caPEM := readFile(t, filepath.Join(dir, "ca.crt"))
	if caPEM != c.export(t, "tls-ca") {
		t.Errorf("ca.crt differs from mbot authority export --type tls-ca")
	}
	leaf := parseCertChain(t, filepath.Join(dir, "tls.crt"))[0]
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(caPEM))
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("tls.crt is not a client certificate of ca.crt: %v", err)
	}
	wantURI := "spiffe://" + clusterName + "/bot/" + botName
	if leaf.Subject.CommonName != botName || len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantURI {
		t.Errorf("tls.crt has CN %q and URIs %v; want CN %q and URI %s", leaf.Subject.CommonName, leaf.URIs, botName, wantURI)
	}
	if leaf.NotAfter.After(sum.NotAfter.Add(time.Second)) {
		t.Errorf("tls.crt valid until %s, after identity.json not_after %s", leaf.NotAfter, sum.NotAfter)
	}

	hostCA := strings.TrimSpace(c.export(t, "ssh-host-ca"))
	if kh := readFile(t, filepath.Join(dir, "known_hosts")); !strings.Contains(kh, "@cert-authority ") || !strings.Contains(kh, "localhost") || !strings.Contains(kh, hostCA) {
		t.Errorf("known_hosts does not trust the SSH host CA for localhost:\n%s", kh)
	}
	cfg := readFile(t, filepath.Join(dir, "ssh_config"))
	for _, want := range []string{"Host localhost", "User " + c.login, filepath.Join(dir, "key"), filepath.Join(dir, "key-cert.pub"), filepath.Join(dir, "known_hosts")} {
		if !strings.Contains(cfg, want) {
			t.Errorf("ssh_config lacks %q:\n%s", want, cfg)
		}
	}
	return sum
}

func parseSSHCert(t *testing.T, path string) *ssh.Certificate {
	t.Helper()
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(readFile(t, path)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		t.Fatalf("%s holds a %s key, not a certificate", path, key.Type())
	}
	return cert
}

func parseCertChain(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	rest := []byte(readFile(t, path))
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			t.Fatalf("%s holds a %s block", path, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		t.Fatalf("%s holds no certificate", path)
	}
	return certs
}

// readSummary reads identity.json.
func readSummary(t *testing.T, dir string) summary {
	t.Helper()
	var sum summary
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "identity.json"))), &sum); err != nil {
		t.Fatalf("identity.json: %v", err)
	}
	return sum
}
