package authority

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// Every request to the API goes through one guard (Handler wraps the whole
// mux in it, and the tunnel's mux on a leaf in another), so that what a
// refusal costs is bounded on every route, those added later included:
//
//   - A request takes a token from its address's bucket (refusals.go) when
//     it is admitted, before it is read; an answer below 400 gives it back.
//     So an address is looked at and recorded one request at a time for at
//     most refusalBurst refusals, then refusalRate a second, however many
//     requests it sends at once.
//   - A request that finds the bucket empty is still served: a valid proof
//     is always admitted, from any address. It waits for one of
//     limitedSlots shared by every limited address (the work of refusals
//     under a global cap); if it is refused, it is not recorded or logged
//     one by one but counted into its address's burst, summarised in one
//     audit record (recordBursts), and its answer is paced: sent in turn,
//     at most limitedAnswers a second over all addresses (so are the
//     rate_limited answers to requests that found no slot). A flood waits
//     for its answers, so what it makes the authority read, verify and
//     answer is capped for the whole authority, however many connections
//     or addresses it sends from, and the CPU goes to the requests that
//     are admitted.
//   - A refusal with a 5xx (the authority's own trouble, or a leaf's)
//     draws like any other but is never paced.
//
// Handlers record refusals with recordRefusal or auditAdmin and log them
// with logRefusal: those read the request's state and leave out what the
// guard summarises.

// limitedSlots is how many requests from addresses with an empty bucket
// are served at once, over all addresses (each reads at most maxBody):
// enough for the valid jobs of a fleet behind one NAT address besides the
// flood's few in service, since a flood's answers are paced. maxLimited
// bounds those waiting for a slot or for their answer's turn (each holds a
// connection and a goroutine), and limitedWait how long one waits for a
// slot. A request beyond them is answered rate_limited without being read.
var limitedSlots = max(64, 32*runtime.GOMAXPROCS(0))

const (
	maxLimited  = 1024
	limitedWait = 5 * time.Second
	// limitedAnswers is how many refusals of limited addresses are
	// answered a second, over all addresses: a flood over any number of
	// connections gets that many answers a second, not the authority's CPU.
	limitedAnswers = 15
)

// guard is the middleware every API request goes through.
type guard struct {
	a    *Authority
	next http.Handler
	// key names what a request is counted by: its address (refusalKey).
	key func(r *http.Request) string
	// charge is false on a leaf's tunnel, whose requests are all the
	// root's: they are never held back or turned away, but their refusals
	// are recorded one by one only within the bucket, like any others.
	charge bool
}

// limiter is the state of the limited path shared by every guard.
type limiter struct {
	slots   chan struct{}
	waiting atomic.Int64
	mu      sync.Mutex
	next    time.Time // the earliest time the next paced answer may be sent
}

func newLimiter() *limiter { return &limiter{slots: make(chan struct{}, limitedSlots)} }

// requestState is what handlers learn from the guard through the request's context.
type requestState struct {
	// limited: the address's bucket was empty; refusals are summarised.
	limited bool
	// code is the code of the refusal written, for the summary.
	code identity.ErrorCode
}

type requestStateKey struct{}

func stateOf(ctx context.Context) *requestState {
	st, _ := ctx.Value(requestStateKey{}).(*requestState)
	return st
}

// summarised reports whether a refusal of the request of ctx is counted
// into its address's burst instead of being recorded and logged one by one.
func summarised(ctx context.Context) bool {
	st := stateOf(ctx)
	return st != nil && st.limited
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a := g.a
	key := g.key(r)
	took, wait, evicted := a.refusals.take(key, time.Now())
	if evicted != nil {
		a.recordBurst(r.Context(), *evicted)
	}
	st := &requestState{limited: !took}
	gw := &guardWriter{ResponseWriter: w}
	r = r.WithContext(context.WithValue(r.Context(), requestStateKey{}, st))
	if st.limited && g.charge {
		release, ok := a.limiter.enter(r.Context())
		if !ok {
			a.metrics.limited.Inc()
			a.refusals.count(key, time.Now(), burstDropped, identity.CodeRateLimited, routeOf(r, g))
			a.limiter.pace(r.Context())
			writeError(w, rateLimited(key, wait))
			return
		}
		g.next.ServeHTTP(gw, r)
		release() // before the answer is held back
	} else {
		g.next.ServeHTTP(gw, r)
	}
	status := gw.status
	if status == 0 {
		status = http.StatusOK
	}
	switch {
	case status < 400:
		if took {
			a.refusals.refund(key, time.Now())
		}
	case took:
		// Refused and recorded: the token stays spent.
	default:
		a.metrics.limited.Inc()
		code := st.code
		if code == "" {
			code = gw.code
		}
		a.refusals.count(key, time.Now(), burstSummarised, code, routeOf(r, g))
		if g.charge && status < 500 && status != http.StatusTooManyRequests && !gw.hijacked {
			a.limiter.pace(r.Context())
		}
	}
}

// routeOf is the pattern of the route that served r: a fixed set of
// names, whatever path the request carried.
func routeOf(r *http.Request, g *guard) string {
	switch {
	case r.Pattern != "":
		return r.Pattern
	case !g.charge:
		return "tunnel"
	}
	return "unmatched"
}

// enter waits for a limited slot; ok is false when too many wait already
// or none came free in limitedWait.
func (l *limiter) enter(ctx context.Context) (release func(), ok bool) {
	if l.waiting.Add(1) > maxLimited {
		l.waiting.Add(-1)
		return nil, false
	}
	defer l.waiting.Add(-1)
	t := time.NewTimer(limitedWait)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, true
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, false
}

// pace holds back a limited refusal's answer until its turn (reserve),
// unless maxLimited wait already.
func (l *limiter) pace(ctx context.Context) {
	if l.waiting.Add(1) > maxLimited {
		l.waiting.Add(-1)
		return
	}
	defer l.waiting.Add(-1)
	now := time.Now()
	t := time.NewTimer(l.reserve(now).Sub(now))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// reserve returns when the answer to a limited refusal made at now is
// sent: 1/limitedAnswers after the one reserved before it. Turns given up
// (a client that hung up) are not given back, so the queue is cut at the
// turn of the last of maxLimited waiting: clients that hang up cannot
// push the others' answers further off than that.
func (l *limiter) reserve(now time.Time) time.Time {
	const step = time.Second / limitedAnswers
	l.mu.Lock()
	defer l.mu.Unlock()
	at := now
	if l.next.After(at) {
		at = l.next
	}
	if last := now.Add(maxLimited * step); at.After(last) {
		at = last
	}
	l.next = at.Add(step)
	return at
}

// guardWriter notes the status and refusal code a handler answers with.
type guardWriter struct {
	http.ResponseWriter
	status   int
	code     identity.ErrorCode
	hijacked bool
}

func (w *guardWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *guardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Hijack hands the connection over (a leaf's tunnel): an attached tunnel
// is an admitted request.
func (w *guardWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the connection cannot be taken over")
	}
	conn, brw, err := hj.Hijack()
	if err == nil {
		w.hijacked, w.status = true, http.StatusSwitchingProtocols
	}
	return conn, brw, err
}

func (w *guardWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *guardWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// routes is the API's mux: every route is registered through it, so that
// Routes lists them all and Handler serves them all behind the guard.
type routes struct {
	mux      *http.ServeMux
	patterns []string
}

func newRoutes() *routes { return &routes{mux: http.NewServeMux()} }

func (m *routes) HandleFunc(pattern string, h http.HandlerFunc) { m.Handle(pattern, h) }

func (m *routes) Handle(pattern string, h http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.mux.Handle(pattern, h)
}

// guarded wraps the routes in the guard; requests are counted by key.
func (a *Authority) guarded(m *routes, charge bool, key func(r *http.Request) string) http.Handler {
	return &guard{a: a, next: m.mux, key: key, charge: charge}
}

func remoteKey(r *http.Request) string { return refusalKey(r.RemoteAddr) }
