package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Values of HealthReport.Status.
const (
	// HealthOK: the credentials are valid and the last renewal succeeded.
	HealthOK = "ok"
	// HealthRetrying: the credentials are still valid, but the last renewal
	// failed; it is being retried.
	HealthRetrying = "retrying"
	// HealthExpired: the credentials have expired and renewal keeps failing.
	HealthExpired = "expired"
	// HealthNoCredentials: no join has succeeded yet.
	HealthNoCredentials = "no_credentials"
)

// HealthReport is the JSON body of mbot start's /healthz. It answers 200
// while the credentials are valid (ok, retrying) and 503 otherwise
// (expired, no_credentials).
type HealthReport struct {
	Status string `json:"status"`
	// LastRenewal is when this process last wrote fresh credentials.
	LastRenewal *time.Time `json:"last_renewal"`
	// NotAfter is when the earliest-expiring output expires.
	NotAfter *time.Time `json:"not_after"`
	// LastError is why the last attempt failed; empty after a success.
	LastError string `json:"last_error"`
	// ReloadFailures counts the outputs' reload commands that failed since
	// the daemon started (reload: in mbot.yaml); it never goes down.
	ReloadFailures int `json:"reload_failures"`
}

// health is the daemon's state as /healthz reports it.
type health struct {
	mu                    sync.Mutex
	lastRenewal, notAfter time.Time
	lastError             string
	reloadFailures        int
	now                   func() time.Time
}

// reloadFailed counts n failed reload commands.
func (h *health) reloadFailed(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reloadFailures += n
}

func newHealth() *health { return &health{now: time.Now} }

// renewed records fresh credentials valid until notAfter.
func (h *health) renewed(at, notAfter time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastRenewal, h.notAfter, h.lastError = at, notAfter, ""
}

// resumed records credentials of an earlier run, valid until notAfter.
func (h *health) resumed(notAfter time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.notAfter = notAfter
}

// failed records a failed attempt; the credentials stay what they were.
func (h *health) failed(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastError = err.Error()
}

// validUntil is when the current credentials expire (zero if there are none).
func (h *health) validUntil() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.notAfter
}

func (h *health) report() (HealthReport, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := HealthReport{LastError: h.lastError, ReloadFailures: h.reloadFailures}
	if !h.lastRenewal.IsZero() {
		t := h.lastRenewal.UTC()
		r.LastRenewal = &t
	}
	if !h.notAfter.IsZero() {
		t := h.notAfter.UTC()
		r.NotAfter = &t
	}
	switch {
	case h.notAfter.IsZero():
		return withStatus(r, HealthNoCredentials), http.StatusServiceUnavailable
	case !h.now().Before(h.notAfter):
		return withStatus(r, HealthExpired), http.StatusServiceUnavailable
	case h.lastError != "":
		return withStatus(r, HealthRetrying), http.StatusOK
	}
	return withStatus(r, HealthOK), http.StatusOK
}

func withStatus(r HealthReport, status string) HealthReport {
	r.Status = status
	return r
}

func (h *health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	r, code := h.report()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(r)
}

// serveHealth serves h as GET /healthz on addr, plain HTTP, until stop is
// called. It reports nothing secret, but is meant for loopback: a local
// supervisor or monitoring agent.
func serveHealth(addr string, h http.Handler, log *slog.Logger, listening func(net.Addr)) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--health-addr (MBOT_HEALTH_ADDR) %s: %w", addr, err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
		log.Warn("the health endpoint listens beyond loopback; it needs no authentication, so keep it on 127.0.0.1 unless a probe elsewhere needs it", "addr", ln.Addr().String())
	}
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health endpoint stopped", "err", err)
		}
	}()
	log.Info("health endpoint listening", "url", "http://"+ln.Addr().String()+"/healthz")
	if listening != nil {
		listening(ln.Addr())
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}
