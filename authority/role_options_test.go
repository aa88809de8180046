package authority_test

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/internal/simci"
	"github.com/mbot-dev/mbot/internal/skipreport"
	"golang.org/x/crypto/ssh"
)

// roleOptionsYAML adds roles with SSH role options and a bot holding them.
const roleOptionsYAML = `
---
kind: role
version: v1
metadata: {name: shell}
spec:
  logins: [ops]
---
kind: role
version: v1
metadata: {name: tunnel}
spec:
  logins: [ops]
  permit_pty: false
  permit_port_forwarding: true
---
kind: role
version: v1
metadata: {name: everything}
spec:
  logins: [ops]
  permit_pty: true
  permit_port_forwarding: true
  permit_agent_forwarding: true
  permit_x11_forwarding: true
  permit_user_rc: true
---
kind: role
version: v1
metadata: {name: exec-only}
spec:
  logins: [ops]
  permit_pty: false
---
kind: bot
version: v1
metadata: {name: ops}
spec:
  roles: [shell, tunnel, everything, exec-only]
---
kind: join_token
version: v1
metadata: {name: github-ops}
spec:
  bot: ops
  method: github
  github:
    issuer: ISSUER
    allow:
      - repository: acme/app
`

func openWithRoleOptions(t *testing.T) (*authority.Authority, *simci.Issuer) {
	t.Helper()
	return openAuthorityFrom(t, botsYAML+roleOptionsYAML)
}

func sshCertOf(t *testing.T, text string) *ssh.Certificate {
	t.Helper()
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		t.Fatalf("%T is not a certificate", pub)
	}
	return cert
}

var roleOptionCases = []struct {
	roles []string
	want  []string // the certificate's extensions
}{
	{[]string{"shell"}, []string{"permit-pty"}},
	{[]string{"tunnel"}, []string{"permit-port-forwarding"}},
	{[]string{"exec-only"}, nil},
	{[]string{"exec-only", "tunnel"}, []string{"permit-port-forwarding"}},
	{[]string{"shell", "tunnel"}, []string{"permit-port-forwarding", "permit-pty"}}, // union
	{[]string{"everything"}, []string{"permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding", "permit-pty", "permit-user-rc"}},
}

// TestSSHRoleOptions: a bot's SSH certificate carries exactly the
// extensions its output's roles grant.
func TestSSHRoleOptions(t *testing.T) {
	a, ci := openWithRoleOptions(t)
	for _, tc := range roleOptionCases {
		t.Run(strings.Join(tc.roles, "+"), func(t *testing.T) {
			resp, err := a.Join(t.Context(), joinRequest("github-ops", "github", githubToken(t, ci, nil), time.Hour,
				newOutput(t, "identity", tc.roles...)), "test")
			if err != nil {
				t.Fatal(err)
			}
			cert := sshCertOf(t, resp.Outputs[0].SSHCertificate)
			if got := slices.Sorted(maps.Keys(cert.Permissions.Extensions)); !slices.Equal(got, tc.want) {
				t.Errorf("extensions %q, want %q", got, tc.want)
			}
			if len(cert.Permissions.CriticalOptions) != 0 {
				t.Errorf("critical options %v", cert.Permissions.CriticalOptions)
			}
		})
	}

	t.Run("ssh-keygen -L", func(t *testing.T) {
		keygen, err := exec.LookPath("ssh-keygen")
		if err != nil {
			skipreport.Skip(t, "ssh-keygen is not installed")
		}
		resp, err := a.Join(t.Context(), joinRequest("github-ops", "github", githubToken(t, ci, nil), time.Hour,
			newOutput(t, "identity", "tunnel")), "test")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "key-cert.pub")
		if err := os.WriteFile(path, []byte(resp.Outputs[0].SSHCertificate+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(keygen, "-L", "-f", path).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen -L: %v: %s", err, out)
		}
		_, exts, ok := strings.Cut(string(out), "Extensions:")
		if !ok || strings.TrimSpace(exts) != "permit-port-forwarding" {
			t.Errorf("ssh-keygen -L lists extensions %q, want only permit-port-forwarding:\n%s", exts, out)
		}
	})
}

// TestSignUserRoleOptions: mbot sign --user applies the same role options.
func TestSignUserRoleOptions(t *testing.T) {
	a, _ := openWithRoleOptions(t)
	for _, tc := range roleOptionCases {
		t.Run(strings.Join(tc.roles, "+"), func(t *testing.T) {
			signed, err := a.SignUser(t.Context(), userRequest(t, time.Hour, tc.roles...))
			if err != nil {
				t.Fatal(err)
			}
			cert := sshCertOf(t, signed.Output.SSHCertificate)
			if got := slices.Sorted(maps.Keys(cert.Permissions.Extensions)); !slices.Equal(got, tc.want) {
				t.Errorf("extensions %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRoleOptionsMustBeBooleans(t *testing.T) {
	doc := "kind: role\nversion: v1\nmetadata: {name: r}\nspec:\n  logins: [ops]\n  permit_port_forwarding: maybe\n"
	_, err := resources.Parse("roles.yaml", []byte(doc))
	if err == nil || !strings.Contains(err.Error(), "roles.yaml:6") {
		t.Errorf("permit_port_forwarding: maybe: err = %v, want a refusal at roles.yaml:6", err)
	}
}
