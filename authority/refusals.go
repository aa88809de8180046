package authority

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
)

// Refusals are limited per remote address by a token bucket: every
// request takes a token when it is admitted (guard.go), and an answer below
// 400 gives it back, so only refusals spend them, and it earns back
// refusalRate a second up to refusalBurst. Each refusal that finds a token
// is recorded and logged one by one. While its bucket is empty its
// requests are still served, valid proofs admitted, but its refusals are
// counted into a burst that one audit record summarises (recordBursts),
// and their answers are paced (guard.go). While the burst lasts the
// bucket earns nothing back: 20, then none until it is summarised. A CI
// fleet behind one NAT address that joins successfully never empties its
// bucket, and a stranger on the same address who empties it does not keep
// the fleet out.
const (
	refusalBurst = 20
	refusalRate  = 2 // per second
	// maxRefusalAddrs bounds the addresses tracked (about 100 bytes each),
	// so that the limiter itself cannot be made to grow without end.
	maxRefusalAddrs = 10000
	// A burst is summarised once no refusal of its address was summarised
	// for burstQuiet, and every burstEvery while it goes on.
	burstQuiet = 10 * time.Second
	burstEvery = time.Minute
)

// refusalLimiter holds one bucket per remote address (see refusalKey).
type refusalLimiter struct {
	mu      sync.Mutex
	buckets map[string]*refusalBucket
}

type refusalBucket struct {
	tokens  float64 // requests that may still be looked at and recorded one by one
	updated time.Time
	burst   *burstSummary // the current burst, if any
}

// burstKind says what became of a request counted into a burst.
type burstKind int

const (
	// burstDropped: answered rate_limited without being read (no slot).
	burstDropped burstKind = iota
	// burstSummarised: served and refused, without a record of its own.
	burstSummarised
)

// burstSummary is one burst of refusals from one address that were not
// recorded one by one.
type burstSummary struct {
	addr                string
	dropped, summarised int
	first, last         time.Time
	// codes and routes count the refusals by code and by route pattern:
	// both are fixed sets, so a summary stays small.
	codes, routes map[string]int
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

// refill adds the tokens earned since the bucket was last updated. None
// are earned while the address is in a burst: its bucket stays empty
// until the burst is summarised, so that a flood that goes on is recorded
// one by one refusalBurst times, not refusalBurst and then refusalRate a
// second for as long as it lasts.
func (b *refusalBucket) refill(now time.Time) {
	if elapsed := now.Sub(b.updated).Seconds(); elapsed > 0 {
		if b.burst == nil {
			b.tokens = min(refusalBurst, b.tokens+elapsed*refusalRate)
		}
		b.updated = now
	}
}

// take takes a token from key's bucket for a request admitted now. When
// there is none, took is false and wait says when there will be one. When
// the limiter is full it forgets another address first; if that address
// was in a burst, the burst is returned for the caller to record.
func (l *refusalLimiter) take(key string, now time.Time) (took bool, wait time.Duration, evicted *burstSummary) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, evicted := l.bucketLocked(key, now)
	b.refill(now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0, evicted
	}
	wait = time.Duration(math.Ceil((1-b.tokens)/refusalRate)) * time.Second
	return false, max(wait, time.Second), evicted
}

// refund gives back the token of a request that was not refused.
func (l *refusalLimiter) refund(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.buckets[key]; b != nil {
		b.refill(now)
		b.tokens = min(refusalBurst, b.tokens+1)
	}
}

// count counts a refusal of key that is not recorded one by one into its burst.
func (l *refusalLimiter) count(key string, now time.Time, kind burstKind, code identity.ErrorCode, route string) *burstSummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, evicted := l.bucketLocked(key, now)
	s := b.burst
	if s == nil {
		s = &burstSummary{addr: key, first: now, codes: map[string]int{}, routes: map[string]int{}}
		b.burst = s
	}
	s.last = now
	if kind == burstDropped {
		s.dropped++
	} else {
		s.summarised++
	}
	if code == "" {
		code = "none"
	}
	s.codes[identity.Truncate(string(code), 64)]++
	s.routes[identity.Truncate(route, 200)]++
	return evicted
}

// bucketLocked returns key's bucket, made full if it is new.
func (l *refusalLimiter) bucketLocked(key string, now time.Time) (*refusalBucket, *burstSummary) {
	var evicted *burstSummary
	b := l.buckets[key]
	if b == nil {
		if l.buckets == nil {
			l.buckets = map[string]*refusalBucket{}
		}
		if len(l.buckets) >= maxRefusalAddrs {
			evicted = l.evictLocked()
		}
		b = &refusalBucket{tokens: refusalBurst, updated: now}
		l.buckets[key] = b
	}
	return b, evicted
}

// evictLocked forgets one address, preferring one that is not in a burst
// among a few picked at random (map order), so that making room costs
// little however many addresses are tracked.
func (l *refusalLimiter) evictLocked() *burstSummary {
	const sample = 16
	var victim string
	seen := 0
	for k, b := range l.buckets {
		if victim == "" {
			victim = k
		}
		if b.burst == nil {
			victim = k
			break
		}
		if seen++; seen == sample {
			break
		}
	}
	b := l.buckets[victim]
	delete(l.buckets, victim)
	if b == nil {
		return nil
	}
	return b.burst
}

// bursts returns the bursts that ended (or, with all, every burst) and
// resets them, and forgets addresses whose bucket has filled up again:
// they are the same as addresses never refused.
func (l *refusalLimiter) bursts(now time.Time, all bool) []burstSummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []burstSummary
	for k, b := range l.buckets {
		if s := b.burst; s != nil && (all || now.Sub(s.last) >= burstQuiet || now.Sub(s.first) >= burstEvery) {
			out = append(out, *s)
			b.refill(now) // tokens are earned from the summary on
			b.burst = nil
		}
		b.refill(now)
		if b.burst == nil && b.tokens >= refusalBurst {
			delete(l.buckets, k)
		}
	}
	return out
}

// rateLimited is the answer to a request from an address whose bucket is
// empty when no limited slot is free: it was not read.
func rateLimited(key string, wait time.Duration) *identity.Error {
	return &identity.Error{Code: identity.CodeRateLimited, RetryAfter: wait,
		Message: fmt.Sprintf("the authority refused more than %d requests from %s in a short time and is busy with others from refused addresses, so it did not read this one; "+
			"retry in %s, and fix what the earlier refusals said (an admin sees them with mbot audit --denied)", refusalBurst, key, wait)}
}

// recordBursts records a summary of every burst that ended (all: every
// burst, as the authority stops).
func (a *Authority) recordBursts(ctx context.Context, now time.Time, all bool) {
	for _, b := range a.refusals.bursts(now, all) {
		a.recordBurst(ctx, b)
	}
}

// burstEvent is the audit event of a burst summary.
const burstEvent = "refusals.summary"

func (a *Authority) recordBurst(ctx context.Context, b burstSummary) {
	codes, routes := countList(b.codes), countList(b.routes)
	ev := &store.AuditEvent{Event: burstEvent, Code: string(identity.CodeRateLimited), Remote: b.addr,
		Message: fmt.Sprintf("%d requests from %s were refused without a record of their own, from %s to %s, after more than %d refusals: "+
			"%d served and refused, %d answered rate_limited unread; codes %s; routes %s",
			b.summarised+b.dropped, b.addr, b.first.UTC().Format(time.RFC3339), b.last.UTC().Format(time.RFC3339), refusalBurst,
			b.summarised, b.dropped, codes, routes),
		Claims: map[string]string{"dropped": strconv.Itoa(b.dropped), "summarised": strconv.Itoa(b.summarised),
			"codes": codes, "routes": routes,
			"first": b.first.UTC().Format(time.RFC3339Nano), "last": b.last.UTC().Format(time.RFC3339Nano)}}
	if err := a.store.Audit(context.WithoutCancel(ctx), ev); err != nil {
		a.log.Error("recording a burst of refusals", "err", err)
	}
	a.log.Warn("refusals summarised", "remote", ev.Remote, "summarised", b.summarised, "dropped", b.dropped,
		"codes", codes, "routes", routes, "first", b.first, "last", b.last)
}

// countList is counts as "name=N,..." in name order.
func countList(counts map[string]int) string {
	names := slices.Sorted(maps.Keys(counts))
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + strconv.Itoa(counts[n])
	}
	return strings.Join(parts, ",")
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
