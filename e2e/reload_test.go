//go:build linux

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/client"
)

// reloadMbotYAML is a daemon's mbot.yaml (GitHub join) with the outputs %[3]s.
const reloadMbotYAML = `authority: %[1]s
ca_pin: %[2]s
token: ` + tokenGitHub + `
outputs:
%[3]s`

// startReloadDaemon runs mbot start with outputs (mbot.yaml lines) and a
// health endpoint, renewing every two seconds.
func startReloadDaemon(t *testing.T, dc *daemonCluster, outputs string) (*proc, string) {
	t.Helper()
	config := filepath.Join(t.TempDir(), "mbot.yaml")
	writeFile(t, config, fmt.Sprintf(reloadMbotYAML, dc.url, dc.pin, outputs), 0o600)
	healthAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startProc(t, dc.jobEnv(gitHubJob(t, dc.cluster)), mbotBin, "start", "--config", config, "--ttl", daemonTTL,
		"--renewal-interval", daemonInterval, "--health-addr", healthAddr)
	waitForPort(t, healthAddr, d.exited, d.logs)
	return d, "http://" + healthAddr + "/healthz"
}

// lines are the lines of the file at path (none if it is missing).
func lines(path string) []string {
	data, _ := os.ReadFile(path)
	return strings.Fields(string(data))
}

// TestReloadCommand: an output's reload: runs after each write of that
// output (without a shell unless the command is one), its failure is
// logged with the output's name and exit status and counted in /healthz,
// while the daemon keeps renewing; it never runs for an output that could
// not be written; and reload_timeout kills it and what it started.
func TestReloadCommand(t *testing.T) {
	dc := startDaemonCluster(t)

	t.Run("after each write, not after a failed one", func(t *testing.T) {
		work := t.TempDir()
		marker := filepath.Join(work, "reloads")
		first, second := filepath.Join(work, "first"), filepath.Join(work, "second")
		d, _ := startReloadDaemon(t, dc, fmt.Sprintf(`  - destination: %[1]s
    reload: [sh, -c, 'echo "$MBOT_OUTPUT_NAME:$MBOT_OUTPUT_DIR" >> %[3]s']
  - destination: %[2]s
    name: second
    reload: [sh, -c, 'echo "$MBOT_OUTPUT_NAME:$MBOT_OUTPUT_DIR" >> %[3]s']
`, first, second, marker))
		waitFor(t, "two renewals, each reloading both outputs", d, func() bool { return len(lines(marker)) >= 4 })
		for i, l := range lines(marker) {
			if want := []string{"first:" + first, "second:" + second}[i%2]; l != want {
				t.Fatalf("reload %d ran for %q, want %q, in the outputs' order:\n%s", i, l, want, readFile(t, marker))
			}
		}
		// The second output's directory holds a file mbot did not write:
		// no renewal can write it, and no reload runs.
		writeFile(t, filepath.Join(second, "stray"), "not mbot's\n", 0o600)
		failures := func() int { return strings.Count(d.logs.String(), "renewal failed") }
		waitFor(t, "a failed renewal", d, func() bool { return failures() >= 1 })
		before := len(lines(marker))
		waitFor(t, "two more failed renewals", d, func() bool { return failures() >= 3 })
		if after := len(lines(marker)); after != before {
			t.Fatalf("reloads ran after failed writes (%d, then %d):\n%s", before, after, readFile(t, marker))
		}
		if err := os.Remove(filepath.Join(second, "stray")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the reloads once the outputs are written again", d, func() bool { return len(lines(marker)) >= before+2 })
		d.running(t)
	})

	t.Run("failure logged and counted", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "id")
		d, health := startReloadDaemon(t, dc, fmt.Sprintf("  - destination: %s\n    name: app\n    reload: [sh, -c, 'echo cannot reload >&2; exit 3']\n", out))
		waitFor(t, "a failed reload", d, func() bool { return strings.Contains(d.logs.String(), "reload command failed") })
		line := logLine(d.logs.String(), "reload command failed")
		for _, want := range []string{"output=app", "exit_status=3", `command_output="cannot reload"`, `command="sh -c 'echo cannot reload >&2; exit 3'"`} {
			if !strings.Contains(line, want) {
				t.Errorf("the failure's log line lacks %s:\n%s", want, line)
			}
		}
		serial := tlsSerial(out)
		waitForRenewal(t, d, out, serial) // a failed reload does not stop renewals
		// The renewal's reload runs after its files are written: the second
		// failure is counted a moment after the new serial shows.
		var code int
		var r client.HealthReport
		waitFor(t, "reload_failures >= 2 in /healthz", d, func() bool {
			code, r = healthz(t, health)
			return r.ReloadFailures >= 2
		})
		if code != http.StatusOK || r.Status != "ok" {
			t.Errorf("/healthz %d %+v; want ok while renewals succeed and reloads fail", code, r)
		}
		d.running(t)
	})

	t.Run("timeout kills the command", func(t *testing.T) {
		work := t.TempDir()
		out, pidFile := filepath.Join(work, "id"), filepath.Join(work, "sleep.pid")
		// The shell starts a child and waits: the whole group must die.
		d, _ := startReloadDaemon(t, dc, fmt.Sprintf("  - destination: %s\n    name: slow\n    reload: [sh, -c, 'sleep 300 & echo $! > %s; wait']\n    reload_timeout: 1s\n", out, pidFile))
		waitFor(t, "a reload killed after its timeout", d, func() bool { return strings.Contains(d.logs.String(), "timed_out=true") })
		line := logLine(d.logs.String(), "timed_out=true")
		if !strings.Contains(line, "output=slow") || !strings.Contains(line, "reload_timeout 1s passed") {
			t.Errorf("the timeout's log line: %s", line)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, pidFile)))
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the reload's child to be killed", d, func() bool { return !alive(pid) })
		serial := tlsSerial(out)
		waitForRenewal(t, d, out, serial)
		d.running(t)
	})
}

// logLine is the first line of logs holding s.
func logLine(logs, s string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// alive reports whether process pid runs (a zombie, killed and not yet
// reaped by init, does not).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}
