package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestSignUser checks mbot sign --user: a long-lived identity above the 24h
// bot cap, up to max_admin_ttl, that logs in through sshd as its role's
// login and is recorded in the audit log.
func TestSignUser(t *testing.T) {
	mc := startMultiCluster(t)
	c := mc.cluster
	env := baseEnv(c.home)
	out := filepath.Join(t.TempDir(), "alice")

	start := time.Now()
	res := mustMbot(t, env, "sign", "--config", c.config, "--user", "alice", "--roles", roleA, "--ttl", "720h", "--out", out)
	if !strings.Contains(res.stderr, "alice") || !strings.Contains(res.stderr, out) {
		t.Errorf("mbot sign --user does not say what it wrote:\n%s", res.stderr)
	}

	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("%s has mode %o, want 0700", out, st.Mode().Perm())
	}
	for _, name := range identityFiles {
		fi, err := os.Stat(filepath.Join(out, name))
		if err != nil {
			t.Errorf("mbot sign --user did not write %s: %v", name, err)
			continue
		}
		if slices.Contains(secretFiles, name) && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %o, want 0600", name, fi.Mode().Perm())
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	cert := parseSSHCert(t, filepath.Join(out, "key-cert.pub"))
	userCA, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.export(t, "ssh-user-ca")))
	if err != nil {
		t.Fatal(err)
	}
	lifetime := time.Unix(int64(cert.ValidBefore), 0).Sub(start)
	switch {
	case cert.CertType != ssh.UserCert || !bytes.Equal(cert.SignatureKey.Marshal(), userCA.Marshal()):
		t.Errorf("key-cert.pub is not a user certificate of the SSH user CA")
	case !slices.Equal(cert.ValidPrincipals, []string{mc.loginA}):
		t.Errorf("key-cert.pub principals %v, want [%s] (role %s)", cert.ValidPrincipals, mc.loginA, roleA)
	case lifetime < 720*time.Hour-time.Minute || lifetime > 720*time.Hour+time.Minute:
		t.Errorf("key-cert.pub lives %s, want 720h", lifetime.Round(time.Second))
	}
	leaf := parseCertChain(t, filepath.Join(out, "tls.crt"))[0]
	wantURI := "spiffe://" + clusterName + "/user/alice"
	if leaf.Subject.CommonName != "alice" || len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantURI {
		t.Errorf("tls.crt CN %q URIs %v; want CN alice and %s", leaf.Subject.CommonName, leaf.URIs, wantURI)
	}
	if d := leaf.NotAfter.Sub(start); d < 720*time.Hour-time.Minute || d > 720*time.Hour+time.Minute {
		t.Errorf("tls.crt lives %s, want 720h", d.Round(time.Second))
	}
	if readFile(t, filepath.Join(out, "ca.crt")) != c.export(t, "tls-ca") {
		t.Errorf("ca.crt differs from mbot authority export --type tls-ca")
	}
	sum := readSummary(t, out)
	if sum.Cluster != clusterName || sum.Bot != "" || !slices.Equal(sum.Roles, []string{roleA}) || !slices.Equal(sum.Logins, []string{mc.loginA}) {
		t.Errorf("identity.json: %+v", sum)
	}
	if !strings.Contains(readFile(t, filepath.Join(out, "identity.json")), `"user": "alice"`) {
		t.Errorf("identity.json does not name user alice:\n%s", readFile(t, filepath.Join(out, "identity.json")))
	}

	t.Run("audit", func(t *testing.T) {
		events := auditEvents(t, c, "sign.user")
		if len(events) != 1 {
			t.Fatalf("%d sign.user audit records, want 1: %+v", len(events), events)
		}
		ev := events[0]
		switch {
		case !ev.Allowed || ev.Claims["user"] != "alice" || ev.Claims["os_user"] != c.login:
			t.Errorf("audit record: allowed %v claims %v; want user alice, os_user %s", ev.Allowed, ev.Claims, c.login)
		case !slices.Equal(ev.Roles, []string{roleA}):
			t.Errorf("audit roles %v, want [%s]", ev.Roles, roleA)
		case !slices.Contains(ev.Serials, "tls:"+strings.ToUpper(leaf.SerialNumber.Text(16))):
			t.Errorf("audit serials %v lack the TLS serial %X", ev.Serials, leaf.SerialNumber)
		case ev.NotAfter.Unix() != int64(cert.ValidBefore):
			t.Errorf("audit not_after %s, certificate valid before %s", ev.NotAfter, time.Unix(int64(cert.ValidBefore), 0))
		}
	})

	t.Run("ssh", func(t *testing.T) {
		srv := startSSHD(t, c)
		res := srv.connect(t, c, "-F", filepath.Join(out, "ssh_config"))
		if res.code != 0 || strings.TrimSpace(res.stdout) != "mbot-ok" {
			t.Fatalf("ssh with the signed user identity: %s\nsshd:\n%s", res, srv.logs)
		}
		if srv.waitForLog("user=alice") == "" {
			t.Errorf("sshd did not log a certificate login of user=alice:\n%s", srv.logs)
		}
		wantDenied(t, srv.connect(t, c, "-F", filepath.Join(out, "ssh_config"), "-l", mc.loginB), "the signed identity as "+mc.loginB)

		// sshd allows a session only the permit-* extensions its roles grant:
		// a remote forward is refused unless a role permits port forwarding.
		forward := []string{"-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"}
		res = srv.connect(t, c, slices.Concat([]string{"-F", filepath.Join(out, "ssh_config")}, forward)...)
		if res.code == 0 || !strings.Contains(res.stderr, "remote port forwarding failed") {
			t.Errorf("a remote forward without permit_port_forwarding: %s\nsshd:\n%s", res, srv.logs)
		}
		tunnel := filepath.Join(t.TempDir(), "dave")
		mustMbot(t, env, "sign", "--config", c.config, "--user", "dave", "--roles", roleA+","+roleTunnel, "--ttl", "1h", "--out", tunnel)
		res = srv.connect(t, c, slices.Concat([]string{"-F", filepath.Join(tunnel, "ssh_config")}, forward)...)
		if res.code != 0 || strings.TrimSpace(res.stdout) != "mbot-ok" {
			t.Errorf("a remote forward with role %s (permit_port_forwarding: true): %s\nsshd:\n%s", roleTunnel, res, srv.logs)
		}
	})

	t.Run("logins-trait", func(t *testing.T) {
		// The cluster's role e2e grants {{internal.logins}}: from --logins,
		// and nothing (with a warning) without it.
		dir := filepath.Join(t.TempDir(), "bob")
		res := mustMbot(t, env, "sign", "--config", c.config, "--user", "bob", "--roles", roleName, "--logins", c.login, "--ttl", "48h", "--out", dir)
		if p := parseSSHCert(t, filepath.Join(dir, "key-cert.pub")).ValidPrincipals; !slices.Equal(p, []string{c.login}) {
			t.Errorf("--logins %s gave principals %v: %s", c.login, p, res)
		}
		dir = filepath.Join(t.TempDir(), "carol")
		res = mustMbot(t, env, "sign", "--config", c.config, "--user", "carol", "--roles", roleName, "--ttl", "48h", "--out", dir)
		if p := parseSSHCert(t, filepath.Join(dir, "key-cert.pub")).ValidPrincipals; slices.Contains(p, c.login) || slices.Contains(p, "{{internal.logins}}") {
			t.Errorf("without --logins the certificate has principals %v", p)
		}
		if !strings.Contains(res.stderr, "warning") || !strings.Contains(res.stderr, "--logins") {
			t.Errorf("without --logins, no warning that {{internal.logins}} expanded to nothing:\n%s", res.stderr)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			args  []string
			exit  int
			wants []string
		}{
			{"above-max-admin-ttl", []string{"--user", "alice", "--roles", roleA, "--ttl", "10000h"}, 1, []string{"max_admin_ttl", "8760h"}},
			{"session-mfa-role", []string{"--user", "alice", "--roles", roleMFA, "--ttl", "720h"}, 1, []string{roleMFA, "require_session_mfa", "per-session MFA"}},
			{"unknown-role", []string{"--user", "alice", "--roles", "nope", "--ttl", "720h"}, 1, []string{`"nope"`, roleA}},
			{"no-ttl", []string{"--user", "alice", "--roles", roleA}, 2, []string{"--ttl"}},
			{"host-and-user", []string{"--user", "alice", "--host", "localhost", "--roles", roleA, "--ttl", "1h"}, 2, []string{"one of --host, --user and --admin"}},
			{"neither", []string{"--roles", roleA, "--ttl", "1h"}, 2, []string{"--host", "--user"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				parent := t.TempDir()
				args := append([]string{"sign", "--config", c.config, "--out", filepath.Join(parent, "out")}, tc.args...)
				res := mbot(t, env, args...)
				if res.code != tc.exit {
					t.Fatalf("want exit %d: %s", tc.exit, res)
				}
				for _, want := range tc.wants {
					if !strings.Contains(res.stderr, want) {
						t.Errorf("stderr does not mention %q:\n%s", want, res.stderr)
					}
				}
				wantEmpty(t, parent)
			})
		}
		// Refused attempts to get a long-lived credential are audited too.
		var refused int
		for _, ev := range auditEvents(t, c, "sign.user") {
			if !ev.Allowed {
				refused++
			}
		}
		if refused != 3 {
			t.Errorf("%d refused sign.user audit records, want 3 (ttl, MFA role, unknown role)", refused)
		}
	})
}
