package client

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthReport(t *testing.T) {
	now := time.Date(2025, 6, 2, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		set        func(h *health)
		wantCode   int
		wantStatus string
		wantError  string
	}{
		{"starting", func(h *health) {}, 503, HealthNoCredentials, ""},
		{"first join failing", func(h *health) { h.failed(errors.New("cannot reach the authority")) }, 503, HealthNoCredentials, "cannot reach"},
		{"renewed", func(h *health) { h.renewed(now.Add(-time.Minute), now.Add(time.Hour)) }, 200, HealthOK, ""},
		{"resumed from an earlier run", func(h *health) { h.resumed(now.Add(time.Hour)) }, 200, HealthOK, ""},
		{"retrying while valid", func(h *health) {
			h.renewed(now.Add(-time.Minute), now.Add(time.Hour))
			h.failed(errors.New("cannot reach the authority"))
		}, 200, HealthRetrying, "cannot reach"},
		{"expired", func(h *health) {
			h.renewed(now.Add(-2*time.Hour), now.Add(-time.Hour))
			h.failed(errors.New("refused"))
		}, 503, HealthExpired, "refused"},
		{"expires this second", func(h *health) { h.renewed(now.Add(-time.Hour), now) }, 503, HealthExpired, ""},
		{"recovered", func(h *health) {
			h.renewed(now.Add(-time.Hour), now.Add(time.Minute))
			h.failed(errors.New("refused"))
			h.renewed(now, now.Add(time.Hour))
		}, 200, HealthOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHealth()
			h.now = func() time.Time { return now }
			tc.set(h)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
			if rec.Code != tc.wantCode {
				t.Errorf("status code %d, want %d", rec.Code, tc.wantCode)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var fields map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &fields); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			for _, k := range []string{"status", "last_renewal", "not_after", "last_error"} {
				if _, ok := fields[k]; !ok {
					t.Errorf("body lacks %q: %s", k, rec.Body)
				}
			}
			var r HealthReport
			if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
			if r.Status != tc.wantStatus || !strings.Contains(r.LastError, tc.wantError) || (tc.wantError == "") != (r.LastError == "") {
				t.Errorf("report %+v, want status %q and error %q", r, tc.wantStatus, tc.wantError)
			}
		})
	}
}

func TestServeHealth(t *testing.T) {
	h := newHealth()
	h.renewed(time.Now(), time.Now().Add(time.Hour))
	var addr net.Addr
	stop, err := serveHealth("127.0.0.1:0", h, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a net.Addr) { addr = a })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr.String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /healthz: %s", resp.Status)
	}
	for method, path := range map[string]string{http.MethodGet: "/other", http.MethodPost: "/healthz"} {
		req, _ := http.NewRequest(method, "http://"+addr.String()+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("%s %s answered 200", method, path)
		}
	}
	if _, err := serveHealth(addr.String(), h, slog.New(slog.NewTextHandler(io.Discard, nil)), nil); err == nil || !strings.Contains(err.Error(), "--health-addr") {
		t.Errorf("a second endpoint on the same address: %v", err)
	}
}
