package tunnel

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/mbot-dev/mbot/identity"
)

// ErrNotAttached is returned for a leaf whose tunnel is not attached.
var ErrNotAttached = errors.New("the leaf's tunnel is not attached")

// Hub is the root's end of the leaves' tunnels.
type Hub struct {
	mu     sync.Mutex
	leaves map[string]*attached
	// lastSeen is when each leaf last answered, attached or not.
	lastSeen map[string]time.Time
}

type attached struct {
	cc   *http2.ClientConn
	conn net.Conn
}

// NewHub returns a hub without tunnels.
func NewHub() *Hub {
	return &Hub{leaves: map[string]*attached{}, lastSeen: map[string]time.Time{}}
}

// WantsTunnel says whether a TLS client hello is a leaf's tunnel dial,
// which must present a client certificate of the leaf's own CA.
func WantsTunnel(hello *tls.ClientHelloInfo) bool {
	return slices.Contains(hello.SupportedProtos, identity.TunnelProtocol)
}

// Attach takes over the connection of an authenticated tunnel request of
// leaf: it answers 101 and becomes an HTTP/2 client on the connection. An
// older tunnel of the same leaf is closed.
func (h *Hub) Attach(w http.ResponseWriter, leaf string) error {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return errors.New("the connection cannot be taken over")
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Time{}) // the server's read and write timeouts are for requests
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + identity.TunnelProtocol + "\r\n\r\n"); err != nil {
		conn.Close()
		return err
	}
	if err := brw.Flush(); err != nil {
		conn.Close()
		return err
	}
	var c net.Conn = conn
	if brw.Reader.Buffered() > 0 {
		c = &bufferedConn{Conn: conn, r: brw.Reader}
	}
	t := &http2.Transport{ReadIdleTimeout: pingIdle, PingTimeout: pingTimeout}
	cc, err := t.NewClientConn(c)
	if err != nil {
		conn.Close()
		return err
	}
	h.mu.Lock()
	old := h.leaves[leaf]
	h.leaves[leaf] = &attached{cc: cc, conn: conn}
	h.lastSeen[leaf] = time.Now()
	h.mu.Unlock()
	if old != nil {
		old.conn.Close()
	}
	return nil
}

// RoundTrip sends req to leaf down its tunnel.
func (h *Hub) RoundTrip(leaf string, req *http.Request) (*http.Response, error) {
	h.mu.Lock()
	a := h.leaves[leaf]
	h.mu.Unlock()
	if a == nil || !a.cc.CanTakeNewRequest() {
		h.drop(leaf, a)
		return nil, ErrNotAttached
	}
	resp, err := a.cc.RoundTrip(req)
	if err != nil {
		if a.cc.State().Closed {
			h.drop(leaf, a)
		}
		return nil, err
	}
	h.mu.Lock()
	h.lastSeen[leaf] = time.Now()
	h.mu.Unlock()
	return resp, nil
}

// drop forgets a's tunnel of leaf if it is still the current one.
func (h *Hub) drop(leaf string, a *attached) {
	if a == nil {
		return
	}
	h.mu.Lock()
	if h.leaves[leaf] == a {
		delete(h.leaves, leaf)
	}
	h.mu.Unlock()
	a.conn.Close()
}

// Status is one leaf's tunnel as the hub sees it.
type Status struct {
	Connected bool
	LastSeen  time.Time
}

// Statuses returns every leaf the hub has seen; closed tunnels are dropped.
func (h *Hub) Statuses() map[string]Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]Status{}
	for leaf, seen := range h.lastSeen {
		a := h.leaves[leaf]
		if a != nil && a.cc.State().Closed {
			delete(h.leaves, leaf)
			a.conn.Close()
			a = nil
		}
		out[leaf] = Status{Connected: a != nil, LastSeen: seen}
	}
	return out
}

// Leaves returns the leaves attached now.
func (h *Hub) Leaves() []string {
	var out []string
	for leaf, s := range h.Statuses() {
		if s.Connected {
			out = append(out, leaf)
		}
	}
	slices.Sort(out)
	return out
}

// Close closes every tunnel.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for leaf, a := range h.leaves {
		a.conn.Close()
		delete(h.leaves, leaf)
	}
}
