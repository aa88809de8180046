package authority

import (
	"context"
	"errors"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

// timedStore is the store as the authority calls it: each call below is
// timed into mbot_store_call_duration_seconds by operation, and its
// failures counted. A refused replay or a stale generation is the store's
// answer, not a failure. Calls not listed here pass through untimed.
type timedStore struct {
	store.Store
	m *metrics
}

// answered is err unless it is one of the store's answers.
func answered(err error, answers ...error) error {
	for _, a := range answers {
		if errors.Is(err, a) {
			return nil
		}
	}
	return err
}

func (s timedStore) RecordJoin(ctx context.Context, proofID string, expires time.Time, ev *store.AuditEvent) error {
	start := time.Now()
	err := s.Store.RecordJoin(ctx, proofID, expires, ev)
	s.m.storeCall("record_join", start, answered(err, store.ErrReplay))
	return err
}

func (s timedStore) RecordJoinStartingChain(ctx context.Context, proofID string, expires time.Time, ev *store.AuditEvent, c store.Chain) error {
	start := time.Now()
	err := s.Store.RecordJoinStartingChain(ctx, proofID, expires, ev, c)
	s.m.storeCall("record_join", start, answered(err, store.ErrReplay))
	return err
}

func (s timedStore) RecordJoinSeen(ctx context.Context, proofID string, expires time.Time, ev *store.AuditEvent, c *store.Chain, seen store.Seen) error {
	start := time.Now()
	err := s.Store.RecordJoinSeen(ctx, proofID, expires, ev, c, seen)
	s.m.storeCall("record_join", start, answered(err, store.ErrReplay, store.ErrStale))
	return err
}

func (s timedStore) Versions(ctx context.Context) (store.Versions, error) {
	start := time.Now()
	v, err := s.Store.Versions(ctx)
	s.m.storeCall("versions", start, err)
	return v, err
}

func (s timedStore) Audit(ctx context.Context, ev *store.AuditEvent) error {
	start := time.Now()
	err := s.Store.Audit(ctx, ev)
	s.m.storeCall("audit", start, err)
	return err
}

func (s timedStore) StartChain(ctx context.Context, bot, joinToken, chain, runner string) error {
	start := time.Now()
	err := s.Store.StartChain(ctx, bot, joinToken, chain, runner)
	s.m.storeCall("start_chain", start, err)
	return err
}

func (s timedStore) AdvanceGeneration(ctx context.Context, r store.Renewal) error {
	start := time.Now()
	err := s.Store.AdvanceGeneration(ctx, r)
	var (
		failed   error
		mismatch *store.GenerationMismatch
		locked   *store.InstanceLockedError
	)
	if !errors.As(err, &mismatch) && !errors.As(err, &locked) {
		failed = answered(err, store.ErrUnknownChain, store.ErrUnlockedChain, store.ErrStale)
	}
	s.m.storeCall("advance_generation", start, failed)
	return err
}

func (s timedStore) ResourcesVersion(ctx context.Context) (int64, error) {
	start := time.Now()
	v, err := s.Store.ResourcesVersion(ctx)
	s.m.storeCall("resources_version", start, err)
	return v, err
}

func (s timedStore) Resources(ctx context.Context) ([]store.StoredResource, error) {
	start := time.Now()
	rs, err := s.Store.Resources(ctx)
	s.m.storeCall("resources", start, err)
	return rs, err
}

func (s timedStore) PutResources(ctx context.Context, rs []store.StoredResource) error {
	start := time.Now()
	err := s.Store.PutResources(ctx, rs)
	s.m.storeCall("put_resources", start, err)
	return err
}

func (s timedStore) DeleteResource(ctx context.Context, kind, name string) error {
	start := time.Now()
	err := s.Store.DeleteResource(ctx, kind, name)
	s.m.storeCall("delete_resource", start, answered(err, store.ErrNotFound))
	return err
}

func (s timedStore) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	start := time.Now()
	evs, err := s.Store.ListAudit(ctx, f)
	s.m.storeCall("list_audit", start, err)
	return evs, err
}

func (s timedStore) ScanAudit(ctx context.Context, f store.AuditFilter) (*store.AuditScan, error) {
	start := time.Now()
	scan, err := s.Store.ScanAudit(ctx, f)
	s.m.storeCall("scan_audit", start, err)
	return scan, err
}

func (s timedStore) PruneProofs(ctx context.Context, now time.Time) error {
	start := time.Now()
	err := s.Store.PruneProofs(ctx, now)
	s.m.storeCall("prune_proofs", start, err)
	return err
}

func (s timedStore) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	start := time.Now()
	n, err := s.Store.PruneAudit(ctx, before)
	s.m.storeCall("prune_audit", start, err)
	return n, err
}

func (s timedStore) UnlockBot(ctx context.Context, bot string) (*store.Unlock, error) {
	start := time.Now()
	u, err := s.Store.UnlockBot(ctx, bot)
	s.m.storeCall("unlock_bot", start, answered(err, store.ErrNotLocked))
	return u, err
}

func (s timedStore) UnlockInstance(ctx context.Context, id string) (*store.Unlock, error) {
	start := time.Now()
	u, err := s.Store.UnlockInstance(ctx, id)
	s.m.storeCall("unlock_instance", start, answered(err, store.ErrNotLocked, store.ErrUnknownInstance))
	return u, err
}

func (s timedStore) BotInstances(ctx context.Context, bot string) ([]store.BotInstance, error) {
	start := time.Now()
	list, err := s.Store.BotInstances(ctx, bot)
	s.m.storeCall("bot_instances", start, err)
	return list, err
}

func (s timedStore) Ping(ctx context.Context) error {
	start := time.Now()
	err := s.Store.Ping(ctx)
	s.m.storeCall("ping", start, err)
	return err
}
