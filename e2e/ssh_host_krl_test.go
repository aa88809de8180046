package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The two bots of sshHostBotsYAML that log in to the host, each with its
// own join token.
const (
	krlLocked = "deployer"
	krlOther  = "tester"
)

const sshHostBotsYAML = `kind: bot
version: v1
metadata: {name: ` + krlLocked + `}
spec:
  roles: [` + hostLogin + `]
---
kind: bot
version: v1
metadata: {name: ` + krlOther + `}
spec:
  roles: [` + hostLogin + `]
---
kind: join_token
version: v1
metadata: {name: github-` + krlLocked + `}
spec:
  bot: ` + krlLocked + `
  method: github
  github:
    issuer: %[1]s
    allow:
      - repository: acme/app
---
kind: join_token
version: v1
metadata: {name: github-` + krlOther + `}
spec:
  bot: ` + krlOther + `
  method: github
  github:
    issuer: %[1]s
    allow:
      - repository: acme/app
`

const krlBotMbotYAML = `authority: %s
ca_pin: %s
token: github-%s
outputs:
  - type: identity
    destination: %s
    roles: [` + hostLogin + `]
`

// TestSSHHostRevokedKeys: a host runs mbot start with an ssh_host output
// and a real sshd includes its snippet, RevokedKeys included. Two bots
// hold identity certificates and log in. After mbot lock bot/deployer and
// the next renewal of the ssh_host output, sshd refuses deployer's
// still-valid certificate, with no reload, and still admits tester's.
func TestSSHHostRevokedKeys(t *testing.T) {
	c := startSSHHostCluster(t)
	work := t.TempDir()
	bots := filepath.Join(work, "bots.yaml")
	writeFile(t, bots, fmt.Sprintf(sshHostBotsYAML, c.ci.URL), 0o600)
	mustMbot(t, baseEnv(c.home), "apply", "--config", c.config, "-f", bots)

	hostDir := filepath.Join(work, "host")
	hostConfig := filepath.Join(work, "host.yaml")
	writeFile(t, hostConfig, fmt.Sprintf(sshHostMbotYAML, c.url, c.pin, filepath.Join(work, "host-id"), hostDir), 0o644)
	d := startProc(t, c.jobEnv(c.ci.GitHubEnv()), mbotBin, "start", "--config", hostConfig, "--ttl", daemonTTL, "--renewal-interval", daemonInterval)
	krlPath := filepath.Join(hostDir, "revoked_keys")
	waitFor(t, "the first ssh_host output", d, func() bool { return hostSerial(hostDir) != 0 })
	if want := fmt.Sprintf("\nRevokedKeys %q\n", krlPath); !strings.Contains(readFile(t, filepath.Join(hostDir, "sshd_config.snippet")), want) {
		t.Errorf("sshd_config.snippet does not name the KRL (%s):\n%s", strings.TrimSpace(want), readFile(t, filepath.Join(hostDir, "sshd_config.snippet")))
	}
	if st, err := os.Stat(krlPath); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("revoked_keys: %v %v", st, err)
	}
	srv := startHostSSHD(t, c, filepath.Join(hostDir, "sshd_config.snippet"))

	issue := func(bot string) string {
		dir := filepath.Join(work, bot)
		config := filepath.Join(work, bot+".yaml")
		writeFile(t, config, fmt.Sprintf(krlBotMbotYAML, c.url, c.pin, bot, dir), 0o644)
		vars := gitHubJob(t, c)
		vars["MBOT_CONFIG"] = config
		if res := mbot(t, c.jobEnv(vars), "issue"); res.code != 0 {
			t.Fatalf("mbot issue as %s: %s", bot, res)
		}
		return dir
	}
	connect := func(dir string) result {
		return run(t, baseEnv(c.home), srv.ssh, "-F", filepath.Join(dir, "ssh_config"), "-p", strconv.Itoa(srv.port),
			"-o", "Hostname=127.0.0.1", "-o", "HostKeyAlias="+hostName, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", hostName, "echo", "mbot-ok")
	}
	lockedDir, otherDir := issue(krlLocked), issue(krlOther)
	for _, dir := range []string{lockedDir, otherDir} {
		if res := connect(dir); res.code != 0 || strings.TrimSpace(res.stdout) != "mbot-ok" {
			t.Fatalf("ssh with %s before the lock: %s\nsshd:\n%s", dir, res, srv.logs)
		}
	}
	lockedCert := parseSSHCert(t, filepath.Join(lockedDir, "key-cert.pub"))

	before := readFile(t, krlPath)
	mustMbot(t, baseEnv(c.home), "lock", "bot/"+krlLocked, "--reason", "CI secret leaked", "--config", c.config)
	keygen := requireTool(t, "ssh-keygen")
	waitFor(t, "a renewal of the ssh_host output with "+krlLocked+"'s certificate in revoked_keys", d, func() bool {
		data, err := os.ReadFile(krlPath)
		return err == nil && string(data) != before &&
			run(t, baseEnv(c.home), keygen, "-Q", "-f", krlPath, filepath.Join(lockedDir, "key-cert.pub")).code != 0
	})
	// ssh-keygen -Q exits 1 and says REVOKED for a revoked key; 0 for the other.
	if res := run(t, baseEnv(c.home), keygen, "-Q", "-f", krlPath, filepath.Join(lockedDir, "key-cert.pub")); !strings.Contains(res.stdout, "REVOKED") {
		t.Errorf("ssh-keygen -Q on %s's certificate: %s", krlLocked, res)
	}
	if res := run(t, baseEnv(c.home), keygen, "-Q", "-f", krlPath, filepath.Join(otherDir, "key-cert.pub")); res.code != 0 {
		t.Errorf("ssh-keygen -Q on %s's certificate: %s", krlOther, res)
	}

	res := connect(lockedDir)
	if res.code == 0 || strings.Contains(res.stdout, "mbot-ok") {
		t.Fatalf("sshd admitted %s's certificate (serial %d) after the lock and a renewal of revoked_keys: %s", krlLocked, lockedCert.Serial, res)
	}
	if want := "revoked"; srv.waitForLog(want) == "" {
		t.Errorf("sshd did not log a revoked key:\n%s", srv.logs)
	}
	if res := connect(otherDir); res.code != 0 || strings.TrimSpace(res.stdout) != "mbot-ok" {
		t.Fatalf("ssh as %s after %s's lock: %s\nsshd:\n%s", krlOther, krlLocked, res, srv.logs)
	}
	if !bytes.Contains([]byte(srv.logs.String()), []byte("bot="+krlOther)) {
		t.Errorf("sshd did not log %s's login:\n%s", krlOther, srv.logs)
	}
	d.running(t)
}
