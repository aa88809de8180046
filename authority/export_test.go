package authority

import (
	"context"
	"crypto"
	"time"
)

// RecordBursts records a summary of every burst of rate-limited requests
// now, as Serve does when a burst has ended.
func (a *Authority) RecordBursts(ctx context.Context) { a.recordBursts(ctx, time.Now(), true) }

// PrivateKeys returns every CA private key the CAs hold, the CAs being
// rotated in included, by stored row name.
func (c *CAs) PrivateKeys() map[string]crypto.Signer {
	out := map[string]crypto.Signer{}
	for name, set := range c.sets {
		out[name] = set.current.key
		if set.next != nil {
			out[name+".next"] = set.next.key
		}
	}
	return out
}

// RefreshNow reads the store again if another process changed it, as a
// join does at most every reloadInterval.
func (a *Authority) RefreshNow(ctx context.Context) bool { return a.refreshNow(ctx) }

// RevocationRenders is how many times the HTTP API rendered the list of
// typ and purpose.
func (a *Authority) RevocationRenders(typ, purpose string) int {
	e := a.revocations.entry(typ, purpose)
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.renders
}
