// Package tunnel is the reverse tunnel of trusted clusters (SPEC §8): a
// leaf authority dials its root, upgrades one HTTP/1.1 request to the
// tunnel protocol, and from then on the root is an HTTP/2 client on that
// connection and the leaf an HTTP/2 server, so that the root can relay
// exchanges to a leaf that nothing can dial. TLS authenticates both ends:
// the leaf pins the root's CA, the root checks the leaf's client
// certificate against the pin of its leaf_cluster resource.
package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/net/http2"

	"github.com/mbot-dev/mbot/identity"
)

// Keepalive: each side pings the other when the connection has been quiet
// for pingIdle and drops it when a ping is not answered within pingTimeout.
const (
	pingIdle    = 5 * time.Second
	pingTimeout = 5 * time.Second
)

// Redial backoff of the leaf.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// Leaf keeps a leaf's tunnel to one root attached.
type Leaf struct {
	// RootURL and TLS reach the root: TLS pins the root's CA.
	RootURL string
	TLS     *tls.Config
	// Certificate returns a fresh client certificate of the leaf, from
	// its own TLS CA, for each dial.
	Certificate func() (*tls.Certificate, error)
	// Handler serves what the root sends down the tunnel.
	Handler http.Handler
	Log     *slog.Logger
}

// Run attaches the tunnel and attaches it again, with backoff, whenever it
// drops, until ctx ends.
func (l *Leaf) Run(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		start := time.Now()
		err := l.attach(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > maxBackoff {
			backoff = minBackoff // it was up for a while: redial quickly
		}
		l.Log.Warn("tunnel to the root is down; redialing", "root", l.RootURL, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// attach dials the root, upgrades and serves the tunnel until it drops.
func (l *Leaf) attach(ctx context.Context) error {
	u, err := url.Parse(l.RootURL)
	if err != nil {
		return err
	}
	cert, err := l.Certificate()
	if err != nil {
		return err
	}
	cfg := l.TLS.Clone()
	cfg.Certificates = []tls.Certificate{*cert}
	// The ALPN token tells the root to ask for the leaf's certificate; the
	// root answers in HTTP/1.1, which the upgrade needs.
	cfg.NextProtos = []string{identity.TunnelProtocol, "http/1.1"}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return fmt.Errorf("dialing the root: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	req, _ := http.NewRequest(http.MethodGet, u.JoinPath(identity.PathTunnel).String(), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", identity.TunnelProtocol)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := req.Write(conn); err != nil {
		return fmt.Errorf("asking the root for a tunnel: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fmt.Errorf("reading the root's answer to the tunnel request: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var e identity.ErrorResponse
		if json.Unmarshal(body, &e) == nil && e.Code != "" {
			return fmt.Errorf("the root refused the tunnel (%s): %s", e.Code, identity.Printable(e.Message))
		}
		return fmt.Errorf("the root answered %s to the tunnel request", resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	l.Log.Info("tunnel to the root attached", "root", l.RootURL)
	srv := &http2.Server{ReadIdleTimeout: pingIdle, PingTimeout: pingTimeout, MaxConcurrentStreams: MaxStreams}
	srv.ServeConn(&bufferedConn{Conn: conn, r: br}, &http2.ServeConnOpts{Context: ctx, Handler: l.Handler})
	return fmt.Errorf("the tunnel closed")
}

// bufferedConn reads what the upgrade's reader buffered before the conn.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
