package identity_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/skipreport"
)

// TestHostileValuesInSSHConfig writes identities whose values come from a
// hostile resource or authority through the real writer and reads the
// ssh_config back with OpenSSH: a value is either refused (and nothing is
// written) or lands in its own directive, never in a new one.
func TestHostileValuesInSSHConfig(t *testing.T) {
	sshPath, err := exec.LookPath("ssh")
	if err != nil {
		skipreport.Skip(t, "no ssh client")
	}
	const inject = "\n    ProxyCommand touch /tmp/mbot-pwned"
	cases := []struct {
		name   string
		dir    string // under the test's temporary directory
		change func(resp *identity.JoinResponse, out *identity.OutputResponse)
		refuse string // a word of the refusal; empty: written and read back intact
	}{
		{"login with a newline", "mbot", func(_ *identity.JoinResponse, out *identity.OutputResponse) {
			out.Logins = []string{"ubuntu" + inject}
		}, "not a valid user name"},
		{"login with a space", "mbot", func(_ *identity.JoinResponse, out *identity.OutputResponse) {
			out.Logins = []string{"ubuntu -oProxyCommand=x"}
		}, "not a valid user name"},
		{"login starting with a dash", "mbot", func(_ *identity.JoinResponse, out *identity.OutputResponse) {
			out.Logins = []string{"-oProxyCommand=x"}
		}, "not a valid user name"},
		{"host pattern with a newline", "mbot", func(resp *identity.JoinResponse, _ *identity.OutputResponse) {
			resp.HostPatterns = []string{"*.acme.internal" + inject}
		}, "not a host pattern"},
		{"negated host pattern", "mbot", func(resp *identity.JoinResponse, _ *identity.OutputResponse) {
			resp.HostPatterns = []string{"!bastion", "*"}
		}, "not a host pattern"},
		{"host CA with a newline", "mbot", func(resp *identity.JoinResponse, _ *identity.OutputResponse) {
			resp.SSHHostCA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostCA\n@cert-authority * ssh-ed25519 AAAAevil"
		}, "not one authorized_keys line"},
		{"directory with a newline", "mbot" + inject, nil, "control character"},
		{"directory with a quote and percent signs", `a "b" %d %%h`, nil, "ssh_config cannot hold"},
		{"directory with spaces and a backslash", `a b\c d`, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, tc.dir)
			keys, err := identity.NewKeys()
			if err != nil {
				t.Fatal(err)
			}
			resp, out := sampleResponse()
			if tc.change != nil {
				tc.change(resp, out)
			}
			files, err := identity.RenderIdentity(dir, keys, resp, out)
			if err == nil {
				err = identity.WriteDir(dir, files)
			}
			if tc.refuse != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refuse) {
					t.Errorf("error %v, want a refusal mentioning %q", err, tc.refuse)
				}
				if strings.ContainsAny(errString(err), "\n\x1b") {
					t.Errorf("the refusal carries a control character: %q", err)
				}
				if entries, _ := os.ReadDir(root); len(entries) > 0 {
					t.Errorf("a refused identity left %d entries in %s", len(entries), root)
				}
				// Whatever the writer says, OpenSSH must never see a new directive.
				if err == nil {
					checkSSHG(t, sshPath, dir)
				}
				return
			}
			if err != nil {
				t.Fatalf("writing: %v", err)
			}
			got := checkSSHG(t, sshPath, dir)
			for _, want := range []string{"identityfile " + filepath.Join(dir, "key"), "certificatefile " + filepath.Join(dir, "key-cert.pub")} {
				// ssh -G prints these before %-expansion, with %% as written.
				want = strings.ReplaceAll(want, "%", "%%")
				if !strings.Contains(got, want+"\n") {
					t.Errorf("ssh -G does not show %q:\n%s", want, got)
				}
			}
			if want := "userknownhostsfile " + filepath.Join(dir, "known_hosts"); !strings.Contains(got, want+"\n") {
				t.Errorf("ssh -G does not show %q:\n%s", want, got)
			}
		})
	}
}

// checkSSHG runs ssh -G on dir's ssh_config and fails the test if OpenSSH
// reads a ProxyCommand or a user other than a plain login from it.
func checkSSHG(t *testing.T, sshPath, dir string) string {
	t.Helper()
	out, err := exec.Command(sshPath, "-G", "-F", filepath.Join(dir, identity.FileSSHConfig), "web1.acme.internal").CombinedOutput()
	if err != nil {
		t.Fatalf("ssh -G: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		key, value, _ := strings.Cut(line, " ")
		switch {
		case key == "proxycommand" && value != "none":
			t.Errorf("ssh_config injected %q", line)
		case key == "user" && identity.CheckLogin("user", value) != nil:
			t.Errorf("ssh_config sets user %q", value)
		}
	}
	return string(out)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
