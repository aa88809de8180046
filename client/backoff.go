package client

import (
	"math/rand/v2"
	"time"
)

// maxRetryDelay caps the wait between retries of a failed renewal, so that
// a daemon notices within a minute that the authority is back.
const maxRetryDelay = time.Minute

// backoff spaces out the retries of a failed renewal: each step doubles,
// from a second up to the renewal interval or maxRetryDelay, whichever is
// shorter, and each wait is drawn from the upper half of its step so that
// daemons that lost the authority together do not come back together.
type backoff struct {
	first, limit time.Duration
	step         time.Duration // the last step; zero before the first retry
	// randN returns a uniform value in [0, n).
	randN func(n int64) int64
}

func newBackoff(interval time.Duration) *backoff {
	limit := min(interval, maxRetryDelay)
	return &backoff{first: min(time.Second, limit), limit: limit, randN: rand.Int64N}
}

// next is how long to wait before the next retry.
func (b *backoff) next() time.Duration {
	if b.step == 0 {
		b.step = b.first
	} else {
		b.step = min(2*b.step, b.limit)
	}
	half := b.step / 2
	return half + time.Duration(b.randN(int64(b.step-half)+1))
}

// reset starts over after a success.
func (b *backoff) reset() { b.step = 0 }
