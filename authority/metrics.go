package authority

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The authority's metrics live in a registry of its own (not Prometheus's
// global one), served at /metrics on metrics_listen. Every label value
// comes from a fixed set: a method or refusal code the authority does not
// know is counted as "other", so that no client can grow the series.

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
	metricStorePoolPrefix    = "go_sql_" // collectors.NewDBStatsCollector, by db_name
	labelOther               = "other"
	resultAdmitted, resultOK = "admitted", "ok"
)

// latencyBuckets span a join served from memory (a millisecond) to one
// waiting on a slow issuer or store (seconds).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// metrics are the authority's counters and histograms.
type metrics struct {
	registry *prometheus.Registry

	joins, renewals            *prometheus.CounterVec
	joinSeconds                *prometheus.HistogramVec
	renewSeconds               prometheus.Histogram
	storeSeconds               *prometheus.HistogramVec
	storeErrors                *prometheus.CounterVec
	replays, limited, locks    prometheus.Counter
	outboundCalls              *prometheus.CounterVec
	outboundSeconds            *prometheus.HistogramVec
	knownMethods, knownCodes   map[string]bool
	knownOperations, knownCall map[string]bool
	// The series every admitted join touches, resolved once: a label
	// lookup hashes its values on each call.
	admitted    map[string]prometheus.Counter  // by method
	methodTimes map[string]prometheus.Observer // by method
	storeTimes  map[string]prometheus.Observer // by operation
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
	"delete_resource", "list_audit", "prune_proofs", "prune_audit", "unlock_bot", "unlock_instance", "bot_instances",
	"reload_locks", "ping",
}

// Outbound calls made to judge a proof (verify.Env.Observe).
var outboundCalls = []string{verify.CallSTS, verify.CallTokenReview, verify.CallOIDCDiscovery, verify.CallJWKS}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricJoins,
			Help: "Join requests by join method, result (admitted, refused) and refusal code (none when admitted)."},
			[]string{"method", "result", "code"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRenewals,
			Help: "Renewals of token-joined identities by result (admitted, refused) and refusal code (none when admitted)."},
			[]string{"result", "code"}),
		joinSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricJoinDuration,
			Help: "Time to answer a join, from the decoded request to the signed and recorded answer, by join method.", Buckets: latencyBuckets},
			[]string{"method"}),
		renewSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricRenewalDuration,
			Help: "Time to answer a renewal.", Buckets: latencyBuckets}),
		storeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricStoreCallDuration,
			Help: "Time of each store call, by operation.", Buckets: latencyBuckets}, []string{"operation"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricStoreCallErrors,
			Help: "Store calls that failed, by operation (a refused replay or stale generation is an answer, not a failure)."}, []string{"operation"}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricProofReplays,
			Help: "Joins refused because their proof was already used (proof_replayed)."}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricRateLimited,
			Help: "Requests answered rate_limited without being read, from addresses refused too often."}),
		locks: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricInstanceLocks,
			Help: "Bot instances locked because a stale certificate generation of theirs was presented (a copied identity)."}),
		outboundCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricOutboundCalls,
			Help: "Calls to other services to verify proofs (sts, tokenreview, oidc_discovery, jwks), by result (ok, error)."},
			[]string{"call", "result"}),
		outboundSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricOutboundDuration,
			Help: "Time of each call to another service to verify proofs.", Buckets: latencyBuckets}, []string{"call"}),
		knownMethods: map[string]bool{}, knownCodes: map[string]bool{}, knownOperations: map[string]bool{}, knownCall: map[string]bool{},
		admitted: map[string]prometheus.Counter{}, methodTimes: map[string]prometheus.Observer{}, storeTimes: map[string]prometheus.Observer{},
	}
	for _, name := range append(verify.MethodNames(), exchangeMethod, labelOther) {
		m.knownMethods[name] = true
		m.admitted[name] = m.joins.WithLabelValues(name, resultAdmitted, "none")
		m.methodTimes[name] = m.joinSeconds.WithLabelValues(name)
	}
	for _, c := range refusalCodes {
		m.knownCodes[string(c)] = true
	}
	// Series that alerts and dashboards divide by or alert on exist from
	// the start, at zero, rather than from their first event.
	for _, op := range storeOperations {
		m.knownOperations[op] = true
		m.storeErrors.WithLabelValues(op)
		m.storeTimes[op] = m.storeSeconds.WithLabelValues(op)
	}
	for _, c := range outboundCalls {
		m.knownCall[c] = true
		m.outboundCalls.WithLabelValues(c, resultOK)
		m.outboundCalls.WithLabelValues(c, "error")
	}
	m.renewals.WithLabelValues(resultAdmitted, "none")
	m.registry.MustRegister(m.joins, m.renewals, m.joinSeconds, m.renewSeconds, m.storeSeconds, m.storeErrors,
		m.replays, m.limited, m.locks, m.outboundCalls, m.outboundSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricBuildInfo, Help: "Always 1; the version label is the authority's.",
			ConstLabels: prometheus.Labels{"version": Version}}, func() float64 { return 1 }))
	return m
}

// watch adds what needs the opened authority: the store's connection pools
// and readiness.
func (m *metrics) watch(a *Authority, pools map[string]*sql.DB) {
	for name, db := range pools {
		m.registry.MustRegister(collectors.NewDBStatsCollector(db, name))
	}
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricReady,
		Help: "1 when the authority is ready to serve joins (store reachable, CAs loaded), as /readyz answers; 0 otherwise."},
		func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
			defer cancel()
			if a.notReady(ctx) != "" {
				return 0
			}
			return 1
		}))
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
	m.methodTimes[method].Observe(took.Seconds())
	if err == nil {
		m.admitted[method].Inc()
		return
	}
	result, code := m.outcome(err)
	m.joins.WithLabelValues(method, result, code).Inc()
	if code == string(identity.CodeProofReplayed) {
		m.replays.Inc()
	}
}

// renewal counts one answered renewal; err is its refusal, or nil.
func (m *metrics) renewal(took time.Duration, err error) {
	result, code := m.outcome(err)
	m.renewals.WithLabelValues(result, code).Inc()
	m.renewSeconds.Observe(took.Seconds())
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
	m.storeTimes[op].Observe(time.Since(start).Seconds())
	if err != nil {
		m.storeErrors.WithLabelValues(op).Inc()
	}
}

// outbound records one call to another service (verify.Env.Observe).
func (m *metrics) outbound(call string, took time.Duration, err error) {
	call = m.label(m.knownCall, call)
	result := resultOK
	if err != nil {
		result = "error"
	}
	m.outboundCalls.WithLabelValues(call, result).Inc()
	m.outboundSeconds.WithLabelValues(call).Observe(took.Seconds())
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
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.registry, promhttp.HandlerOpts{
		ErrorLog: slogErrorLogger{a}, MaxRequestsInFlight: 4, Timeout: 10 * time.Second}))
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

// slogErrorLogger is promhttp's error log, into the authority's log.
type slogErrorLogger struct{ a *Authority }

func (l slogErrorLogger) Println(v ...any) {
	l.a.log.Error("serving /metrics", "err", identity.Truncate(fmt.Sprint(v...), 512))
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
