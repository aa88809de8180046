package authority_test

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// openAuthorityWith opens an authority like openAuthority does, with
// extraConfig appended to its authority.yaml.
func openAuthorityWith(t *testing.T, extraConfig string) *authority.Authority {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bots.yaml"), []byte(strings.ReplaceAll(botsYAML, "ISSUER", "https://issuer.invalid")), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := tryOpenWith(t, dir, extraConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func userRequest(t *testing.T, ttl time.Duration, roles ...string) authority.UserSignRequest {
	return authority.UserSignRequest{User: "alice", Roles: roles, Logins: []string{"alice"}, TTL: ttl,
		Dir: filepath.Join(t.TempDir(), "alice"), OSUser: "operator"}
}

func signUserAudit(t *testing.T, a *authority.Authority) []store.AuditEvent {
	t.Helper()
	events, err := a.Store().ListAudit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var out []store.AuditEvent
	for _, ev := range events {
		if ev.Event == "sign.user" {
			out = append(out, ev)
		}
	}
	return out
}

func TestSignUser(t *testing.T) {
	a, _ := openAuthority(t)
	req := userRequest(t, 720*time.Hour, "deploy")
	start := time.Now()
	signed, err := a.SignUser(t.Context(), req)
	if err != nil {
		t.Fatalf("SignUser 720h: %v", err)
	}

	// The files of mbot issue's identity directory, in the same modes.
	var names []string
	files := map[string]identity.File{}
	for _, f := range signed.Files {
		names = append(names, f.Name)
		files[f.Name] = f
	}
	want := []string{"key", "key.pub", "key-cert.pub", "tls.key", "tls.crt", "ca.crt", "known_hosts", "ssh_config", "identity.json"}
	if !slices.Equal(names, want) {
		t.Errorf("files %v, want %v", names, want)
	}
	for _, secret := range []string{"key", "tls.key", "identity.json"} {
		if files[secret].Mode != 0o600 {
			t.Errorf("%s has mode %o, want 0600", secret, files[secret].Mode)
		}
	}

	// {{internal.logins}} expands from --logins; {{internal.missing}} to nothing, with a warning.
	wantLogins := []string{"alice", "deploy"}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(files["key-cert.pub"].Data)
	if err != nil {
		t.Fatal(err)
	}
	cert := pub.(*ssh.Certificate)
	lifetime := time.Unix(int64(cert.ValidBefore), 0).Sub(start)
	switch {
	case cert.CertType != ssh.UserCert:
		t.Errorf("certificate type %d, want a user certificate", cert.CertType)
	case !slices.Equal(cert.ValidPrincipals, wantLogins):
		t.Errorf("principals %v, want %v", cert.ValidPrincipals, wantLogins)
	case lifetime < 720*time.Hour-time.Minute || lifetime > 720*time.Hour+time.Minute:
		t.Errorf("SSH certificate lives %s, want 720h", lifetime)
	case !strings.Contains(cert.KeyId, "user=alice") || !strings.Contains(cert.KeyId, "signed_by=operator"):
		t.Errorf("key ID %q does not name the user and the signer", cert.KeyId)
	}
	if !slices.ContainsFunc(signed.Warnings, func(w string) bool { return strings.Contains(w, "{{internal.missing}}") }) {
		t.Errorf("no warning about {{internal.missing}} expanding to nothing: %q", signed.Warnings)
	}

	block, _ := pem.Decode(files["tls.crt"].Data)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "alice" || len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://acme/user/alice" {
		t.Errorf("tls.crt CN %q URIs %v; want CN alice and spiffe://acme/user/alice", leaf.Subject.CommonName, leaf.URIs)
	}
	if d := leaf.NotAfter.Sub(start); d < 720*time.Hour-time.Minute || d > 720*time.Hour+time.Minute {
		t.Errorf("TLS certificate lives %s, want 720h", d)
	}

	var sum struct {
		Bot, User, SignedBy string
		Roles, Logins       []string
		NotAfter            time.Time `json:"not_after"`
	}
	if err := json.Unmarshal(files["identity.json"].Data, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.User != "alice" || sum.Bot != "" || !slices.Equal(sum.Roles, []string{"deploy"}) || !slices.Equal(sum.Logins, wantLogins) ||
		!sum.NotAfter.Equal(signed.Output.NotAfter) {
		t.Errorf("identity.json = %+v", sum)
	}
	if cfg := string(files["ssh_config"].Data); !strings.Contains(cfg, filepath.Join(req.Dir, "key-cert.pub")) || !strings.Contains(cfg, "User alice") ||
		!strings.Contains(cfg, `for user "alice"`) {
		t.Errorf("ssh_config does not point at %s with User alice:\n%s", req.Dir, cfg)
	}

	// One audit record, an admin action: user, roles, serials, not_after, OS user.
	events := signUserAudit(t, a)
	if len(events) != 1 {
		t.Fatalf("%d sign.user audit records, want 1: %+v", len(events), events)
	}
	ev := events[0]
	wantSerials := []string{"ssh:" + strconv.FormatUint(signed.Output.SSHSerial, 10), "tls:" + signed.Output.TLSSerial}
	switch {
	case !ev.Allowed:
		t.Errorf("audit record not allowed: %+v", ev)
	case ev.Claims["user"] != "alice" || ev.Claims["os_user"] != "operator":
		t.Errorf("audit claims %v lack user alice and os_user operator", ev.Claims)
	case !slices.Equal(ev.Roles, []string{"deploy"}):
		t.Errorf("audit roles %v", ev.Roles)
	case !slices.Equal(ev.Serials, wantSerials):
		t.Errorf("audit serials %v, want %v", ev.Serials, wantSerials)
	case !ev.NotAfter.Equal(signed.Output.NotAfter):
		t.Errorf("audit not_after %s, want %s", ev.NotAfter, signed.Output.NotAfter)
	case !strings.Contains(ev.Remote, "operator"):
		t.Errorf("audit remote %q does not name the OS user", ev.Remote)
	}
	for _, secret := range []string{string(files["key"].Data), string(files["tls.key"].Data), signed.Output.SSHCertificate} {
		if record, _ := json.Marshal(ev); strings.Contains(string(record), strings.TrimSpace(secret)[:60]) {
			t.Errorf("the audit record carries key or certificate material")
		}
	}
}

func TestSignUserRefusals(t *testing.T) {
	a, _ := openAuthority(t)
	for _, tc := range []struct {
		name  string
		req   authority.UserSignRequest
		wants []string
	}{
		{"above-max-admin-ttl", userRequest(t, 8761*time.Hour, "deploy"), []string{"max_admin_ttl", "8760h"}},
		{"no-ttl", userRequest(t, 0, "deploy"), []string{"--ttl"}},
		{"session-mfa-role", userRequest(t, 720*time.Hour, "deploy", "admin"), []string{`role "admin"`, "require_session_mfa", "per-session MFA"}},
		{"unknown-role", userRequest(t, 720*time.Hour, "nope"), []string{`"nope"`, "audit-read, deploy"}},
		{"no-roles", userRequest(t, 720*time.Hour), []string{"--roles"}},
		{"bad-user", func() authority.UserSignRequest {
			r := userRequest(t, time.Hour, "deploy")
			r.User = "../admin/root"
			return r
		}(), []string{"--user", "not a valid name"}},
		{"user-not-a-spiffe-segment", func() authority.UserSignRequest {
			r := userRequest(t, time.Hour, "deploy")
			r.User = "alice@acme.com"
			return r
		}(), []string{"--user", `"alice@acme.com"`, "not a valid name"}},
		{"login-with-newline", func() authority.UserSignRequest {
			r := userRequest(t, time.Hour, "deploy")
			r.Logins = []string{"ubuntu\n    ProxyCommand touch /tmp/x"}
			return r
		}(), []string{"--logins", `"ubuntu\n    ProxyCommand`, "not a valid user name"}},
		{"login-wildcard", func() authority.UserSignRequest {
			r := userRequest(t, time.Hour, "deploy")
			r.Logins = []string{"*"}
			return r
		}(), []string{"--logins", "not a valid user name"}},
		{"role-with-comma", userRequest(t, time.Hour, "deploy,admin"), []string{"--roles", "not a valid name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(signUserAudit(t, a))
			signed, err := a.SignUser(t.Context(), tc.req)
			if err == nil {
				t.Fatalf("SignUser was admitted: %+v", signed.Output)
			}
			for _, want := range tc.wants {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not mention %q: %v", want, err)
				}
			}
			events := signUserAudit(t, a)
			if len(events) != before+1 || events[0].Allowed || events[0].Serials != nil {
				t.Errorf("want one more refused sign.user audit record without serials, have %+v", events)
			}
		})
	}
}

func TestSignUserAuthoritySettings(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		ttl          time.Duration
		wants        []string
	}{
		{"max-admin-ttl", "max_admin_ttl: 100h\n", 720 * time.Hour, []string{"max_admin_ttl (100h)", "authority.yaml"}},
		{"cluster-session-mfa", "require_session_mfa: true\n", time.Hour, []string{"require_session_mfa", "authority.yaml"}},
		{"cluster-device-trust", "device_trust_mode: required-for-humans\n", time.Hour, []string{"device_trust_mode: required-for-humans"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := openAuthorityWith(t, tc.config)
			_, err := a.SignUser(t.Context(), userRequest(t, tc.ttl, "deploy"))
			if err == nil {
				t.Fatal("SignUser was admitted")
			}
			for _, want := range tc.wants {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not mention %q: %v", want, err)
				}
			}
		})
	}
	t.Run("within-max-admin-ttl", func(t *testing.T) {
		a := openAuthorityWith(t, "max_admin_ttl: 100h\n")
		signed, err := a.SignUser(t.Context(), userRequest(t, 100*time.Hour, "audit-read"))
		if err != nil {
			t.Fatal(err)
		}
		// audit-read has max_ttl 8h, which bounds bots, not a deliberate signing: said, not applied.
		if d := time.Until(signed.Output.NotAfter); d < 99*time.Hour {
			t.Errorf("identity lives %s, want 100h", d)
		}
		if !slices.ContainsFunc(signed.Warnings, func(w string) bool { return strings.Contains(w, "max_ttl") }) {
			t.Errorf("no warning about audit-read's max_ttl: %q", signed.Warnings)
		}
	})
}
