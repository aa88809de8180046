package authority

import (
	"context"
	"crypto"
	"time"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
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

// SignExchanged signs outputs as an exchange does once the root identity
// is verified and its roles mapped: for bot of root cluster root, holding
// leaf roles, under trusted cluster tc.
func (a *Authority) SignExchanged(bot, root, tc string, roles []string, outputs []identity.OutputRequest) (*identity.JoinResponse, error) {
	keys, err := parseKeys(exchangeMethod, outputs, 3600)
	if err != nil {
		return nil, err
	}
	leafBot := &resources.Bot{Metadata: resources.Metadata{Name: bot}, Spec: resources.BotSpec{Roles: roles}}
	return a.grant(a.state.Load(), a.Locks(), leafBot, root, tc, exchangeMethod, outputs, 3600, keys, identity.Lineage{},
		time.Now().Add(time.Hour), &store.AuditEvent{Event: exchangeMethod})
}

// BeforeVersions makes every read of the store's versions call before
// first, as if another goroutine acted just then.
func (a *Authority) BeforeVersions(before func()) {
	a.store.Store = versionsHook{Store: a.store.Store, before: before}
}

type versionsHook struct {
	store.Store
	before func()
}

func (h versionsHook) Versions(ctx context.Context) (store.Versions, error) {
	h.before()
	return h.Store.Versions(ctx)
}

// Reload reads the resources and locks again, as the change listener does
// on another replica's notification.
func (a *Authority) Reload(ctx context.Context) error { return a.reload(ctx) }

// MarkChecked says the store was just checked for changes: a join's own
// check waits reloadInterval from now.
func (a *Authority) MarkChecked() { a.checked.Store(time.Now().UnixNano()) }
