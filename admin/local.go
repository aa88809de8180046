package admin

import (
	"context"
	"os/user"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
)

// Local acts on the store of the authority configured by cfg, on its host.
// A running authority picks the changes up within a second.
type Local struct {
	auth  *authority.Authority
	actor string
}

// OpenLocal opens the authority's store.
func OpenLocal(ctx context.Context, cfg *authority.Config) (*Local, error) {
	a, err := authority.OpenLocal(ctx, cfg, authority.Options{})
	if err != nil {
		return nil, err
	}
	actor := "local admin"
	if u, err := user.Current(); err == nil {
		actor = "local admin " + u.Username
	}
	return &Local{auth: a, actor: actor}, nil
}

func (l *Local) Apply(ctx context.Context, file string, data []byte) ([]string, error) {
	parsed, err := resources.Parse(file, data)
	if err != nil {
		return nil, err
	}
	if err := l.auth.Apply(ctx, parsed, l.actor); err != nil {
		return nil, err
	}
	names := make([]string, len(parsed))
	for i, r := range parsed {
		names[i] = r.Kind + "/" + r.Name()
	}
	return names, nil
}

// Resources are those in effect now: a change another process made counts.
func (l *Local) Resources(ctx context.Context) (*resources.Set, error) {
	l.auth.Refresh(ctx)
	return l.auth.Resources(), nil
}

func (l *Local) Delete(ctx context.Context, kind, name string) error {
	return l.auth.Delete(ctx, kind, name, l.actor)
}

func (l *Local) Unlock(ctx context.Context, bot string) (*Unlocked, error) {
	return l.auth.Unlock(ctx, bot, l.actor)
}

func (l *Local) UnlockJoinToken(ctx context.Context, name string) (*JoinTokenUnlocked, error) {
	return l.auth.UnlockJoinToken(ctx, name, l.actor)
}

func (l *Local) UnlockInstance(ctx context.Context, id string) (*Unlocked, error) {
	return l.auth.UnlockInstance(ctx, id, l.actor)
}

func (l *Local) BotInstances(ctx context.Context, bot string) ([]BotInstance, error) {
	return l.auth.BotInstances(ctx, bot)
}

func (l *Local) LockAdmin(ctx context.Context, admin, reason string) (*AdminLock, error) {
	return l.auth.LockAdmin(ctx, admin, reason, l.actor)
}

func (l *Local) UnlockAdmin(ctx context.Context, admin string) (*AdminLock, error) {
	return l.auth.UnlockAdmin(ctx, admin, l.actor)
}

func (l *Local) Lock(ctx context.Context, req LockRequest) (*LockAdded, error) {
	return l.auth.Lock(ctx, req, l.actor)
}

func (l *Local) UnlockLock(ctx context.Context, kind, target string) (*LockLifted, error) {
	return l.auth.UnlockLock(ctx, kind, target, l.actor)
}

func (l *Local) Locks(ctx context.Context) ([]Lock, error) {
	l.auth.Refresh(ctx)
	list := l.auth.Locks().List(time.Now())
	if list == nil {
		list = []Lock{}
	}
	return list, nil
}

func (l *Local) Audit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error) {
	return l.auth.Store().ListAudit(ctx, f)
}

func (l *Local) AuditScan(ctx context.Context, f store.AuditFilter) (*store.AuditScan, error) {
	return l.auth.Store().ScanAudit(ctx, f)
}

func (l *Local) AuditSummary(ctx context.Context, f store.SummaryFilter) (*store.AuditSummary, error) {
	return l.auth.Store().AuditSummary(ctx, f)
}

func (l *Local) Issued(ctx context.Context, auditID int64) ([]store.IssuedCertificate, error) {
	return l.auth.Store().IssuedCertificates(ctx, store.IssuedFilter{AuditID: auditID, Limit: 1000})
}

func (l *Local) CAStatus(ctx context.Context) (*CAStatus, error) { return l.auth.CAStatus(ctx) }

// Actor is who the audit log names for this client's changes.
func (l *Local) Actor() string { return l.actor }

func (l *Local) Settings(context.Context) (*Settings, error) {
	s := SettingsOf(l.auth.Config())
	s.CAKeysAtRest = l.auth.KeysAtRest()
	return s, nil
}

func (l *Local) LeafTunnels(ctx context.Context) (map[string]store.LeafTunnel, error) {
	return l.auth.LeafTunnels(ctx)
}

func (l *Local) Close() error { return l.auth.Close() }

// SettingsOf extracts the cluster-wide settings from an authority config.
func SettingsOf(cfg *authority.Config) *Settings {
	return &Settings{ClusterName: cfg.ClusterName, RequireSessionMFA: cfg.RequireSessionMFA,
		DeviceTrustMode: cfg.DeviceTrustMode, MaxAdminTTL: cfg.MaxAdminTTL.String()}
}
