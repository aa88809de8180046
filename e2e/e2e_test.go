package e2e

import (
	"bytes"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestIssue joins from each simulated CI platform with the real binary,
// checks the identity files, and uses them with OpenSSL and a real sshd.
func TestIssue(t *testing.T) {
	c := startCluster(t)
	outs := t.TempDir()
	dirs := map[string]string{} // platform name → identity directory

	for _, p := range platforms {
		t.Run(p.name, func(t *testing.T) {
			vars := p.env(t, c)
			out := filepath.Join(outs, p.name)
			res := c.issue(t, c.jobEnv(vars), p.token, out)
			if res.code != 0 {
				t.Fatalf("mbot issue: %s", res)
			}
			sum := checkIdentity(t, c, out, p.token, p.name)
			if d := time.Until(sum.NotAfter); d > time.Hour+time.Minute || d < 55*time.Minute {
				t.Errorf("identity valid for %s, want the default 1h", d.Round(time.Second))
			}
			if p.name == "github" {
				checkGitHubStep(t, vars["GITHUB_OUTPUT"], out, res)
			} else if res.stdout != "" {
				t.Errorf("mbot issue outside GitHub Actions wrote to stdout:\n%s", res.stdout)
			}
			dirs[p.name] = out
		})
	}

	t.Run("environment-only", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "from-env")
		vars := gitLabJob(t, c)
		vars["MBOT_AUTHORITY"] = c.url
		vars["MBOT_CA_PIN"] = c.pin
		vars["MBOT_TOKEN"] = tokenGitLab
		vars["MBOT_JOIN_METHOD"] = "gitlab"
		vars["MBOT_OUT"] = out
		vars["MBOT_TTL"] = "2h"
		vars["MBOT_ROLES"] = roleName
		res := mbot(t, c.jobEnv(vars), "issue")
		if res.code != 0 {
			t.Fatalf("mbot issue with MBOT_* variables only: %s", res)
		}
		sum := checkIdentity(t, c, out, tokenGitLab, "gitlab")
		if d := time.Until(sum.NotAfter); d > 2*time.Hour+time.Minute || d < 2*time.Hour-5*time.Minute {
			t.Errorf("MBOT_TTL=2h gave an identity valid for %s", d.Round(time.Second))
		}
	})

	t.Run("openssl", func(t *testing.T) {
		openssl := requireTool(t, "openssl")
		for _, p := range platforms {
			dir, ok := dirs[p.name]
			if !ok {
				t.Errorf("no %s identity to verify", p.name)
				continue
			}
			res := run(t, baseEnv(c.home), openssl, "verify", "-CAfile", filepath.Join(dir, "ca.crt"), filepath.Join(dir, "tls.crt"))
			if res.code != 0 || !strings.Contains(res.stdout, ": OK") {
				t.Errorf("openssl verify of the %s identity: %s", p.name, res)
			}
		}
	})

	t.Run("ssh", func(t *testing.T) {
		srv := startSSHD(t, c)
		for _, p := range platforms {
			t.Run(p.name, func(t *testing.T) {
				dir, ok := dirs[p.name]
				if !ok {
					t.Fatalf("no %s identity to log in with", p.name)
				}
				res := srv.connect(t, c, "-F", filepath.Join(dir, "ssh_config"))
				if res.code != 0 || strings.TrimSpace(res.stdout) != "mbot-ok" {
					t.Fatalf("ssh with the %s identity: %s\nsshd:\n%s", p.name, res, srv.logs)
				}
				// sshd names the certificate it admitted by its key ID.
				if want := "join_token=" + p.token; srv.waitForLog(want) == "" {
					t.Errorf("sshd did not log a certificate login with %q:\n%s", want, srv.logs)
				}
			})
		}

		t.Run("login-not-in-certificate", func(t *testing.T) {
			other := otherLogin(c.login)
			res := srv.connect(t, c, "-F", filepath.Join(dirs["github"], "ssh_config"), "-l", other)
			wantDenied(t, res, "ssh -l "+other)
			// sshd checks the certificate's principals only for an account it
			// could log in to; a non-root sshd refuses other accounts before that.
			switch srv.waitForLog("name is not a listed principal", "User "+other+" not allowed", "Invalid user "+other) {
			case "name is not a listed principal":
			case "":
				t.Errorf("sshd did not log why it refused %s:\n%s", other, srv.logs)
			default:
				t.Logf("sshd refused the account %s before checking the certificate's principals", other)
			}
		})

		t.Run("plain-key", func(t *testing.T) {
			keygen := requireTool(t, "ssh-keygen")
			dir := t.TempDir()
			key := filepath.Join(dir, "id_ed25519")
			if res := run(t, baseEnv(c.home), keygen, "-q", "-t", "ed25519", "-N", "", "-C", "plain", "-f", key); res.code != 0 {
				t.Fatalf("ssh-keygen: %s", res)
			}
			res := srv.connect(t, c, "-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-l", c.login,
				"-o", "UserKnownHostsFile="+filepath.Join(dirs["github"], "known_hosts"), "-o", "GlobalKnownHostsFile=/dev/null")
			wantDenied(t, res, "ssh with a key no CA signed")
		})

		t.Run("certificate-of-another-ca", func(t *testing.T) {
			keygen := requireTool(t, "ssh-keygen")
			dir := t.TempDir()
			ca, key := filepath.Join(dir, "other_ca"), filepath.Join(dir, "id_ed25519")
			env := baseEnv(c.home)
			for _, k := range []string{ca, key} {
				if res := run(t, env, keygen, "-q", "-t", "ed25519", "-N", "", "-f", k); res.code != 0 {
					t.Fatalf("ssh-keygen: %s", res)
				}
			}
			// The same principal and validity an mbot certificate would carry,
			// but signed by a CA that sshd does not trust.
			if res := run(t, env, keygen, "-q", "-s", ca, "-I", "bot=intruder", "-n", c.login, "-V", "-5m:+1h", key+".pub"); res.code != 0 {
				t.Fatalf("ssh-keygen -s: %s", res)
			}
			res := srv.connect(t, c, "-F", "/dev/null", "-i", key, "-o", "CertificateFile="+key+"-cert.pub",
				"-o", "IdentitiesOnly=yes", "-l", c.login,
				"-o", "UserKnownHostsFile="+filepath.Join(dirs["github"], "known_hosts"), "-o", "GlobalKnownHostsFile=/dev/null")
			wantDenied(t, res, "ssh with a certificate of another CA")
		})
	})
}

// checkGitHubStep checks what mbot tells GitHub Actions: step outputs that
// name the files, and on stdout nothing but the mask for the OIDC token.
func checkGitHubStep(t *testing.T, githubOutput, dir string, res result) {
	t.Helper()
	outputs := readFile(t, githubOutput)
	for _, want := range []string{
		"destination-dir=" + dir + "\n",
		"ssh-config=" + filepath.Join(dir, "ssh_config") + "\n",
		"identity-file=" + filepath.Join(dir, "key") + "\n",
	} {
		if !strings.Contains(outputs, want) {
			t.Errorf("GITHUB_OUTPUT lacks %q:\n%s", strings.TrimSpace(want), outputs)
		}
	}
	lines := strings.Split(strings.TrimSuffix(res.stdout, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "::add-mask::") || strings.Count(lines[0], ".") != 2 {
		t.Errorf("stdout in GitHub Actions should be one ::add-mask:: line for the OIDC token, got:\n%s", res.stdout)
	}
	for _, secret := range []string{"PRIVATE KEY", "CERTIFICATE", "-cert-v01@openssh.com"} {
		if strings.Contains(res.stdout+outputs, secret) {
			t.Errorf("stdout or GITHUB_OUTPUT carries %q", secret)
		}
	}
	for _, name := range []string{"key", "tls.key", "key-cert.pub", "tls.crt"} {
		body := strings.Fields(readFile(t, filepath.Join(dir, name)))
		for _, field := range body {
			if len(field) >= 40 && strings.Contains(res.stdout, field) {
				t.Errorf("stdout carries part of %s", name)
				break
			}
		}
	}
}

// otherLogin is an account name that the bot's certificate does not carry,
// preferably one that exists so that sshd refuses the certificate itself.
func otherLogin(login string) string {
	for _, name := range []string{"nobody", "daemon", "root"} {
		if name == login {
			continue
		}
		if _, err := user.Lookup(name); err == nil {
			return name
		}
	}
	return "mbot-e2e-nobody"
}

func wantDenied(t *testing.T, res result, what string) {
	t.Helper()
	if res.code == 0 || strings.Contains(res.stdout, "mbot-ok") {
		t.Fatalf("%s logged in: %s", what, res)
	}
	if !strings.Contains(res.stderr, "Permission denied") {
		t.Errorf("%s failed, but not by sshd refusing the key: %s", what, res)
	}
	t.Logf("refused: %s", strings.TrimSpace(res.stderr))
}

// TestRefusals presents proofs the authority must refuse. Each refusal
// exits non-zero, names the error code and what to change, and leaves no
// files behind; the authority keeps serving afterwards.
func TestRefusals(t *testing.T) {
	c := startCluster(t)

	t.Run("rule-mismatch", func(t *testing.T) {
		vars := c.gitHubEnvWithClaims(t, map[string]any{"repository": "evil/app", "sub": "repo:evil/app:ref:refs/heads/main"})
		wantRefused(t, c, c.jobEnv(vars), tokenGitHub, "rule_mismatch", tokenGitHub, "repository", "evil/app")
	})

	t.Run("wrong-audience", func(t *testing.T) {
		vars, err := c.ci.GitLabEnv("other")
		if err != nil {
			t.Fatal(err)
		}
		wantRefused(t, c, c.jobEnv(vars), tokenGitLab, "wrong_audience", tokenGitLab, "audience", clusterName)
	})

	t.Run("expired", func(t *testing.T) {
		past := time.Now().Add(-10 * time.Minute)
		vars := c.gitLabEnvWithClaims(t, map[string]any{
			"iat": past.Add(-5 * time.Minute).Unix(), "nbf": past.Add(-5 * time.Minute).Unix(), "exp": past.Unix(),
		})
		wantRefused(t, c, c.jobEnv(vars), tokenGitLab, "proof_expired", tokenGitLab, "expired")
	})

	t.Run("replay", func(t *testing.T) {
		env := c.jobEnv(gitLabJob(t, c)) // one GitLab job token, presented twice
		out := filepath.Join(t.TempDir(), "first")
		if res := c.issue(t, env, tokenGitLab, out); res.code != 0 {
			t.Fatalf("first use of the token: %s", res)
		}
		wantRefused(t, c, env, tokenGitLab, "proof_replayed", tokenGitLab, "fresh")
	})

	t.Run("unknown-join-token", func(t *testing.T) {
		vars := gitLabJob(t, c)
		wantRefused(t, c, c.jobEnv(vars), "no-such-token", "unknown_join_token", "no-such-token", "--token")
	})

	t.Run("wrong-ca-pin", func(t *testing.T) {
		parent := t.TempDir()
		out := filepath.Join(parent, "mbot")
		wrongPin := "sha256:" + strings.Repeat("ab", 32)
		vars := gitLabJob(t, c)
		res := mbot(t, c.jobEnv(vars), "issue", "--authority", c.url, "--ca-pin", wrongPin, "--token", tokenGitLab, "--out", out)
		if res.code == 0 {
			t.Fatalf("mbot issue against a wrong --ca-pin succeeded: %s", res)
		}
		if !strings.Contains(res.stderr, "--ca-pin") || !strings.Contains(res.stderr, "export --type ca-pin") {
			t.Errorf("the error does not point at the pin:\n%s", res.stderr)
		}
		wantEmpty(t, parent)
	})

	t.Run("failure-removes-earlier-identity", func(t *testing.T) {
		parent := t.TempDir()
		out := filepath.Join(parent, "mbot")
		if res := c.issue(t, c.jobEnv(circleCIJob(t, c)), tokenCircleCI, out); res.code != 0 {
			t.Fatalf("mbot issue: %s", res)
		}
		checkIdentity(t, c, out, tokenCircleCI, "circleci")
		vars, err := c.ci.GitLabEnv("other")
		if err != nil {
			t.Fatal(err)
		}
		res := c.issue(t, c.jobEnv(vars), tokenGitLab, out)
		if res.code == 0 {
			t.Fatalf("mbot issue with a wrong audience succeeded: %s", res)
		}
		if !strings.Contains(res.stderr, "wrong_audience") || !strings.Contains(res.stderr, "removed the earlier identity") {
			t.Errorf("stderr should name the refusal and say the earlier identity was removed:\n%s", res.stderr)
		}
		wantEmpty(t, parent)
	})

	t.Run("still-serving", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "mbot")
		if res := c.issue(t, c.jobEnv(gitHubJob(t, c)), tokenGitHub, out); res.code != 0 {
			t.Fatalf("mbot issue after the refusals: %s", res)
		}
		checkIdentity(t, c, out, tokenGitHub, "github")
	})
}

// wantRefused runs mbot issue into a new directory and checks that it is
// refused with code, that stderr names each of hints, and that nothing was written.
func wantRefused(t *testing.T, c *cluster, env []string, token, code string, hints ...string) {
	t.Helper()
	parent := t.TempDir()
	res := c.issue(t, env, token, filepath.Join(parent, "mbot"))
	if res.code == 0 {
		t.Fatalf("mbot issue was admitted, want %s: %s", code, res)
	}
	t.Logf("refused: %s", strings.TrimSpace(res.stderr))
	for _, want := range append([]string{code}, hints...) {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr does not mention %q:\n%s", want, res.stderr)
		}
	}
	wantEmpty(t, parent)
}

// wantEmpty checks that a failed run left nothing in dir: no identity, no
// half-written temporary directory.
func wantEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) > 0 {
		t.Errorf("a failed mbot issue left %v in %s", names, dir)
	}
}

// TestTTLCap asks for more than the bot cap and gets the cap, with a warning.
func TestTTLCap(t *testing.T) {
	c := startCluster(t)
	out := filepath.Join(t.TempDir(), "mbot")
	res := c.issue(t, c.jobEnv(gitLabJob(t, c)), tokenGitLab, out, "--ttl", "48h")
	if res.code != 0 {
		t.Fatalf("mbot issue --ttl 48h: %s", res)
	}
	sum := checkIdentity(t, c, out, tokenGitLab, "gitlab")
	if d := time.Until(sum.NotAfter); d > 24*time.Hour+time.Minute || d < 24*time.Hour-5*time.Minute {
		t.Errorf("--ttl 48h gave an identity valid for %s, want the 24h cap", d.Round(time.Second))
	}
	if !strings.Contains(res.stderr, "warning") || !strings.Contains(res.stderr, "24h") || !strings.Contains(res.stderr, "cap") {
		t.Errorf("stderr does not warn about the 24h cap:\n%s", res.stderr)
	}
}

// TestSignHost checks mbot sign --host: an SSH host key and certificate and
// a TLS server key and certificate for the named hosts.
func TestSignHost(t *testing.T) {
	c := startCluster(t)
	out := filepath.Join(t.TempDir(), "host")
	mustMbot(t, baseEnv(c.home), "sign", "--config", c.config, "--host", "localhost,127.0.0.1", "--out", out)
	for _, name := range []string{"key", "key-cert.pub", "tls.key", "tls.crt", "ca.crt"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Errorf("mbot sign --host did not write %s: %v", name, err)
		}
	}
	for _, name := range []string{"key", "tls.key"} {
		if fi, err := os.Stat(filepath.Join(out, name)); err == nil && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %o, want 0600", name, fi.Mode().Perm())
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	cert := parseSSHCert(t, filepath.Join(out, "key-cert.pub"))
	hostCA, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.export(t, "ssh-host-ca")))
	if err != nil {
		t.Fatal(err)
	}
	if cert.CertType != ssh.HostCert || !slices.Equal(cert.ValidPrincipals, []string{"localhost", "127.0.0.1"}) ||
		!bytes.Equal(cert.SignatureKey.Marshal(), hostCA.Marshal()) {
		t.Errorf("key-cert.pub: type %d principals %v; want a host certificate for localhost,127.0.0.1 from the SSH host CA",
			cert.CertType, cert.ValidPrincipals)
	}

	leaf := parseCertChain(t, filepath.Join(out, "tls.crt"))[0]
	if err := leaf.VerifyHostname("localhost"); err != nil {
		t.Errorf("tls.crt: %v", err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("tls.crt: %v", err)
	}
	if readFile(t, filepath.Join(out, "ca.crt")) != c.export(t, "tls-ca") {
		t.Errorf("ca.crt differs from mbot authority export --type tls-ca")
	}
	t.Run("ssh-keygen", func(t *testing.T) {
		keygen := requireTool(t, "ssh-keygen")
		res := run(t, baseEnv(c.home), keygen, "-L", "-f", filepath.Join(out, "key-cert.pub"))
		if res.code != 0 || !strings.Contains(res.stdout, "host certificate") {
			t.Errorf("ssh-keygen -L does not call key-cert.pub a host certificate: %s", res)
		}
	})
	t.Run("openssl", func(t *testing.T) {
		openssl := requireTool(t, "openssl")
		res := run(t, baseEnv(c.home), openssl, "verify", "-CAfile", filepath.Join(out, "ca.crt"), filepath.Join(out, "tls.crt"))
		if res.code != 0 || !strings.Contains(res.stdout, ": OK") {
			t.Errorf("openssl verify of the host certificate: %s", res)
		}
	})
}
