package authority

import (
	"log/slog"
	"sync"
	"time"
)

// repeatedErrorLog logs an error that recurs on a timer (reading the
// store's locks every reloadInterval while the store is down) once when it
// starts, then at most once per repeatedErrorEvery with how many were left
// out, and once when it stops: a replica whose database is down says so
// without writing four lines a second.
type repeatedErrorLog struct {
	mu      sync.Mutex
	failing bool
	last    time.Time
	skipped int
}

const repeatedErrorEvery = 30 * time.Second

// failed logs err unless it was logged less than repeatedErrorEvery ago.
func (r *repeatedErrorLog) failed(log *slog.Logger, msg string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.failing && now.Sub(r.last) < repeatedErrorEvery {
		r.skipped++
		return
	}
	log.Error(msg, "err", err, "repeated", r.skipped)
	r.failing, r.last, r.skipped = true, now, 0
}

// succeeded logs, once, that the error no longer happens.
func (r *repeatedErrorLog) succeeded(log *slog.Logger, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.failing {
		return
	}
	log.Info(msg, "repeated", r.skipped)
	r.failing, r.skipped = false, 0
}
