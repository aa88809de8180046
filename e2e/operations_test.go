package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestOperations runs the built authority with metrics_listen and JSON
// logs (MBOT_LOG_FORMAT=json), admits a GitHub join and refuses an
// unknown and a malformed join token through mbot issue, then scrapes the real
// /metrics listener (parsed as Prometheus parses it), checks /healthz and
// /readyz, and parses every line the authority logged as a JSON object.
func TestOperations(t *testing.T) {
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c, auth := startClusterConfig(t, []string{"MBOT_LOG_FORMAT=json"}, defaultResources, "metrics_listen: "+metricsAddr+"\n")
	waitForPort(t, metricsAddr, auth.exited, auth.logs)

	job := c.jobEnv(gitHubJob(t, c))
	if res := c.issue(t, job, tokenGitHub, filepath.Join(t.TempDir(), "mbot")); res.code != 0 {
		t.Fatalf("mbot issue: %s", res)
	}
	for _, token := range []string{"no-such-token", "no-such-token\x1b[31m"} {
		if res := c.issue(t, job, token, filepath.Join(t.TempDir(), "mbot")); res.code == 0 {
			t.Fatalf("mbot issue with join token %q was admitted: %s", token, res)
		}
	}

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != http.StatusOK || strings.TrimSpace(body) != "ready" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	count := func(name string, want map[string]string) float64 {
		var sum float64
		for _, m := range families[name].GetMetric() {
			match := true
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					match = false
				}
			}
			if match && m.Counter != nil {
				sum += m.Counter.GetValue()
			}
		}
		return sum
	}
	if n := count("mbot_joins_total", map[string]string{"method": "github", "result": "admitted", "code": "none"}); n != 1 {
		t.Errorf("mbot_joins_total of admitted github joins = %v, want 1", n)
	}
	if n := count("mbot_joins_total", map[string]string{"result": "refused", "code": "unknown_join_token"}); n != 1 {
		t.Errorf("mbot_joins_total of unknown join tokens = %v, want 1", n)
	}
	if n := count("mbot_joins_total", map[string]string{"result": "refused", "code": "bad_request"}); n != 1 {
		t.Errorf("mbot_joins_total of malformed join token names = %v, want 1", n)
	}
	if n := count("mbot_outbound_calls_total", map[string]string{"call": "jwks", "result": "ok"}); n < 1 {
		t.Errorf("mbot_outbound_calls_total of JWKS fetches = %v, want at least 1", n)
	}
	if families["go_sql_open_connections"] == nil || families["mbot_store_call_duration_seconds"] == nil || families["mbot_ready"] == nil {
		t.Errorf("/metrics lacks the store's pools, store latency or readiness:\n%s", body)
	}

	// Every line on the authority's stderr is one JSON object with time,
	// level and msg; the hostile join token arrives escaped.
	var sawServing, sawAdmitted, sawRefused bool
	for _, line := range strings.Split(strings.TrimSpace(auth.logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON (%v): %q", err, line)
			continue
		}
		if rec["time"] == nil || rec["level"] == nil || rec["msg"] == nil {
			t.Errorf("log line lacks time, level or msg: %q", line)
		}
		switch rec["msg"] {
		case "authority serving":
			sawServing = true
		case "join admitted":
			sawAdmitted = sawAdmitted || rec["method"] == "github"
		case "join refused":
			sawRefused = sawRefused || strings.HasPrefix(fmt.Sprint(rec["join_token"]), "no-such-token")
		}
		if strings.Contains(line, "\x1b") {
			t.Errorf("log line carries a raw escape: %q", line)
		}
	}
	if !sawServing || !sawAdmitted || !sawRefused {
		t.Errorf("JSON log lacks the start (%v), the admitted join (%v) or the refused one (%v):\n%s", sawServing, sawAdmitted, sawRefused, auth.logs)
	}
}
