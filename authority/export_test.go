package authority

import (
	"context"
	"time"
)

// RecordBursts records a summary of every burst of rate-limited requests
// now, as Serve does when a burst has ended.
func (a *Authority) RecordBursts(ctx context.Context) { a.recordBursts(ctx, time.Now(), true) }
