//go:build unix

package e2e

import (
	"bufio"
	"errors"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mbot-dev/mbot/internal/skipreport"
)

// demoSSH reports whether the demo can log in over SSH here: sshd and ssh
// are installed. In CI, where .ci/run installs them, they must be.
func demoSSH(t *testing.T) bool {
	t.Helper()
	_, sshdErr := os.Stat("/usr/sbin/sshd")
	if sshdErr != nil {
		_, sshdErr = exec.LookPath("sshd")
	}
	_, sshErr := exec.LookPath("ssh")
	if sshdErr == nil && sshErr == nil {
		return true
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("sshd or ssh is not installed (%v, %v): in CI the demo must really log in", sshdErr, sshErr)
	}
	t.Logf("sshd or ssh is not installed: the demo's SSH login is not tested")
	return false
}

func currentUser(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// TestDemo runs the README's first command the way a user does: it must
// finish in seconds, write a real identity, really log in over SSH as the
// user running it, connect with tls.crt over mTLS, and leave nothing
// behind but the identity.
func TestDemo(t *testing.T) {
	work, tmp := t.TempDir(), t.TempDir()
	out := filepath.Join(work, "mbot-demo")
	login := currentUser(t)
	start := time.Now()
	res := mustMbot(t, append(baseEnv(t.TempDir()), "TMPDIR="+tmp), "demo", "--out", out)
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("mbot demo took %s", took)
	}
	wants := []string{`as bot "deployer"`, "principals: " + login + ", deploy", "refused (rule_mismatch)",
		`verified client certificate: subject "CN=deployer,OU=deploy,O=demo.mbot", URI SANs spiffe://demo.mbot/bot/deployer`,
		"ssh -F " + out + "/ssh_config -o Hostname=127.0.0.1 -o HostKeyAlias=web1.demo.mbot -p "}
	if demoSSH(t) {
		// The remote command's output: the real login as the current user.
		wants = append(wants, "\n   hello from ", " as "+login+"\n")
	} else {
		wants = append(wants, "Skipping the SSH login")
	}
	for _, want := range wants {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("the demo's story lacks %q:\n%s", want, res.stdout)
		}
	}
	cert, _, _, _, err := ssh.ParseAuthorizedKey([]byte(readFile(t, filepath.Join(out, "key-cert.pub"))))
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := cert.(*ssh.Certificate); !ok || strings.Join(c.ValidPrincipals, ",") != login+",deploy" {
		t.Errorf("the demo certificate is %T with principals %v", cert, c.ValidPrincipals)
	}
	for dir, want := range map[string]int{work: 1, tmp: 0} {
		if entries, err := os.ReadDir(dir); err != nil || len(entries) != want {
			t.Errorf("the demo left %v in %s (%v)", entries, dir, err)
		}
	}
}

// TestDemoWithoutSSH runs the demo where no ssh client can be found: it
// says so, shows what it would run, and still succeeds.
func TestDemoWithoutSSH(t *testing.T) {
	out := filepath.Join(t.TempDir(), "mbot-demo")
	res := mustMbot(t, []string{"PATH=" + t.TempDir(), "HOME=" + t.TempDir(), "TMPDIR=" + t.TempDir()}, "demo", "--out", out)
	for _, want := range []string{"Skipping the SSH login: the ssh client is not installed", "it would run:\n   $ ssh -F " + out + "/ssh_config",
		"verified client certificate", "refused (rule_mismatch)"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("the demo's story lacks %q:\n%s", want, res.stdout)
		}
	}
	if strings.Contains(res.stdout, "\n   hello from") {
		t.Errorf("the demo claims a login without ssh:\n%s", res.stdout)
	}
}

// TestDemoKeep follows the demo's --keep instructions by hand: with the
// printed exports a real mbot issue joins as the simulated GitHub Actions
// job, the printed ssh command logs in and mbot audit reads the log; on
// SIGINT everything stops and the temporary directory is gone.
func TestDemoKeep(t *testing.T) {
	tmp, home := t.TempDir(), t.TempDir()
	out := filepath.Join(t.TempDir(), "mbot-demo")
	cmd := exec.Command(mbotBin, "demo", "--keep", "--out", out)
	cmd.Env = append(baseEnv(home), "TMPDIR="+tmp)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			logs.Write([]byte(sc.Text() + "\n"))
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	}()

	exports := map[string]string{}
	var sshLine, auditLine string
	timeout := time.After(30 * time.Second)
read:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("mbot demo --keep ended before waiting for Ctrl-C: %v\n%s", <-exited, logs)
			}
			switch {
			case strings.HasPrefix(line, "export "):
				k, v, _ := strings.Cut(strings.TrimPrefix(line, "export "), "=")
				exports[k] = strings.Trim(v, "'")
			case strings.HasPrefix(line, "ssh -F "):
				sshLine = line
			case strings.HasPrefix(line, "mbot audit "):
				auditLine = line
			case strings.Contains(line, "Press Ctrl-C"):
				break read
			}
		case <-timeout:
			t.Fatalf("mbot demo --keep printed no Ctrl-C prompt within 30s:\n%s", logs)
		}
	}
	for _, k := range []string{"MBOT_AUTHORITY", "MBOT_CA_PIN", "MBOT_TOKEN", "GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"} {
		if exports[k] == "" {
			t.Fatalf("mbot demo --keep printed no export of %s:\n%s", k, logs)
		}
	}

	// The user continues by hand with the printed lines.
	env := withVars(baseEnv(t.TempDir()), exports)
	again := filepath.Join(t.TempDir(), "again")
	res := mustMbot(t, env, "issue", "--out", again)
	if !strings.Contains(res.stderr, `github join as bot "deployer"`) || !fileExists(filepath.Join(again, "key-cert.pub")) {
		t.Errorf("mbot issue with the demo's exports did not join as the simulated job:\n%s", res)
	}
	configPath := strings.TrimPrefix(auditLine, "mbot audit --config ")
	if !strings.HasPrefix(configPath, tmp) {
		t.Fatalf("the printed audit command %q does not name the demo's authority.yaml in %s", auditLine, tmp)
	}
	res = mustMbot(t, baseEnv(t.TempDir()), "audit", "--config", configPath)
	if n := strings.Count(res.stdout, "acme/app"); n < 2 {
		t.Errorf("mbot audit shows %d joins of acme/app, want the demo's and the one by hand:\n%s", n, res)
	}
	ports := []string{hostPort(t, exports["MBOT_AUTHORITY"]), hostPort(t, exports["ACTIONS_ID_TOKEN_REQUEST_URL"])}
	if demoSSH(t) {
		args := strings.Fields(strings.TrimPrefix(sshLine, "ssh "))
		if res := run(t, baseEnv(home), "ssh", args...); res.code != 0 || strings.TrimSpace(res.stdout) != currentUser(t) {
			t.Errorf("the printed ssh command did not log in as %s:\n%s", currentUser(t), res)
		}
		port := regexp.MustCompile(` -p (\d+) `).FindStringSubmatch(sshLine)
		if port == nil {
			t.Fatalf("the printed ssh command %q has no -p", sshLine)
		}
		ports = append(ports, "127.0.0.1:"+port[1])
	}
	for _, addr := range ports {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err != nil {
			t.Errorf("nothing listens on %s while the demo keeps running: %v", addr, err)
		} else {
			c.Close()
		}
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("mbot demo --keep exited with %v on SIGINT:\n%s", err, logs)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("mbot demo --keep did not stop within 15s of SIGINT:\n%s", logs)
	}
	for _, addr := range ports {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after the demo stopped", addr)
		}
	}
	if entries, err := os.ReadDir(tmp); err != nil || len(entries) != 0 {
		t.Errorf("the demo left %v in its temporary directory %s (%v)", entries, tmp, err)
	}
}

func hostPort(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		t.Fatalf("%q is not a URL with a host: %v", rawURL, err)
	}
	return u.Host
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestDemoLastLine checks that the demo's last line works as printed: by
// name when PATH finds this mbot, else by its path with how to put it on
// PATH.
func TestDemoLastLine(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		last       string
		note       string
	}{
		{"mbot on PATH", pathWithMbot(mbotBin), "To continue by hand, run: mbot demo --keep", ""},
		{"mbot not on PATH", pathWithoutMbot(), "To continue by hand, run: " + mbotBin + " demo --keep",
			"mbot is not on PATH: export PATH=" + filepath.Dir(mbotBin) + `:"$PATH"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "mbot-demo")
			res := mustMbot(t, []string{"PATH=" + tc.path, "HOME=" + t.TempDir(), "TMPDIR=" + t.TempDir()}, "demo", "--out", out)
			lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
			if got := lines[len(lines)-1]; got != tc.last {
				t.Errorf("the demo's last line is %q, want %q", got, tc.last)
			}
			if tc.note != "" && !strings.Contains(res.stdout, tc.note) {
				t.Errorf("the demo does not say how to put mbot on PATH (%q):\n%s", tc.note, res.stdout)
			}
			if tc.note == "" && strings.Contains(res.stdout, "not on PATH") {
				t.Errorf("the demo says mbot is not on PATH, which finds it:\n%s", res.stdout)
			}
		})
	}
}

// TestDemoLoginFails runs the demo as an account that cannot log in
// (nobody, whose shell is nologin): the certificate is fine, the real sshd
// refuses the session, and the demo says so and exits non-zero.
func TestDemoLoginFails(t *testing.T) {
	if !demoSSH(t) {
		skipreport.Skip(t, "sshd or ssh is not installed")
	}
	if os.Geteuid() != 0 {
		skipreport.Skip(t, "running the demo as nobody needs root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		skipreport.Skipf(t, "no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	// A directory nobody can read and write, with a copy of the binary.
	dir, err := os.MkdirTemp("", "mbot-demo-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "mbot")
	writeFile(t, bin, readFile(t, mbotBin), 0o755)
	for _, d := range []string{dir, filepath.Join(dir, "tmp"), filepath.Join(dir, "home")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "demo", "--out", filepath.Join(dir, "mbot-demo"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Join(dir, "home"), "TMPDIR=" + filepath.Join(dir, "tmp")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("mbot demo as nobody: %v, want exit 1\n--- stdout:\n%s--- stderr:\n%s", err, stdout.String(), stderr.String())
	}
	for _, want := range []string{`the SSH login as "nobody" failed`, "Permission denied", `sshd: "User nobody not allowed`, "not locked, a real login shell"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("the demo's error lacks %q:\n%s", want, stderr.String())
		}
	}
	if !strings.Contains(stdout.String(), "the login failed") {
		t.Errorf("the demo's story does not say the login failed:\n%s", stdout.String())
	}
	if testing.Verbose() {
		t.Log(stdout.String())
	}
}
