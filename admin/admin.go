// Package admin is what the admin commands (mbot apply, get, rm, bots add,
// lock, unlock, audit, lint) act on: an authority's resources, bot and
// admin locks and audit log, reached either locally, with direct store access on the
// authority host (like tctl), or remotely through the admin API with an
// admin identity.
package admin

import (
	"context"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/authority/store"
)

// Kinds of resources, as the admin commands spell them (mbot get roles).
var Kinds = map[string]string{
	"role": resources.KindRole, "roles": resources.KindRole,
	"bot": resources.KindBot, "bots": resources.KindBot,
	"join_token": resources.KindJoinToken, "join_tokens": resources.KindJoinToken,
	"database": resources.KindDatabase, "databases": resources.KindDatabase,
	"kubernetes_cluster": resources.KindKubernetesCluster, "kubernetes_clusters": resources.KindKubernetesCluster,
	"trusted_cluster": resources.KindTrustedCluster, "trusted_clusters": resources.KindTrustedCluster,
	"leaf_cluster": resources.KindLeafCluster, "leaf_clusters": resources.KindLeafCluster,
}

// Settings are the cluster-wide settings that policy checks need.
type Settings = authority.AdminSettings

// Unlocked is what Unlock lifted.
type Unlocked = authority.Unlocked

// JoinTokenUnlocked is what UnlockJoinToken lifted.
type JoinTokenUnlocked = authority.JoinTokenUnlocked

// CAStatus is every CA's rotation phase and fingerprints.
type CAStatus = authority.CAStatus

// BotInstance is one token-joined runner of a bot: its renewal chain.
type BotInstance = store.BotInstance

// AdminLock is a lock on an admin's identities.
type AdminLock = locks.Lock

// Lock is one lock of the authority's lock set (mbot get locks).
type Lock = locks.Lock

// LockRequest asks for a lock; LockAdded is what it set (Unrevocable: the
// kubeconfigs and JWT-SVIDs it covers), LockLifted what an unlock lifted.
type (
	LockRequest = authority.LockRequest
	LockAdded   = authority.LockAdded
	Unrevocable = authority.Unrevocable
	LockLifted  = authority.LockLifted
)

// Client is an authority as the admin commands see it.
type Client interface {
	// Apply parses YAML documents (file names them in errors) and applies
	// them; it returns the kind/name of each applied resource.
	Apply(ctx context.Context, file string, data []byte) ([]string, error)
	// Resources returns every resource in effect.
	Resources(ctx context.Context) (*resources.Set, error)
	// Delete removes kind/name unless something refers to it.
	Delete(ctx context.Context, kind, name string) error
	// Unlock lifts the locks on bot's instances and ends their renewals.
	Unlock(ctx context.Context, bot string) (*Unlocked, error)
	// UnlockJoinToken lifts the lock on a bound_keypair join token.
	UnlockJoinToken(ctx context.Context, name string) (*JoinTokenUnlocked, error)
	// UnlockInstance lifts the lock on one bot instance and ends its renewals.
	UnlockInstance(ctx context.Context, id string) (*Unlocked, error)
	// BotInstances lists the instances of bot (of every bot for "").
	BotInstances(ctx context.Context, bot string) ([]BotInstance, error)
	// LockAdmin makes the admin API refuse every identity of admin.
	LockAdmin(ctx context.Context, admin, reason string) (*AdminLock, error)
	// UnlockAdmin lifts that lock and returns what it lifted.
	UnlockAdmin(ctx context.Context, admin string) (*AdminLock, error)
	// Lock sets a lock (mbot lock KIND/NAME, --claim); UnlockLock lifts
	// one; Locks lists those in force.
	Lock(ctx context.Context, req LockRequest) (*LockAdded, error)
	UnlockLock(ctx context.Context, kind, target string) (*LockLifted, error)
	Locks(ctx context.Context) ([]Lock, error)
	// Audit lists audit records, newest first.
	Audit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, error)
	// AuditScan lists them reading at most f.Scan index entries, and says
	// how far back it looked if that came first (the console's pages).
	AuditScan(ctx context.Context, f store.AuditFilter) (*store.AuditScan, error)
	// AuditSummary counts a span of the audit log (the console's overview).
	AuditSummary(ctx context.Context, f store.SummaryFilter) (*store.AuditSummary, error)
	// Issued lists the certificates issued with one audit record.
	Issued(ctx context.Context, auditID int64) ([]store.IssuedCertificate, error)
	// CAStatus returns every CA's rotation phase and fingerprints.
	CAStatus(ctx context.Context) (*CAStatus, error)
	// Settings returns the cluster-wide settings.
	Settings(ctx context.Context) (*Settings, error)
	// LeafTunnels returns the tunnel of every leaf cluster this root has
	// seen: attached or not, and when it was last seen.
	LeafTunnels(ctx context.Context) (map[string]store.LeafTunnel, error)
	Close() error
}
