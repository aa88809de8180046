package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/mbot-dev/mbot/identity"
)

// ErrNotAttached is returned for a leaf whose tunnel is not attached.
var ErrNotAttached = errors.New("the leaf's tunnel is not attached")

// ErrBusy is returned when a leaf's tunnel carries MaxInFlight requests
// and MaxQueued more wait, or one waited QueueWait: the tunnel is healthy,
// only full.
var ErrBusy = errors.New("the leaf's tunnel is full")

// The root sends at most MaxInFlight requests down one tunnel at once,
// well below the leaf's HTTP/2 stream limit (MaxStreams), so that a flood
// of relays never meets the limit (which is not a dead tunnel). Up to
// MaxQueued more wait, each at most QueueWait, for a slot; beyond that a
// request is refused with ErrBusy at once.
const (
	MaxStreams  = 250
	MaxInFlight = 100
	MaxQueued   = 400
	QueueWait   = 5 * time.Second
)

// Hub is the root's end of the leaves' tunnels.
type Hub struct {
	mu     sync.Mutex
	leaves map[string]*attached
	// lastSeen is when each leaf last answered, attached or not.
	lastSeen map[string]time.Time
}

type attached struct {
	cc     *http2.ClientConn
	conn   net.Conn
	slots  chan struct{} // one per request in flight
	queued atomic.Int32  // requests waiting for a slot
}

// acquire takes a slot for one request, waiting in the queue if the
// tunnel is full, and returns its release.
func (a *attached) acquire(ctx context.Context) (func(), error) {
	release := sync.OnceFunc(func() { <-a.slots })
	select {
	case a.slots <- struct{}{}:
		return release, nil
	default:
	}
	if a.queued.Add(1) > MaxQueued {
		a.queued.Add(-1)
		return nil, ErrBusy
	}
	defer a.queued.Add(-1)
	wait := time.NewTimer(QueueWait)
	defer wait.Stop()
	select {
	case a.slots <- struct{}{}:
		return release, nil
	case <-wait.C:
		return nil, ErrBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// closing reports whether the tunnel is closed or going away (a GOAWAY,
// a failed ping): only then is it dropped, never for being full.
func (a *attached) closing() bool {
	st := a.cc.State()
	return st.Closed || st.Closing
}

// releasingBody frees the request's slot when its answer has been read.
type releasingBody struct {
	io.ReadCloser
	release func()
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
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
	h.leaves[leaf] = &attached{cc: cc, conn: conn, slots: make(chan struct{}, MaxInFlight)}
	h.lastSeen[leaf] = time.Now()
	h.mu.Unlock()
	if old != nil {
		old.conn.Close()
	}
	return nil
}

// RoundTrip sends req to leaf down its tunnel, waiting for a slot when
// MaxInFlight requests are in flight (ErrBusy when too many wait). The
// response's body must be closed, which frees the slot.
func (h *Hub) RoundTrip(leaf string, req *http.Request) (*http.Response, error) {
	h.mu.Lock()
	a := h.leaves[leaf]
	h.mu.Unlock()
	if a == nil || a.closing() {
		h.drop(leaf, a)
		return nil, ErrNotAttached
	}
	release, err := a.acquire(req.Context())
	if err != nil {
		return nil, err
	}
	resp, err := a.cc.RoundTrip(req)
	if err != nil {
		release()
		if a.closing() {
			h.drop(leaf, a)
		}
		return nil, err
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: release}
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
		if a != nil && a.closing() {
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
