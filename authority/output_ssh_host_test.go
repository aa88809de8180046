package authority_test

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/simci"
	"golang.org/x/crypto/ssh"
)

// sshHostYAML: bot vm-builder gets host names under ci.acme.internal and
// one from a trait; role hosts-prod (not the bot's) grants
// *.prod.acme.internal, role hosts-lab (the bot's) lab.acme.internal.
const sshHostYAML = `kind: role
version: v1
metadata: {name: hosts-ci}
spec:
  host_names: ["*.ci.acme.internal", "{{internal.vm}}.lab.acme.internal"]
---
kind: role
version: v1
metadata: {name: hosts-lab}
spec:
  host_names: [lab.acme.internal]
---
kind: role
version: v1
metadata: {name: ssh}
spec:
  logins: [deploy]
---
kind: role
version: v1
metadata: {name: hosts-prod}
spec:
  host_names: ["*.prod.acme.internal"]
---
kind: bot
version: v1
metadata: {name: vm-builder}
spec:
  roles: [hosts-ci, hosts-lab, ssh]
  traits: {vm: [vm7]}
---
kind: join_token
version: v1
metadata: {name: github-vm}
spec:
  bot: vm-builder
  method: github
  github:
    issuer: ISSUER
    allow:
      - repository: acme/app
`

func openSSHHostAuthority(t *testing.T) (*authority.Authority, *simci.Issuer) {
	t.Helper()
	return openAuthorityFrom(t, sshHostYAML)
}

func sshHostOutput(t *testing.T, name string, names []string, roles ...string) output {
	t.Helper()
	k := newKeys(t)
	return output{keys: k, req: identity.OutputRequest{Name: name, Type: identity.OutputSSHHost, Roles: roles, SSHPublicKey: k.SSHPublicKey(),
		SSHHost: &identity.SSHHostRequest{HostNames: names}}}
}

// TestSSHHostOutput: an ssh_host output gets a host certificate (not a
// user certificate) from the ssh-host CA for exactly the names asked,
// lower-cased, on its own key, and the SSH user CA for TrustedUserCAKeys;
// an OpenSSH client that trusts the host CA accepts it for those names
// only. The audit record names them.
func TestSSHHostOutput(t *testing.T) {
	a, ci := openSSHHostAuthority(t)
	cas := a.CAs()
	host := sshHostOutput(t, "vm", []string{"web1.ci.acme.internal", "VM7.lab.acme.internal", "lab.acme.internal", "web1.ci.acme.internal"})
	resp, err := a.Join(t.Context(), joinRequest("github-vm", "github", githubToken(t, ci, nil), 2*time.Hour, newOutput(t, "id"), host), "test")
	if err != nil {
		t.Fatal(err)
	}
	got := resp.Outputs[1]
	wantNames := []string{"web1.ci.acme.internal", "vm7.lab.acme.internal", "lab.acme.internal"}
	if got.Type != identity.OutputSSHHost || got.SSHHost == nil || !slices.Equal(got.SSHHost.HostNames, wantNames) {
		t.Fatalf("ssh_host output %+v %+v", got, got.SSHHost)
	}
	if got.TLSCertificate != "" || len(got.Logins) != 0 || got.TLSSerial != "" {
		t.Errorf("an ssh_host output carries X.509 material or logins: %+v", got)
	}
	if want := strings.TrimSpace(authority.AuthorizedKey(cas.SSHUser)); got.SSHHost.UserCA != want {
		t.Errorf("user CA %q, want the SSH user CA %q", got.SSHHost.UserCA, want)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(got.SSHCertificate))
	if err != nil {
		t.Fatal(err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		t.Fatalf("%T is not a certificate", pub)
	}
	if cert.CertType != ssh.HostCert {
		t.Errorf("certificate type %d, want a host certificate", cert.CertType)
	}
	if !slices.Equal(cert.ValidPrincipals, wantNames) {
		t.Errorf("principals %v, want %v", cert.ValidPrincipals, wantNames)
	}
	if hostKey, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(host.keys.SSHPublicKey())); hostKey == nil || !bytes.Equal(cert.Key.Marshal(), hostKey.Marshal()) {
		t.Error("the certificate is not on the output's key")
	}
	if !bytes.Equal(cert.SignatureKey.Marshal(), cas.SSHHost.PublicKey().Marshal()) {
		t.Error("the certificate is not signed by the ssh-host CA")
	}
	if want := "bot=vm-builder join_token=github-vm output=vm type=ssh_host serial="; !strings.HasPrefix(cert.KeyId, want) || cert.Serial != got.SSHSerial {
		t.Errorf("key ID %q serial %d, want %q... serial %d", cert.KeyId, cert.Serial, want, got.SSHSerial)
	}
	if d := time.Until(time.Unix(int64(cert.ValidBefore), 0)); d > 2*time.Hour || d < 2*time.Hour-time.Minute {
		t.Errorf("valid for %s, want the 2h asked", d)
	}
	if len(cert.Permissions.Extensions)+len(cert.Permissions.CriticalOptions) != 0 {
		t.Errorf("a host certificate with options %v %v", cert.Permissions.Extensions, cert.Permissions.CriticalOptions)
	}

	// What ssh does with known_hosts' @cert-authority line.
	for _, tc := range []struct {
		ca   ssh.PublicKey
		addr string
		ok   bool
	}{
		{cas.SSHHost.PublicKey(), "web1.ci.acme.internal:22", true},
		{cas.SSHHost.PublicKey(), "vm7.lab.acme.internal:22", true},
		{cas.SSHHost.PublicKey(), "web2.ci.acme.internal:22", false},
		{cas.SSHHost.PublicKey(), "x.web1.ci.acme.internal:22", false},
		{cas.SSHUser.PublicKey(), "web1.ci.acme.internal:22", false},
	} {
		checker := &ssh.CertChecker{IsHostAuthority: func(auth ssh.PublicKey, _ string) bool { return bytes.Equal(auth.Marshal(), tc.ca.Marshal()) }}
		if err := checker.CheckHostKey(tc.addr, nil, cert); (err == nil) != tc.ok {
			t.Errorf("host key check for %s: %v, want ok=%t", tc.addr, err, tc.ok)
		}
	}

	ev := lastAudit(t, a)
	if !ev.Allowed || len(ev.Outputs) != 2 || ev.Outputs[1] != "vm type=ssh_host host_names=web1.ci.acme.internal,vm7.lab.acme.internal,lab.acme.internal" {
		t.Errorf("audit outputs %q", ev.Outputs)
	}
	if !slices.Contains(ev.Serials, "ssh:"+strconv.FormatUint(got.SSHSerial, 10)) {
		t.Errorf("audit serials %q lack the host certificate's", ev.Serials)
	}
}

// TestSSHHostRefusals: a name no role's host_names matches (one label too
// deep, outside the patterns, granted only by a role the output leaves
// out or the bot lacks), a wildcard, no names, a TLS key: refused with a
// stable code, a message naming what to grant, an audit record; the
// proof stays usable.
func TestSSHHostRefusals(t *testing.T) {
	a, ci := openSSHHostAuthority(t)
	for _, tc := range []struct {
		name string
		out  func(t *testing.T) output
		code identity.ErrorCode
		want string
	}{
		{"one label too deep", func(t *testing.T) output { return sshHostOutput(t, "vm", []string{"a.web1.ci.acme.internal"}) },
			identity.CodeRoleDenied, `no role of bot "vm-builder" grants host name "a.web1.ci.acme.internal"; add it to the host_names of one of its roles (hosts-ci, hosts-lab, ssh)`},
		{"the pattern's own domain", func(t *testing.T) output { return sshHostOutput(t, "vm", []string{"ci.acme.internal"}) },
			identity.CodeRoleDenied, `grants host name "ci.acme.internal"; add it to the host_names`},
		{"one of several outside", func(t *testing.T) output {
			return sshHostOutput(t, "vm", []string{"web1.ci.acme.internal", "auth.acme.internal"})
		}, identity.CodeRoleDenied, `grants host name "auth.acme.internal"`},
		{"another role grants", func(t *testing.T) output { return sshHostOutput(t, "vm", []string{"db1.prod.acme.internal"}) },
			identity.CodeRoleDenied, `role hosts-prod would grant it: add it to the bot's spec.roles`},
		{"a role the output leaves out", func(t *testing.T) output {
			return sshHostOutput(t, "vm", []string{"web1.ci.acme.internal"}, "hosts-lab")
		}, identity.CodeRoleDenied, `host name "web1.ci.acme.internal" is granted by role hosts-ci of bot "vm-builder", which this output does not use`},
		{"wildcard", func(t *testing.T) output { return sshHostOutput(t, "vm", []string{"*.ci.acme.internal"}) },
			identity.CodeBadRequest, "is a wildcard; a host certificate names each host exactly"},
		{"not a name", func(t *testing.T) output { return sshHostOutput(t, "vm", []string{"web1.ci.acme.internal,*"}) },
			identity.CodeBadRequest, "is not a DNS name"},
		{"no names", func(t *testing.T) output { return sshHostOutput(t, "vm", nil) },
			identity.CodeBadRequest, "names no host; set host_names:"},
		{"no request", func(t *testing.T) output {
			o := sshHostOutput(t, "vm", nil)
			o.req.SSHHost = nil
			return o
		}, identity.CodeBadRequest, "names no host"},
		{"too many names", func(t *testing.T) output {
			var names []string
			for i := range identity.MaxHostNames + 1 {
				names = append(names, "vm"+strconv.Itoa(i)+".ci.acme.internal")
			}
			return sshHostOutput(t, "vm", names)
		}, identity.CodeBadRequest, "at most 32"},
		{"a TLS key", func(t *testing.T) output {
			o := sshHostOutput(t, "vm", []string{"web1.ci.acme.internal"})
			o.req.TLSPublicKey = o.keys.TLSPublicKeyPEM()
			return o
		}, identity.CodeBadRequest, "a ssh_host output certifies no TLS key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proof := githubToken(t, ci, nil)
			_, err := a.Join(t.Context(), joinRequest("github-vm", "github", proof, time.Hour, newOutput(t, "id"), tc.out(t)), "test")
			var ierr *identity.Error
			if !errors.As(err, &ierr) || ierr.Code != tc.code || !strings.Contains(ierr.Message, tc.want) {
				t.Fatalf("err = %v, want %s saying %q", err, tc.code, tc.want)
			}
			if ierr.Code.HTTPStatus()/100 != 4 {
				t.Errorf("status %d, want 4xx", ierr.Code.HTTPStatus())
			}
			ev := lastAudit(t, a)
			if ev.Allowed || ev.Code != string(tc.code) || len(ev.Outputs) != 0 || len(ev.Serials) != 0 {
				t.Errorf("audit record %+v", ev)
			}
			if _, err := a.Join(t.Context(), joinRequest("github-vm", "github", proof, time.Hour, sshHostOutput(t, "vm", []string{"web1.ci.acme.internal"})), "test"); err != nil {
				t.Errorf("the refusal consumed the proof: %v", err)
			}
		})
	}
}
