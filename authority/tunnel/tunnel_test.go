package tunnel

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// testCert issues a certificate for tmpl from parent (self-signed if nil).
func testCert(t *testing.T, tmpl *x509.Certificate, parent *tls.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	signer, signerKey := tmpl, any(key)
	if parent != nil {
		signer, signerKey = parent.Leaf, parent.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestTunnel: a leaf attaches its tunnel to a root over TLS, the root
// sends requests down it, and when the tunnel drops the leaf attaches it
// again by itself.
func TestTunnel(t *testing.T) {
	ca := testCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, nil)
	server := testCert(t, &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, &ca)
	client := testCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "leaf-eu"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, &ca)

	hub := NewHub()
	attached := make(chan *x509.Certificate, 4)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+identity.PathTunnel, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != identity.TunnelProtocol || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "not a tunnel", http.StatusBadRequest)
			return
		}
		if err := hub.Attach(w, r.TLS.PeerCertificates[0].Subject.CommonName); err != nil {
			t.Errorf("Attach: %v", err)
		}
		attached <- r.TLS.PeerCertificates[0]
	})
	srv := httptest.NewUnstartedServer(mux)
	// As the authority serves: no ALPN of its own, a client certificate
	// asked of tunnel dials.
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{server}, NextProtos: []string{}, ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()
	defer hub.Close()

	roots := x509.NewCertPool()
	roots.AddCert(ca.Leaf)
	leafMux := http.NewServeMux()
	leafMux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) })
	l := &Leaf{RootURL: srv.URL, TLS: &tls.Config{RootCAs: roots}, Handler: leafMux, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Certificate: func() (*tls.Certificate, error) { return &client, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)

	echo := func(leaf string) (string, error) {
		req, _ := http.NewRequest(http.MethodPost, "https://"+leaf+"/echo", bytes.NewReader([]byte("exchange body")))
		resp, err := hub.RoundTrip(leaf, req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	waitAttached := func() {
		t.Helper()
		select {
		case cert := <-attached:
			if cert.Subject.CommonName != "leaf-eu" {
				t.Fatalf("the tunnel presented %q", cert.Subject.CommonName)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the leaf did not attach its tunnel")
		}
	}

	waitAttached()
	if got, err := echo("leaf-eu"); err != nil || got != "exchange body" {
		t.Fatalf("down the tunnel: %q, %v", got, err)
	}
	if !slices.Equal(hub.Leaves(), []string{"leaf-eu"}) || !hub.Statuses()["leaf-eu"].Connected {
		t.Errorf("Leaves = %v, Statuses = %v", hub.Leaves(), hub.Statuses())
	}
	if _, err := echo("leaf-us"); !errors.Is(err, ErrNotAttached) {
		t.Errorf("to a leaf never attached: %v, want ErrNotAttached", err)
	}

	// The tunnel drops: requests fail at once, and the leaf redials.
	hub.Close()
	if _, err := echo("leaf-eu"); !errors.Is(err, ErrNotAttached) {
		t.Errorf("with the tunnel closed: %v, want ErrNotAttached", err)
	}
	if s := hub.Statuses()["leaf-eu"]; s.Connected || s.LastSeen.IsZero() {
		t.Errorf("status with the tunnel closed: %+v, want not connected and a last seen time", s)
	}
	waitAttached()
	if got, err := echo("leaf-eu"); err != nil || got != "exchange body" {
		t.Fatalf("after the leaf redialed: %q, %v", got, err)
	}
}
