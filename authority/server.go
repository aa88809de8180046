package authority

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/authority/tunnel"
	"github.com/mbot-dev/mbot/authority/verify"
	"github.com/mbot-dev/mbot/identity"
)

// maxBody bounds a request body: a join with every output's keys and a
// proof fits in a few kilobytes.
const maxBody = 256 << 10

// Handler returns the HTTP API (SPEC §3): every route behind the guard
// (guard.go), which bounds what refusals cost on each of them.
func (a *Authority) Handler() http.Handler {
	return a.guarded(a.apiRoutes(), true, remoteKey)
}

// Routes lists the pattern of every route an authority's Handler serves,
// for the tests that flood each one.
func Routes() []string { return (&Authority{}).apiRoutes().patterns }

func (a *Authority) apiRoutes() *routes {
	mux := newRoutes()
	mux.HandleFunc("GET "+identity.PathPing, a.handlePing)
	mux.HandleFunc("POST "+identity.PathJoin, a.handleJoin)
	mux.HandleFunc("POST "+identity.PathJoinChallenge, a.handleJoinChallenge)
	mux.HandleFunc("GET /v1/revocations/{type}", a.handleRevocations)
	mux.HandleFunc("GET /v1/revocations/{type}/{purpose}", a.handleRevocations)
	a.registerRenew(mux)
	a.registerIssuer(mux)
	a.registerAdmin(mux)
	a.registerClusters(mux)
	return mux
}

func (a *Authority) handlePing(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, identity.PingResponse{
		ClusterName: a.cfg.ClusterName,
		Audience:    a.cfg.Audience,
		Version:     Version,
		Methods:     verify.MethodNames(),
	})
}

func (a *Authority) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req identity.JoinRequest
	if err := decodeBody(w, r, &req); err != nil {
		a.refuseBody(w, r, "join", err)
		return
	}
	resp, err := a.Join(r.Context(), &req, r.RemoteAddr)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// decodeBody reads a request body of at most maxBody bytes as JSON into v.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	return json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(v)
}

// refuseBody refuses a request whose body is not JSON of the right shape,
// and records the refusal like any other.
func (a *Authority) refuseBody(w http.ResponseWriter, r *http.Request, event string, decodeErr error) {
	what := map[string]string{"join": "join", "renew": "renewal", "join.challenge": "challenge", exchangeMethod: "exchange"}[event]
	refusal := identity.Errorf(identity.CodeBadRequest, "the request body is not a %s request: %v", what, decodeErr)
	ev := &store.AuditEvent{Event: event, Remote: r.RemoteAddr}
	if event == exchangeMethod {
		ev.Method = exchangeMethod
	}
	a.recordRefusal(r.Context(), ev, refusal)
	switch event {
	case "join":
		a.metrics.join(labelOther, 0, refusal)
	case exchangeMethod:
		a.metrics.join(exchangeMethod, 0, refusal)
	default:
		a.metrics.renewal(0, refusal)
	}
	a.logRefusal(r.Context(), event+" refused", "code", refusal.Code, "reason", ev.Message, "remote", ev.Remote)
	writeError(w, refusal)
}

// logRefusal logs a refusal, unless the guard summarises it (guard.go).
func (a *Authority) logRefusal(ctx context.Context, msg string, args ...any) {
	if !summarised(ctx) {
		a.log.Warn(msg, args...)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	var e *identity.Error
	if !errors.As(err, &e) {
		e = &identity.Error{Code: identity.CodeInternal, Message: "internal error; see the authority's log"}
	}
	if gw, ok := w.(*guardWriter); ok {
		gw.code = e.Code
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	writeJSON(w, e.Code.HTTPStatus(), identity.ErrorResponse{Code: e.Code, Message: e.Message})
}

// errorStatus is the HTTP status writeError answers err with.
func errorStatus(err error) int {
	var e *identity.Error
	if !errors.As(err, &e) {
		return http.StatusInternalServerError
	}
	return e.Code.HTTPStatus()
}

// ServingTLS returns the TLS config the authority serves with. Its serving
// certificate is signed by the TLS CA clients pinned and sent along with it
// so that clients can check it against their pin; a CA rotation that
// reaches update_servers switches it to the new CA, and client
// certificates of either CA are accepted while both are trusted.
func (a *Authority) ServingTLS() (*tls.Config, error) {
	first, err := a.servingConfig(a.CAs())
	if err != nil {
		return nil, err
	}
	a.serving.Store(first)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			cur := a.serving.Load()
			if cas := a.CAs(); cur.cas != cas {
				// Built once per CA change, by whichever handshake sees it first.
				next, err := a.servingConfig(cas)
				if err != nil {
					a.log.Error("signing a serving certificate after a CA change; serving the previous one", "err", err)
					return cur.cfg, nil
				}
				a.serving.CompareAndSwap(cur, next)
				cur = next
			}
			if tunnel.WantsTunnel(hello) {
				return cur.tunnel, nil
			}
			return cur.cfg, nil
		},
	}, nil
}

// servingTLS is the TLS config served for one set of CAs.
type servingTLS struct {
	cas *CAs
	cfg *tls.Config
	// tunnel is served to a leaf's tunnel dial (tunnel.WantsTunnel).
	tunnel *tls.Config
}

// servingConfig signs a fresh serving certificate for the listen address
// and tls_names. The serving key is Ed25519: only mbot clients and tools on
// TLS 1.3 talk to the authority, and it signs each handshake in half the
// time of P-256.
func (a *Authority) servingConfig(cas *CAs) (*servingTLS, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signed, err := cas.SignTLSServer(key.Public(), a.servingNames(), time.Now().AddDate(0, 0, 90))
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(signed.DER)
	if err != nil {
		return nil, err
	}
	clientCAs := x509.NewCertPool()
	for _, root := range cas.TLSRoots() {
		clientCAs.AddCert(root)
	}
	cfg := &tls.Config{
		MinVersion:       tls.VersionTLS12,
		CurvePreferences: identity.TLSCurves,
		// Clients are one-shot processes that never resume a session, so a
		// ticket would be work and a write for nothing.
		SessionTicketsDisabled: true,
		// Joins come without a client certificate; the admin API checks
		// for an admin one (adminName).
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  clientCAs,
		Certificates: []tls.Certificate{{
			Certificate: [][]byte{cert.Raw, cas.servingTLS.Cert.Raw},
			PrivateKey:  key,
			Leaf:        cert,
		}},
	}
	return &servingTLS{cas: cas, cfg: cfg, tunnel: tunnelTLS(cfg)}, nil
}

// servingNames are the names the serving certificate is valid for: the
// listen host (every local name when it listens on all addresses) and tls_names.
func (a *Authority) servingNames() []string {
	host, _, _ := net.SplitHostPort(a.cfg.Listen)
	names := append([]string{}, a.cfg.TLSNames...)
	if u, err := url.Parse(a.cfg.IssuerURL); err == nil && u.Hostname() != "" {
		names = append(names, u.Hostname()) // relying parties fetch discovery there
	}
	if ip := net.ParseIP(host); ip == nil && host != "" {
		names = append(names, host)
	} else if ip != nil && !ip.IsUnspecified() {
		names = append(names, host)
	} else {
		names = append(names, "localhost", "127.0.0.1", "::1")
		if h, err := os.Hostname(); err == nil {
			names = append(names, h)
		}
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, addr := range addrs {
				if ipn, ok := addr.(*net.IPNet); ok && !ipn.IP.IsLoopback() {
					names = append(names, ipn.IP.String())
				}
			}
		}
	}
	return names
}

// Serve listens on the configured address and serves the API until ctx
// ends, then shuts down gracefully. ready, if set, receives the bound address.
func (a *Authority) Serve(ctx context.Context, ready func(addr net.Addr)) error {
	// Each join allocates little and briefly; a larger heap goal makes the
	// collector run a quarter as often for a few more MB of memory.
	debug.SetGCPercent(400)
	tlsCfg, err := a.ServingTLS()
	if err != nil {
		return err
	}
	// Joins are one short request per connection: TCP keepalive probes would
	// never fire, and setting them up costs four syscalls per connection.
	lc := net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{Enable: false}, KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", a.cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	a.setIssuer(ln.Addr())
	addr := ln.Addr()
	a.listening.Store(&addr)
	a.log.Info("authority serving", "cluster", a.cfg.ClusterName, "addr", ln.Addr().String(), "issuer", a.issuerURL(),
		"ca_pin", a.CAs().Pin(), "data_dir", a.cfg.DataDir, "join_tokens", len(a.state.Load().tokens))
	if a.kek == nil {
		a.log.Warn("CA private keys are not sealed: they sit in the clear in data_dir/mbot.db, and a copy or backup of it is enough to mint certificates; "+
			"make a key with `"+GenKEKCommand+"` and set ca_key_encryption.key_file (see docs/ca-keys-and-rotation.md)", "data_dir", a.cfg.DataDir)
	}
	if err := a.ensureAdminIdentity(ctx, ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	if a.cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", a.cfg.MetricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listening on metrics_listen %s: %w", a.cfg.MetricsListen, err)
		}
		a.log.Info("serving /metrics, /healthz and /readyz over plain HTTP; keep metrics_listen on a private network", "metrics_addr", mln.Addr().String())
		go a.serveMetrics(ctx, mln)
	}
	if ready != nil {
		ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(ln, tlsCfg)) }()
	go every(ctx, 10*time.Minute, func(now time.Time) { a.prune(ctx, now) })
	// Joins read changes made by other processes as they come; this reads
	// them when none come, so that a CA rotation step changes the serving
	// certificate of an idle authority too.
	go every(ctx, reloadInterval, func(time.Time) { a.refresh(ctx) })
	// Ended bursts are recorded as they end; Serve records the rest once the server has stopped.
	go every(ctx, burstQuiet/2, func(now time.Time) { a.recordBursts(ctx, now, false) })
	go a.runLeafTunnels(ctx)
	go a.runLeafHub(ctx)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.hub.Close() // hijacked connections are not the server's to close
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	a.recordBursts(shutdownCtx, time.Now(), true)
	a.log.Info("authority stopped")
	return err
}

// every calls f with the time at each tick of interval until ctx ends.
func every(ctx context.Context, interval time.Duration, f func(now time.Time)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			f(now)
		}
	}
}

// prune forgets expired replay records and issued certificates, and audit
// records past the retention.
func (a *Authority) prune(ctx context.Context, now time.Time) {
	if err := a.store.PruneProofs(ctx, now); err != nil {
		a.log.Error("pruning used proofs", "err", err)
	}
	if err := a.store.PruneKeypairChallenges(ctx, now.Add(-verify.Leeway)); err != nil {
		a.log.Error("pruning bound_keypair challenges", "err", err)
	}
	if _, err := a.store.PruneIssuedCertificates(ctx, now); err != nil {
		a.log.Error("pruning expired issued certificates", "err", err)
	}
	n, err := a.store.PruneAudit(ctx, now.Add(-time.Duration(a.cfg.AuditRetention)))
	if err != nil {
		a.log.Error("pruning the audit log", "err", err)
	} else if n > 0 {
		a.log.Info("pruned audit records past the retention", "records", n, "audit_retention", a.cfg.AuditRetention)
	}
}
