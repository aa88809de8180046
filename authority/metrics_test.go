package authority_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/authoritytest"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// get fetches url from the plain-HTTP metrics listener.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// scrape reads /metrics at addr and parses it as Prometheus does.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return families
}

// sample returns the value of the series of family name whose labels
// include want (a counter's or gauge's value, a histogram's count), and
// whether there is one.
func sample(families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// exerciseAuthority makes real joins, refusals, a renewal, a copied
// identity and a rate-limited burst, so that every metric has a series.
func exerciseAuthority(t *testing.T, env *authoritytest.Env) {
	t.Helper()
	a := env.Authority
	ctx := t.Context()
	tok := githubToken(t, env.Issuer, nil)
	if _, err := a.Join(ctx, joinRequest("github-deploy", "github", tok, time.Hour, newOutput(t, "identity")), "test"); err != nil {
		t.Fatal(err)
	}
	_, err := a.Join(ctx, joinRequest("github-deploy", "github", tok, time.Hour, newOutput(t, "identity")), "test")
	wantCode(t, "a replayed proof", err, identity.CodeProofReplayed)
	// A method the authority does not know, with terminal escapes: counted
	// as "other", never as a label of the caller's choosing.
	_, err = a.Join(ctx, joinRequest("github-deploy", "evil\x1b[31m", tok, time.Hour, newOutput(t, "identity")), "test")
	wantCode(t, "an unknown method", err, identity.CodeBadRequest)

	// A token-joined instance renews, then a copy of it is presented.
	gen1 := tokenJoin(t, a, "runner-1", "secret-1")
	if _, err := renewOverTLS(t, env, gen1, newOutput(t, "identity"), time.Hour); err != nil {
		t.Fatal(err)
	}
	_, err = renewOverTLS(t, env, gen1, newOutput(t, "identity"), time.Hour)
	wantCode(t, "a copied identity", err, identity.CodeInstanceLocked)

	// Bodies that are not join requests, over HTTPS, one past the
	// address's burst: that one is summarised, not recorded.
	roots := x509.NewCertPool()
	roots.AddCert(a.CAs().TLSCert)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer c.CloseIdleConnections()
	for range 21 {
		resp, err := c.Post(env.URL+identity.PathJoin, "application/json", bytes.NewReader([]byte("not json")))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("not json: %d, want 400", resp.StatusCode)
		}
	}
}

// TestMetricsListener scrapes the real metrics listener after real joins
// and refusals: every metric of docs/operations.md has its series, with
// label values from fixed sets; /healthz and /readyz answer.
func TestMetricsListener(t *testing.T) {
	addr := freeAddr(t)
	env := authoritytest.Start(t, "acme", renewBotsYAML+tokenJoinTokenYAML("runner-1", "secret-1"), "metrics_listen: "+addr+"\n")
	if code, body := get(t, "http://"+addr+"/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, "http://"+addr+"/readyz"); code != http.StatusOK || strings.TrimSpace(body) != "ready" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	exerciseAuthority(t, env)
	families := scrape(t, addr)

	for _, c := range []struct {
		name   string
		labels map[string]string
		min    float64
		max    float64 // 0: no upper bound
	}{
		{authority.MetricJoins, map[string]string{"method": "github", "result": "admitted", "code": "none"}, 1, 1},
		{authority.MetricJoins, map[string]string{"method": "github", "result": "refused", "code": "proof_replayed"}, 1, 1},
		{authority.MetricJoins, map[string]string{"method": "other", "result": "refused", "code": "bad_request"}, 2, 0},
		{authority.MetricJoins, map[string]string{"method": "token", "result": "admitted", "code": "none"}, 1, 1},
		{authority.MetricRenewals, map[string]string{"result": "admitted", "code": "none"}, 1, 1},
		{authority.MetricRenewals, map[string]string{"result": "refused", "code": "instance_locked"}, 1, 1},
		{authority.MetricJoinDuration, map[string]string{"method": "github"}, 2, 2},
		{authority.MetricRenewalDuration, nil, 2, 2},
		{authority.MetricStoreCallDuration, map[string]string{"operation": "record_join"}, 2, 0},
		{authority.MetricStoreCallDuration, map[string]string{"operation": "advance_generation"}, 2, 0},
		{authority.MetricStoreCallDuration, map[string]string{"operation": "audit"}, 1, 0},
		{authority.MetricStoreCallErrors, map[string]string{"operation": "record_join"}, 0, -1}, // a replay is an answer
		{authority.MetricProofReplays, nil, 1, 1},
		{authority.MetricRateLimited, nil, 1, 0},
		{authority.MetricInstanceLocks, nil, 1, 1},
		{authority.MetricOutboundCalls, map[string]string{"call": "oidc_discovery", "result": "ok"}, 1, 0},
		{authority.MetricOutboundCalls, map[string]string{"call": "jwks", "result": "ok"}, 1, 0},
		{authority.MetricOutboundDuration, map[string]string{"call": "jwks"}, 1, 0},
		{authority.MetricReady, nil, 1, 1},
		{authority.MetricBuildInfo, nil, 1, 1},
		{"go_sql_open_connections", map[string]string{"db_name": "write"}, 0, 0},
		{"go_sql_max_open_connections", map[string]string{"db_name": "read"}, 1, 0},
		{"process_start_time_seconds", nil, 1, 0},
	} {
		v, ok := sample(families, c.name, c.labels)
		if c.max < 0 {
			if ok && v > 0 {
				t.Errorf("%s%v = %v, want none", c.name, c.labels, v)
			}
			continue
		}
		if !ok || v < c.min || (c.max > 0 && v > c.max) {
			t.Errorf("%s%v = %v (present %v), want %v..%v", c.name, c.labels, v, ok, c.min, c.max)
		}
	}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.ContainsAny(l.GetValue(), "\x1b\n") || strings.Contains(l.GetValue(), "evil") {
					t.Errorf("%s has label %s=%q, from a caller", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
}

// TestMetricsExposition: the exposition is classic Prometheus text: each
// mbot metric has its TYPE, histograms have the same le buckets as ever
// (dashboards and recorded queries depend on them), and the Content-Type
// is one Prometheus accepts without a fallback protocol.
func TestMetricsExposition(t *testing.T) {
	addr := freeAddr(t)
	env := authoritytest.Start(t, "acme", renewBotsYAML+tokenJoinTokenYAML("runner-1", "secret-1"), "metrics_listen: "+addr+"\n")
	exerciseAuthority(t, env)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("/metrics Content-Type %q, want text/plain; version=0.0.4", ct)
	}
	families := scrape(t, addr)
	buckets := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, math.Inf(1)}
	for name, want := range map[string]dto.MetricType{
		authority.MetricJoins: dto.MetricType_COUNTER, authority.MetricRenewals: dto.MetricType_COUNTER,
		authority.MetricStoreCallErrors: dto.MetricType_COUNTER, authority.MetricProofReplays: dto.MetricType_COUNTER,
		authority.MetricRateLimited: dto.MetricType_COUNTER, authority.MetricOutboundCalls: dto.MetricType_COUNTER,
		authority.MetricInstanceLocks: dto.MetricType_COUNTER, authority.MetricReady: dto.MetricType_GAUGE,
		authority.MetricBuildInfo: dto.MetricType_GAUGE, "go_sql_open_connections": dto.MetricType_GAUGE,
		authority.MetricJoinDuration: dto.MetricType_HISTOGRAM, authority.MetricRenewalDuration: dto.MetricType_HISTOGRAM,
		authority.MetricStoreCallDuration: dto.MetricType_HISTOGRAM, authority.MetricOutboundDuration: dto.MetricType_HISTOGRAM,
	} {
		f := families[name]
		if f == nil || f.GetType() != want {
			t.Errorf("%s: type %v, want %v", name, f.GetType(), want)
			continue
		}
		if want != dto.MetricType_HISTOGRAM {
			continue
		}
		for _, m := range f.GetMetric() {
			h := m.GetHistogram()
			var got []float64
			for _, b := range h.GetBucket() {
				got = append(got, b.GetUpperBound())
			}
			if fmt.Sprint(got) != fmt.Sprint(buckets) {
				t.Errorf("%s%v buckets %v, want %v", name, m.GetLabel(), got, buckets)
			}
			if n := len(h.GetBucket()); n > 0 && h.GetBucket()[n-1].GetCumulativeCount() > h.GetSampleCount() {
				t.Errorf("%s%v: last bucket %d above the count %d", name, m.GetLabel(), h.GetBucket()[n-1].GetCumulativeCount(), h.GetSampleCount())
			}
		}
	}
	if v, ok := sample(families, authority.MetricJoinDuration, map[string]string{"method": "github"}); !ok || v != 2 {
		t.Errorf("%s{method=github} count %v (present %v), want 2", authority.MetricJoinDuration, v, ok)
	}
}

// TestMetricsLibraryNotLinked: the mbot binary links no Prometheus client
// nor protobuf, whose package initializers would run in every mbot
// process (mbot issue, mbot --version); tests may use them to parse.
func TestMetricsLibraryNotLinked(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "github.com/mbot-dev/mbot").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/prometheus/") || strings.HasPrefix(pkg, "google.golang.org/protobuf/") {
			t.Errorf("the mbot binary links %s", pkg)
		}
	}
}

// TestReadyzStoreDown: with the store closed, /readyz answers 503 with the
// reason and mbot_ready is 0, while /healthz still answers: the process is
// up, a load balancer drains it.
func TestReadyzStoreDown(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"),
		fmt.Appendf(nil, "cluster_name: acme\nlisten: 127.0.0.1:0\ndata_dir: ./data\nmetrics_listen: %s\n", addr))
	if err != nil {
		t.Fatal(err)
	}
	a, err := authority.Open(context.Background(), cfg, authority.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan net.Addr, 1), make(chan error, 1)
	go func() { done <- a.Serve(ctx, func(addr net.Addr) { ready <- addr }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	defer func() { cancel(); <-done }()
	if code, body := get(t, "http://"+addr+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before: %d %q", code, body)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, "http://"+addr+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready: the store does not answer") {
		t.Errorf("/readyz with the store closed: %d %q, want 503 naming the store", code, body)
	}
	if code, _ := get(t, "http://"+addr+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with the store closed: %d, want 200", code)
	}
	if v, ok := sample(scrape(t, addr), authority.MetricReady, nil); !ok || v != 0 {
		t.Errorf("%s with the store closed = %v (present %v), want 0", authority.MetricReady, v, ok)
	}
}

// promQLMetric finds the metric names in a PromQL expression: mbot's own,
// the store pools' (go_sql_), the process's and Prometheus's up.
var promQLMetric = regexp.MustCompile(`\b(mbot_[a-z0-9_]+|go_sql_[a-z0-9_]+|go_[a-z0-9_]+|process_[a-z0-9_]+|up)\b`)

// alertRules is the shape of a Prometheus rules file.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// collectExprs gathers every "expr" string of a Grafana dashboard.
func collectExprs(v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "expr" {
				*out = append(*out, s)
			}
			collectExprs(x, out)
		}
	case []any:
		for _, x := range v {
			collectExprs(x, out)
		}
	}
}

// TestDeployMetricNames checks deploy/: the Grafana dashboard is JSON with
// panels, the alert rules are a Prometheus rules file whose every rule has
// an expression, a severity and a summary, and every metric name either
// references is one a real authority exposes, scraped after real joins.
func TestDeployMetricNames(t *testing.T) {
	addr := freeAddr(t)
	env := authoritytest.Start(t, "acme", renewBotsYAML+tokenJoinTokenYAML("runner-1", "secret-1"), "metrics_listen: "+addr+"\n")
	exerciseAuthority(t, env)
	families := scrape(t, addr)
	exposed := func(name string) bool {
		if name == "up" || families[name] != nil {
			return true // up is Prometheus's own, for every target
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && families[base] != nil && families[base].GetType() == dto.MetricType_HISTOGRAM {
				return true
			}
		}
		return false
	}
	// Every metric docs/operations.md names is exposed too.
	for _, name := range []string{authority.MetricJoins, authority.MetricRenewals, authority.MetricJoinDuration, authority.MetricRenewalDuration,
		authority.MetricStoreCallDuration, authority.MetricStoreCallErrors, authority.MetricProofReplays, authority.MetricRateLimited,
		authority.MetricOutboundCalls, authority.MetricOutboundDuration, authority.MetricInstanceLocks, authority.MetricReady, authority.MetricBuildInfo} {
		if !exposed(name) {
			t.Errorf("the authority does not expose %s", name)
		}
	}

	data, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "mbot-authority.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dashboard map[string]any
	if err := json.Unmarshal(data, &dashboard); err != nil {
		t.Fatalf("deploy/grafana/mbot-authority.json is not JSON: %v", err)
	}
	if panels, _ := dashboard["panels"].([]any); len(panels) < 6 || dashboard["title"] == nil || dashboard["uid"] == nil {
		t.Errorf("the dashboard has %d panels, title %v, uid %v", len(panels), dashboard["title"], dashboard["uid"])
	}
	var exprs []string
	collectExprs(dashboard, &exprs)
	if len(exprs) < 10 {
		t.Errorf("the dashboard has %d queries", len(exprs))
	}

	data, err = os.ReadFile(filepath.Join("..", "deploy", "prometheus", "mbot-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules alertRules
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("deploy/prometheus/mbot-alerts.yaml: %v", err)
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert rule %+v lacks a name, expression, severity or summary", r)
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for: %v", r.Alert, err)
				}
			}
			alerts[r.Alert] = true
			exprs = append(exprs, r.Expr)
		}
	}
	// The alerts the operations guide promises.
	for _, name := range []string{"MbotAuthorityDown", "MbotAuthorityNotReady", "MbotJoinRefusalRateHigh", "MbotStoreSlow", "MbotProofReplaysSpike"} {
		if !alerts[name] {
			t.Errorf("deploy/prometheus/mbot-alerts.yaml has no alert %s", name)
		}
	}

	seen := map[string]bool{}
	for _, e := range exprs {
		names := promQLMetric.FindAllString(e, -1)
		if len(names) == 0 {
			t.Errorf("query %q names no metric", e)
		}
		for _, n := range names {
			if !seen[n] && !exposed(n) {
				t.Errorf("%q is not a metric the authority exposes (in %q)", n, e)
			}
			seen[n] = true
		}
	}
	if len(seen) < 15 {
		t.Errorf("deploy/ references only %d metric names: %v", len(seen), seen)
	}
}

// TestOperationsDocConfig loads every yaml block of docs/operations.md
// with the authority's config loader, and checks that the doc names every
// metric the authority exposes under its own prefix.
func TestOperationsDocConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	blocks := 0
	for rest := doc; ; {
		_, after, ok := strings.Cut(rest, "```yaml\n")
		if !ok {
			break
		}
		block, tail, ok := strings.Cut(after, "```")
		if !ok {
			t.Fatal("docs/operations.md: a yaml block is not closed")
		}
		rest = tail
		blocks++
		cfg, err := authority.ParseConfig(filepath.Join(t.TempDir(), "authority.yaml"), []byte(block))
		if err != nil {
			t.Errorf("docs/operations.md yaml block %d: %v", blocks, err)
			continue
		}
		if cfg.MetricsListen == "" {
			t.Errorf("docs/operations.md yaml block %d sets no metrics_listen", blocks)
		}
	}
	if blocks == 0 {
		t.Error("docs/operations.md has no yaml block")
	}
	for _, name := range []string{authority.MetricJoins, authority.MetricRenewals, authority.MetricJoinDuration, authority.MetricRenewalDuration,
		authority.MetricStoreCallDuration, authority.MetricStoreCallErrors, authority.MetricProofReplays, authority.MetricRateLimited,
		authority.MetricOutboundCalls, authority.MetricOutboundDuration, authority.MetricInstanceLocks, authority.MetricReady, authority.MetricBuildInfo} {
		if !strings.Contains(doc, "`"+name+"`") {
			t.Errorf("docs/operations.md does not list %s", name)
		}
	}
}

// TestMetricsListenConfig: metrics_listen must be host:port of its own.
func TestMetricsListenConfig(t *testing.T) {
	for _, c := range []struct{ value, want string }{
		{"9090", `authority.yaml:3: metrics_listen: "9090" is not host:port`},
		{"127.0.0.1:8443", "metrics_listen: 127.0.0.1:8443 is the listen address"},
	} {
		_, err := authority.ParseConfig(filepath.Join(t.TempDir(), "authority.yaml"),
			[]byte("cluster_name: acme\nlisten: 127.0.0.1:8443\nmetrics_listen: \""+c.value+"\"\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("metrics_listen %q: %v, want %q", c.value, err, c.want)
		}
	}
}

// TestNewLogger: --log-format json writes one JSON object per line, with a
// hostile value escaped; an unknown format is refused.
func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := authority.NewLogger(&buf, "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Warn("join refused", "join_token", "evil\n{\"level\":\"ERROR\"}\x1b[31m", "code", "bad_request")
	log.Info("join admitted", "bot", "deployer")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines for 2 records:\n%s", len(lines), buf.String())
	}
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["msg"] == nil || rec["level"] == nil || rec["time"] == nil {
			t.Errorf("line %q: %v %v", line, rec, err)
		}
		if strings.Contains(line, "\x1b") {
			t.Errorf("line %q carries a raw escape", line)
		}
	}
	if _, err := authority.NewLogger(&buf, "xml"); err == nil || !strings.Contains(err.Error(), "text, json") {
		t.Errorf("log format xml: %v", err)
	}
}
