package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestDemo runs the README's first command the way a user does: it must
// finish in seconds, write a real identity and leave nothing behind but it.
func TestDemo(t *testing.T) {
	work := t.TempDir()
	out := filepath.Join(work, "mbot-demo")
	start := time.Now()
	res := mustMbot(t, baseEnv(t.TempDir()), "demo", "--out", out)
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("mbot demo took %s", took)
	}
	for _, want := range []string{`as bot "deployer"`, "principals: ci, deploy", "refused (rule_mismatch)", "ssh -F " + out + "/ssh_config"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("the demo's story lacks %q:\n%s", want, res.stdout)
		}
	}
	cert, _, _, _, err := ssh.ParseAuthorizedKey([]byte(readFile(t, filepath.Join(out, "key-cert.pub"))))
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := cert.(*ssh.Certificate); !ok || strings.Join(c.ValidPrincipals, ",") != "ci,deploy" {
		t.Errorf("the demo certificate is %T with principals %v", cert, c.ValidPrincipals)
	}
	entries, err := os.ReadDir(work)
	if err != nil || len(entries) != 1 {
		t.Errorf("the demo left %v beside its output (%v)", entries, err)
	}
}
