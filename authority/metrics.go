package authority

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

// The authority's metrics live in a set of their own (not the library's
// global one), served at /metrics on metrics_listen. Every label value
// comes from a fixed set: a method or refusal code the authority does not
// know is counted as "other", so that no client can grow the series.
//
// github.com/VictoriaMetrics/metrics rather than prometheus/client_golang:
// the latter links protobuf, client_model and procfs, whose package
// initializers run in every mbot process (mbot issue, mbot --version).

// Metric names, as docs/operations.md lists them and deploy/ uses them.
const (
	MetricJoins              = "mbot_joins_total"
	MetricRenewals           = "mbot_renewals_total"
	MetricJoinDuration       = "mbot_join_duration_seconds"
	MetricRenewalDuration    = "mbot_renewal_duration_seconds"
	MetricStoreCallDuration  = "mbot_store_call_duration_seconds"
	MetricStoreCallErrors    = "mbot_store_call_errors_total"
	MetricProofReplays       = "mbot_proof_replays_total"
	MetricRateLimited        = "mbot_rate_limited_requests_total"
	MetricOutboundCalls      = "mbot_outbound_calls_total"
	MetricOutboundDuration   = "mbot_outbound_call_duration_seconds"
	MetricInstanceLocks      = "mbot_bot_instance_locks_total"
	MetricReady              = "mbot_ready"
	MetricBuildInfo          = "mbot_build_info"
	metricStorePoolPrefix    = "go_sql_" // the names client_golang's DBStatsCollector used, by db_name
	labelOther               = "other"
	resultAdmitted, resultOK = "admitted", "ok"
)

// latencyBuckets span a join served from memory (a millisecond) to one
// waiting on a slow issuer or store (seconds).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// metrics are the authority's counters and histograms.
type metrics struct {
	set *vm.Set

	renewSeconds               *vm.PrometheusHistogram
	replays, limited, locks    *vm.Counter
	knownMethods, knownCodes   map[string]bool
	knownOperations, knownCall map[string]bool
	// The series every admitted join and store call touches, resolved
	// once: a lookup by name formats and hashes it on each call.
	admitted    map[string]*vm.Counter             // by method
	methodTimes map[string]*vm.PrometheusHistogram // by method
	storeTimes  map[string]*vm.PrometheusHistogram // by operation
	storeErrors map[string]*vm.Counter             // by operation
}

// refusalCodes are the codes a join or renewal may be refused with.
var refusalCodes = []identity.ErrorCode{
	identity.CodeBadRequest, identity.CodeUnknownJoinToken, identity.CodeMethodMismatch, identity.CodeProofInvalid,
	identity.CodeProofExpired, identity.CodeProofNotYetValid, identity.CodeWrongIssuer, identity.CodeWrongAudience,
	identity.CodeClaimMissing, identity.CodeRuleMismatch, identity.CodeProofReplayed, identity.CodeRoleDenied,
	identity.CodeIssuerUnavailable, identity.CodeInternal, identity.CodeIdentityRequired, identity.CodeRenewalRefused,
	identity.CodeBotLocked, identity.CodeInstanceLocked, identity.CodeUnsupportedKey, identity.CodeRateLimited,
	identity.CodeKeypairMismatch, identity.CodeJoinTokenLocked,
	// A leaf's exchanges (trusted clusters) are counted as joins of method "exchange".
	identity.CodeExchangeInvalid, identity.CodeExchangeExpired, identity.CodeRootIdentityExpired, identity.CodeUnknownRoot,
	identity.CodeTrustDisabled, identity.CodeRoleUnmapped, identity.CodeRootUnavailable,
	// The store (PostgreSQL) could not be reached: 503 with Retry-After.
	identity.CodeStoreUnavailable,
}

// storeOperations are the store calls timed (timedStore), by name.
var storeOperations = []string{
	"record_join", "audit", "start_chain", "advance_generation", "resources_version", "resources", "put_resources",
	"delete_resource", "list_audit", "scan_audit", "prune_proofs", "prune_audit", "unlock_bot", "unlock_instance", "bot_instances",
	"reload_locks", "versions", "ping",
}

// Outbound calls made to judge a proof (verify.Env.Observe).
var outboundCalls = []string{verify.CallSTS, verify.CallTokenReview, verify.CallOIDCDiscovery, verify.CallJWKS}

// labelEscaper escapes a label value as the text exposition format wants.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// series names one series: the metric name and its labels, given as
// name, value pairs, in the form the metrics library registers.
func series(name string, labels ...string) string {
	if len(labels) == 0 {
		return name
	}
	var b strings.Builder
	b.WriteString(name)
	for i := 0; i+1 < len(labels); i += 2 {
		if i == 0 {
			b.WriteByte('{')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(labels[i])
		b.WriteString(`="`)
		b.WriteString(labelEscaper.Replace(labels[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

func newMetrics() *metrics {
	// TYPE lines, so that a scraper sees histograms and counters, not
	// untyped samples (the library's switch is process-wide).
	vm.ExposeMetadata(true)
	set := vm.NewSet()
	m := &metrics{
		set:          set,
		renewSeconds: set.NewPrometheusHistogramExt(MetricRenewalDuration, latencyBuckets),
		replays:      set.NewCounter(MetricProofReplays),
		limited:      set.NewCounter(MetricRateLimited),
		locks:        set.NewCounter(MetricInstanceLocks),
		knownMethods: map[string]bool{}, knownCodes: map[string]bool{}, knownOperations: map[string]bool{}, knownCall: map[string]bool{},
		admitted: map[string]*vm.Counter{}, methodTimes: map[string]*vm.PrometheusHistogram{},
		storeTimes: map[string]*vm.PrometheusHistogram{}, storeErrors: map[string]*vm.Counter{},
	}
	for _, name := range append(verify.MethodNames(), exchangeMethod, labelOther) {
		m.knownMethods[name] = true
		m.admitted[name] = set.NewCounter(series(MetricJoins, "method", name, "result", resultAdmitted, "code", "none"))
		m.methodTimes[name] = set.NewPrometheusHistogramExt(series(MetricJoinDuration, "method", name), latencyBuckets)
	}
	for _, c := range refusalCodes {
		m.knownCodes[string(c)] = true
	}
	// Series that alerts and dashboards divide by or alert on exist from
	// the start, at zero, rather than from their first event.
	for _, op := range storeOperations {
		m.knownOperations[op] = true
		m.storeErrors[op] = set.NewCounter(series(MetricStoreCallErrors, "operation", op))
		m.storeTimes[op] = set.NewPrometheusHistogramExt(series(MetricStoreCallDuration, "operation", op), latencyBuckets)
	}
	for _, c := range outboundCalls {
		m.knownCall[c] = true
		set.NewCounter(series(MetricOutboundCalls, "call", c, "result", resultOK))
		set.NewCounter(series(MetricOutboundCalls, "call", c, "result", "error"))
	}
	set.NewCounter(series(MetricRenewals, "result", resultAdmitted, "code", "none"))
	set.NewGauge(series(MetricBuildInfo, "version", Version), func() float64 { return 1 })
	return m
}

// dbStats are the store pool's gauges, by the names client_golang's
// DBStatsCollector gave them (deploy/ and operators' queries use them),
// read from sql.DBStats at scrape time.
var dbStats = []struct {
	name  string
	value func(sql.DBStats) float64
}{
	{"max_open_connections", func(s sql.DBStats) float64 { return float64(s.MaxOpenConnections) }},
	{"open_connections", func(s sql.DBStats) float64 { return float64(s.OpenConnections) }},
	{"in_use_connections", func(s sql.DBStats) float64 { return float64(s.InUse) }},
	{"idle_connections", func(s sql.DBStats) float64 { return float64(s.Idle) }},
	{"wait_count_total", func(s sql.DBStats) float64 { return float64(s.WaitCount) }},
	{"wait_duration_seconds_total", func(s sql.DBStats) float64 { return s.WaitDuration.Seconds() }},
	{"max_idle_closed_total", func(s sql.DBStats) float64 { return float64(s.MaxIdleClosed) }},
	{"max_idle_time_closed_total", func(s sql.DBStats) float64 { return float64(s.MaxIdleTimeClosed) }},
	{"max_lifetime_closed_total", func(s sql.DBStats) float64 { return float64(s.MaxLifetimeClosed) }},
}

// watch adds what needs the opened authority: the store's connection pools
// and readiness.
func (m *metrics) watch(a *Authority, pools map[string]*sql.DB) {
	for name, db := range pools {
		for _, st := range dbStats {
			value := st.value
			m.set.NewGauge(series(metricStorePoolPrefix+st.name, "db_name", name), func() float64 { return value(db.Stats()) })
		}
	}
	m.set.NewGauge(MetricReady, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		defer cancel()
		if a.notReady(ctx) != "" {
			return 0
		}
		return 1
	})
}

func (m *metrics) label(known map[string]bool, v string) string {
	if known[v] {
		return v
	}
	return labelOther
}

// join counts one answered join; err is its refusal, or nil.
func (m *metrics) join(method string, took time.Duration, err error) {
	method = m.label(m.knownMethods, method)
	m.methodTimes[method].Update(took.Seconds())
	if err == nil {
		m.admitted[method].Inc()
		return
	}
	result, code := m.outcome(err)
	m.set.GetOrCreateCounter(series(MetricJoins, "method", method, "result", result, "code", code)).Inc()
	if code == string(identity.CodeProofReplayed) {
		m.replays.Inc()
	}
}

// renewal counts one answered renewal; err is its refusal, or nil.
func (m *metrics) renewal(took time.Duration, err error) {
	result, code := m.outcome(err)
	m.set.GetOrCreateCounter(series(MetricRenewals, "result", result, "code", code)).Inc()
	m.renewSeconds.Update(took.Seconds())
}

func (m *metrics) outcome(err error) (result, code string) {
	if err == nil {
		return resultAdmitted, "none"
	}
	var refusal *identity.Error
	if !errors.As(err, &refusal) {
		return "refused", string(identity.CodeInternal)
	}
	return "refused", m.label(m.knownCodes, string(refusal.Code))
}

// storeCall records one store call that started at start.
func (m *metrics) storeCall(op string, start time.Time, err error) {
	op = m.label(m.knownOperations, op)
	m.storeTimes[op].UpdateDuration(start)
	if err != nil {
		m.storeErrors[op].Inc()
	}
}

// outbound records one call to another service (verify.Env.Observe).
func (m *metrics) outbound(call string, took time.Duration, err error) {
	call = m.label(m.knownCall, call)
	result := resultOK
	if err != nil {
		result = "error"
	}
	m.set.GetOrCreateCounter(series(MetricOutboundCalls, "call", call, "result", result)).Inc()
	m.set.GetOrCreatePrometheusHistogramExt(series(MetricOutboundDuration, "call", call), latencyBuckets).Update(took.Seconds())
}

// scrapesInFlight bounds concurrent scrapes: each one pings the store
// (mbot_ready).
const scrapesInFlight = 4

// handler serves the Prometheus text format: the authority's set, then the
// Go runtime's and the process's metrics.
func (m *metrics) handler(a *Authority) http.Handler {
	inFlight := make(chan struct{}, scrapesInFlight)
	serve := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case inFlight <- struct{}{}:
			defer func() { <-inFlight }()
		default:
			http.Error(w, "too many concurrent scrapes", http.StatusServiceUnavailable)
			return
		}
		var buf bytes.Buffer
		m.set.WritePrometheus(&buf)
		vm.WriteProcessMetrics(&buf)
		vm.WriteFDMetrics(&buf)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if _, err := w.Write(buf.Bytes()); err != nil {
			a.log.Error("serving /metrics", "err", identity.Truncate(err.Error(), 512))
		}
	})
	return http.TimeoutHandler(serve, 10*time.Second, "scraping /metrics took too long")
}

// readyTimeout bounds the store check of /readyz and mbot_ready.
const readyTimeout = 2 * time.Second

// notReady returns why the authority cannot serve joins now, or "".
func (a *Authority) notReady(ctx context.Context) string {
	if cas := a.CAs(); cas == nil || cas.TLSCert == nil || cas.SSHUser == nil || cas.SSHHost == nil {
		return "the CAs are not loaded"
	}
	if err := a.store.Ping(ctx); err != nil {
		return "the store does not answer: " + identity.Truncate(err.Error(), 200)
	}
	return ""
}

// MetricsHandler serves /metrics (Prometheus text format), /healthz
// (the process is up) and /readyz (store reachable and CAs loaded; 503
// with the reason otherwise). It is plain HTTP, meant for a private
// network: it shows counts and latencies, never a name or a secret.
func (a *Authority) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metrics.handler(a))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if why := a.notReady(ctx); why != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: "+why)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// serveMetrics serves MetricsHandler on metrics_listen until ctx ends.
func (a *Authority) serveMetrics(ctx context.Context, ln net.Listener) {
	srv := &http.Server{Handler: a.MetricsHandler(), ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 15 * time.Second,
		IdleTimeout: 60 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("metrics listener stopped", "addr", ln.Addr().String(), "err", err)
	}
}
