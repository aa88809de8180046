package authority

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
)

// Refused joins and renewals are limited per remote address by a token
// bucket that only refusals draw from: an address may be refused
// refusalBurst times in a row, then refusalRate times a second. While its
// bucket is empty, its requests are answered rate_limited (429) with
// Retry-After, without being read, verified, recorded or logged one by one;
// one audit record summarises each burst instead. Admitted joins never draw
// from the bucket, so a CI fleet behind one NAT address that joins
// successfully is never limited.
const (
	refusalBurst = 20
	refusalRate  = 2 // per second
	// maxRefusalAddrs bounds the addresses tracked (about 100 bytes each),
	// so that the limiter itself cannot be made to grow without end.
	maxRefusalAddrs = 10000
	// A burst is summarised once no request of its address was dropped for
	// burstQuiet, and every burstEvery while it goes on.
	burstQuiet = 10 * time.Second
	burstEvery = time.Minute
)

// refusalLimiter holds one bucket per remote address (see refusalKey).
type refusalLimiter struct {
	mu      sync.Mutex
	buckets map[string]*refusalBucket
}

type refusalBucket struct {
	tokens  float64 // refusals still allowed now
	updated time.Time
	// The current burst of dropped requests, if dropped > 0.
	dropped         int
	first, lastDrop time.Time
}

// burstSummary is one burst of dropped requests from one address.
type burstSummary struct {
	addr        string
	dropped     int
	first, last time.Time
}

// refusalKey is what the limiter counts refusals by: the IP address
// without the port, and for IPv6 its /64, the smallest block a host gets.
func refusalKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return identity.Truncate(host, 64)
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		return netip.PrefixFrom(ip, 64).Masked().String()
	}
	return ip.String()
}

// refill adds the tokens earned since the bucket was last updated.
func (b *refusalBucket) refill(now time.Time) {
	if elapsed := now.Sub(b.updated).Seconds(); elapsed > 0 {
		b.tokens = min(refusalBurst, b.tokens+elapsed*refusalRate)
		b.updated = now
	}
}

// admit says whether a request from key may be served. A request that may
// not is counted into its address's burst and gets how long to wait.
func (l *refusalLimiter) admit(key string, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		return 0, true
	}
	b.refill(now)
	if b.tokens >= 1 {
		return 0, true
	}
	if b.dropped == 0 {
		b.first = now
	}
	b.dropped++
	b.lastDrop = now
	wait := time.Duration(math.Ceil((1-b.tokens)/refusalRate)) * time.Second
	return max(wait, time.Second), false
}

// charge draws one refusal from key's bucket. When the limiter is full it
// forgets another address first; if that address was in a burst, the
// burst's summary is returned for the caller to record.
func (l *refusalLimiter) charge(key string, now time.Time) *burstSummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	var evicted *burstSummary
	b := l.buckets[key]
	if b == nil {
		if l.buckets == nil {
			l.buckets = map[string]*refusalBucket{}
		}
		if len(l.buckets) >= maxRefusalAddrs {
			evicted = l.evictLocked(now)
		}
		b = &refusalBucket{tokens: refusalBurst, updated: now}
		l.buckets[key] = b
	}
	b.refill(now)
	b.tokens = max(0, b.tokens-1)
	return evicted
}

// evictLocked forgets one address, preferring one that is not in a burst
// among a few picked at random (map order), so that making room costs
// little however many addresses are tracked.
func (l *refusalLimiter) evictLocked(now time.Time) *burstSummary {
	const sample = 16
	var victim string
	seen := 0
	for k, b := range l.buckets {
		if victim == "" {
			victim = k
		}
		if b.dropped == 0 {
			victim = k
			break
		}
		if seen++; seen == sample {
			break
		}
	}
	b := l.buckets[victim]
	delete(l.buckets, victim)
	if b == nil || b.dropped == 0 {
		return nil
	}
	return &burstSummary{addr: victim, dropped: b.dropped, first: b.first, last: b.lastDrop}
}

// bursts returns the bursts that ended (or, with all, every burst) and
// resets them, and forgets addresses whose bucket has filled up again:
// they are the same as addresses never refused.
func (l *refusalLimiter) bursts(now time.Time, all bool) []burstSummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []burstSummary
	for k, b := range l.buckets {
		if b.dropped > 0 && (all || now.Sub(b.lastDrop) >= burstQuiet || now.Sub(b.first) >= burstEvery) {
			out = append(out, burstSummary{addr: k, dropped: b.dropped, first: b.first, last: b.lastDrop})
			b.dropped = 0
		}
		b.refill(now)
		if b.dropped == 0 && b.tokens >= refusalBurst {
			delete(l.buckets, k)
		}
	}
	return out
}

// rateLimited is the answer to a request from an address whose bucket is empty.
func rateLimited(key string, wait time.Duration) *identity.Error {
	return &identity.Error{Code: identity.CodeRateLimited, RetryAfter: wait,
		Message: fmt.Sprintf("the authority refused more than %d requests from %s in a short time, so it does not look at requests from there for %s; "+
			"fix what the earlier refusals said (an admin sees them with mbot audit --denied), then retry", refusalBurst, key, wait)}
}

// chargeRefusal draws from the bucket of remote when err is a refusal of
// the request itself (4xx): the authority's own trouble (5xx) does not count.
func (a *Authority) chargeRefusal(ctx context.Context, remote string, err error) {
	if status := errorStatus(err); status < 400 || status >= 500 || status == 429 {
		return
	}
	if evicted := a.refusals.charge(refusalKey(remote), time.Now()); evicted != nil {
		a.recordBurst(ctx, *evicted)
	}
}

// recordBursts records a summary of every burst that ended (all: every
// burst, as the authority stops).
func (a *Authority) recordBursts(ctx context.Context, now time.Time, all bool) {
	for _, b := range a.refusals.bursts(now, all) {
		a.recordBurst(ctx, b)
	}
}

func (a *Authority) recordBurst(ctx context.Context, b burstSummary) {
	ev := &store.AuditEvent{Event: "join.rate_limited", Code: string(identity.CodeRateLimited), Remote: b.addr,
		Message: fmt.Sprintf("%d join and renewal requests from %s were answered rate_limited without being looked at, from %s to %s, after more than %d refusals",
			b.dropped, b.addr, b.first.UTC().Format(time.RFC3339), b.last.UTC().Format(time.RFC3339), refusalBurst),
		Claims: map[string]string{"dropped": strconv.Itoa(b.dropped),
			"first": b.first.UTC().Format(time.RFC3339Nano), "last": b.last.UTC().Format(time.RFC3339Nano)}}
	if err := a.store.Audit(context.WithoutCancel(ctx), ev); err != nil {
		a.log.Error("recording rate-limited requests", "err", err)
	}
	a.log.Warn("requests rate limited", "remote", ev.Remote, "dropped", b.dropped, "first", b.first, "last", b.last)
}

// storeRetryAfter is what a store_unavailable refusal asks the client to
// wait: a PostgreSQL restart or failover takes seconds.
const storeRetryAfter = 2 * time.Second

// storeUnavailable refuses a join or renewal that could not be recorded
// because the database is unreachable: no certificate leaves the authority
// unless its audit and replay records are committed.
func storeUnavailable(event string, err error) *identity.Error {
	return &identity.Error{Code: identity.CodeStoreUnavailable, RetryAfter: storeRetryAfter, Err: err,
		Message: "the authority's store (its database) is unavailable, so the " + event + " was not recorded and nothing was issued; retry in a few seconds"}
}
