package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

func TestParseSSHHostOutput(t *testing.T) {
	cfg, err := ParseConfig("mbot.yaml", []byte("outputs:\n  - destination: ./id\n  - type: ssh_host\n    destination: ./host\n    host_names: [web1.ci.acme.internal, web1]\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Outputs[1]
	if h.Type != OutputTypeSSHHost || !slices.Equal(h.HostNames, []string{"web1.ci.acme.internal", "web1"}) || h.Name != "host" {
		t.Errorf("output %+v", h)
	}
	wantConfigRefusals(t, []struct{ name, yaml, want string }{
		{"no names", "outputs:\n  - type: ssh_host\n    destination: ./host\n", "mbot.yaml:2: outputs[0].host_names: is required"},
		{"wildcard", "outputs:\n  - type: ssh_host\n    destination: ./host\n    host_names: [\"*.ci.acme.internal\"]\n", "outputs[0].host_names: host name \"*.ci.acme.internal\" is a wildcard"},
		{"not a name", "outputs:\n  - type: ssh_host\n    destination: ./host\n    host_names: [\"web1 web2\"]\n", "is not a DNS name"},
		{"host_names on identity", "outputs:\n  - destination: ./id\n    host_names: [web1]\n", "outputs[0].host_names: belongs to outputs of type ssh_host, not identity"},
	})
}

// TestHostNamesFlag: --host-names makes the one output of a run without
// mbot.yaml an ssh_host output, sets the names of mbot.yaml's only ssh_host
// output, and is refused where it describes no one ssh_host output.
func TestHostNamesFlag(t *testing.T) {
	base := IssueOptions{Authority: "https://auth:8443", Token: "tok", HostNames: []string{"web1.ci.acme.internal"}, Out: "./host"}
	o := base
	if err := o.resolve(); err != nil {
		t.Fatal(err)
	}
	if len(o.Outputs) != 1 || o.Outputs[0].Type != OutputTypeSSHHost || !slices.Equal(o.Outputs[0].HostNames, base.HostNames) || o.Outputs[0].Destination.Dir != "./host" {
		t.Errorf("outputs %+v", o.Outputs)
	}
	_, reqs, err := newOutputKeys(o.Outputs)
	if err != nil {
		t.Fatal(err)
	}
	if r := reqs[0]; r.Type != "ssh_host" || r.SSHPublicKey == "" || r.TLSPublicKey != "" || r.SSHHost == nil || !slices.Equal(r.SSHHost.HostNames, base.HostNames) {
		t.Errorf("request %+v", r)
	}

	dir := t.TempDir()
	write := func(name, yaml string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"only ssh_host output", "outputs:\n  - {type: ssh_host, destination: ./h, host_names: [old.ci.acme.internal]}\n", ""},
		{"identity output", "outputs:\n  - {destination: ./id}\n", "--host-names (MBOT_HOST_NAMES) sets the names of an ssh_host output, but the output of"},
		{"two outputs", "outputs:\n  - {destination: ./id}\n  - {type: ssh_host, destination: ./h, host_names: [old.ci.acme.internal]}\n", "describe one output"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			o.Out = ""
			o.Config = write(strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.yaml)
			err := o.resolve()
			if tc.want == "" {
				if err != nil || !slices.Equal(o.Outputs[0].HostNames, base.HostNames) {
					t.Errorf("err %v, outputs %+v", err, o.Outputs)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	o = base
	o.HostNames = []string{"*.ci.acme.internal"}
	if err := o.resolve(); err == nil || !strings.Contains(err.Error(), "wildcard") {
		t.Errorf("--host-names '*.ci.acme.internal': err = %v", err)
	}
}

// hostCertFor signs an SSH certificate of certType on keys' SSH key for
// principals with a fresh CA.
func hostCertFor(t *testing.T, keys *identity.Keys, certType uint32, principals ...string) string {
	t.Helper()
	_, caKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := ssh.NewSignerFromKey(caKey)
	pub, _ := ssh.NewPublicKey(keys.SSH.Public())
	cert := &ssh.Certificate{Key: pub, Serial: 7, CertType: certType, KeyId: "test", ValidPrincipals: principals,
		ValidAfter: uint64(time.Now().Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix())}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert)))
}

func userCALine(t *testing.T) string {
	t.Helper()
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	s, _ := ssh.NewSignerFromKey(k)
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))
}

func renderSSHHost(t *testing.T, dir string, keys *identity.Keys, cert string, g identity.SSHHostGrant) (map[string]identity.File, error) {
	t.Helper()
	resp := &identity.JoinResponse{ClusterName: "acme", Bot: "vm-builder"}
	grant := &identity.OutputResponse{Name: "host", Type: "ssh_host", Roles: []string{"hosts-ci"}, SSHCertificate: cert, SSHSerial: 7,
		NotAfter: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), SSHHost: &g}
	files, err := sshHostOutput{}.render(dir, keys, resp, grant)
	byName := map[string]identity.File{}
	for _, f := range files {
		byName[f.Name] = f
	}
	return byName, err
}

func TestRenderSSHHost(t *testing.T) {
	keys, err := newKeys(sshHostOutput{})
	if err != nil {
		t.Fatal(err)
	}
	if keys.TLS != nil || keys.SSH == nil {
		t.Fatalf("an ssh_host output's keys: %+v", keys)
	}
	names := []string{"web1.ci.acme.internal", "web1"}
	userCA := userCALine(t)
	dir := "/run/mbot/ci's host"
	files, err := renderSSHHost(t, dir, keys, hostCertFor(t, keys, ssh.HostCert, names...), identity.SSHHostGrant{HostNames: names, UserCA: userCA})
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"ssh_host": 0o600, "ssh_host.pub": 0o644, "ssh_host-cert.pub": 0o644, "ssh_host-user-ca.pub": 0o644,
		"revoked_keys": 0o644, "sshd_config.snippet": 0o644, "ssh_host.json": 0o644} {
		if f, ok := files[name]; !ok || f.Mode != mode {
			t.Errorf("%s: written %t, mode %o, want %o", name, ok, f.Mode, mode)
		}
	}
	if len(files) != 7 {
		t.Errorf("%d files written, want 7", len(files))
	}
	priv, err := ssh.ParseRawPrivateKey(files["ssh_host"].Data)
	if k, ok := priv.(*ed25519.PrivateKey); err != nil || !ok || !k.Equal(keys.SSH) {
		t.Errorf("ssh_host is not the output's key in OpenSSH format: %T %v", priv, err)
	}
	if !strings.HasPrefix(string(files["ssh_host"].Data), "-----BEGIN OPENSSH PRIVATE KEY-----\n") {
		t.Errorf("ssh_host is not in OpenSSH format")
	}
	if got := string(files["ssh_host-user-ca.pub"].Data); got != userCA+"\n" {
		t.Errorf("ssh_host-user-ca.pub %q, want %q", got, userCA)
	}
	snippet := string(files["sshd_config.snippet"].Data)
	for _, line := range []string{
		"\nHostKey \"/run/mbot/ci's host/ssh_host\"\n",
		"\nHostCertificate \"/run/mbot/ci's host/ssh_host-cert.pub\"\n",
		"\nTrustedUserCAKeys \"/run/mbot/ci's host/ssh_host-user-ca.pub\"\n",
		"\nRevokedKeys \"/run/mbot/ci's host/revoked_keys\"\n",
		"reload sshd",
	} {
		if !strings.Contains(snippet, line) {
			t.Errorf("sshd_config.snippet lacks %q:\n%s", line, snippet)
		}
	}
	var sum SSHHostSummary
	if err := json.Unmarshal(files["ssh_host.json"].Data, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Type != "ssh_host" || !slices.Equal(sum.HostNames, names) || sum.Bot != "vm-builder" || sum.Serial != 7 || sum.Files["certificate"] != "ssh_host-cert.pub" {
		t.Errorf("ssh_host.json %+v", sum)
	}
}

// TestRenderSSHHostRefusesBadAnswers: an answer whose certificate is not a
// host certificate on the output's key for exactly the names it says, or
// names a wildcard, or whose user CA is not a key, is refused, as is a
// destination sshd_config cannot quote; nothing is rendered.
func TestRenderSSHHostRefusesBadAnswers(t *testing.T) {
	keys, _ := newKeys(sshHostOutput{})
	other, _ := newKeys(sshHostOutput{})
	names := []string{"web1.ci.acme.internal"}
	good := identity.SSHHostGrant{HostNames: names, UserCA: userCALine(t)}
	for _, tc := range []struct {
		name, dir, cert, want string
		edit                  func(g *identity.SSHHostGrant)
	}{
		{"user certificate", "/h", hostCertFor(t, keys, ssh.UserCert, names...), "not a host certificate", nil},
		{"another key", "/h", hostCertFor(t, other, ssh.HostCert, names...), "not for the key", nil},
		{"more principals than said", "/h", hostCertFor(t, keys, ssh.HostCert, "web1.ci.acme.internal", "auth.acme.internal"), "names", nil},
		{"wildcard principal", "/h", hostCertFor(t, keys, ssh.HostCert, "*.ci.acme.internal"), "wildcard",
			func(g *identity.SSHHostGrant) { g.HostNames = []string{"*.ci.acme.internal"} }},
		{"no principals", "/h", hostCertFor(t, keys, ssh.HostCert), "names", func(g *identity.SSHHostGrant) { g.HostNames = nil }},
		{"not a certificate", "/h", userCALine(t), "no SSH certificate", nil},
		{"user CA not a key", "/h", "", "SSH user CA", func(g *identity.SSHHostGrant) { g.UserCA = "hello" }},
		{"user CA with options", "/h", "", "SSH user CA", func(g *identity.SSHHostGrant) { g.UserCA = `command="x" ` + g.UserCA }},
		{"no user CA", "/h", "", "no SSH user CA", func(g *identity.SSHHostGrant) { g.UserCA = "" }},
		{"directory with a quote", `/h"x`, "", "sshd_config cannot hold", nil},
		{"directory with a newline", "/h\nHostKey /x", "", "sshd_config cannot hold", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := good
			if tc.edit != nil {
				tc.edit(&g)
			}
			cert := tc.cert
			if cert == "" {
				cert = hostCertFor(t, keys, ssh.HostCert, names...)
			}
			files, err := renderSSHHost(t, tc.dir, keys, cert, g)
			if err == nil || !strings.Contains(err.Error(), tc.want) || len(files) != 0 {
				t.Errorf("err = %v, want %q; %d files", err, tc.want, len(files))
			}
		})
	}
}
