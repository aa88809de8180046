// Package store keeps the authority's state: CA material, resources, the
// proofs already used (for replay refusal) and the audit log. Two engines
// implement Store: SQLite (modernc.org/sqlite, pure Go) under data_dir, the
// embedded default, and PostgreSQL (pgx), which several authority replicas
// share. Both run the same SQL (sqlstore.go); an engine adds its schema,
// how it commits joins and how it tells replicas of changes.
package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// ErrNotFound is returned when a CA or resource does not exist.
var ErrNotFound = errors.New("not found")

// ErrReplay is returned when a proof was already used.
var ErrReplay = errors.New("proof already used")

// ErrUnavailable wraps an error that says the database cannot be reached
// (refused or dropped connection, server shutting down): the request may
// succeed when retried later, so the authority answers 503
// store_unavailable instead of 500.
var ErrUnavailable = errors.New("the authority's store is unavailable")

// Store is the authority's persistent state. Nothing above the store knows
// which engine it talks to.
type Store interface {
	// Engine names the engine: "sqlite" or "postgres".
	Engine() string
	// Ping reports whether the database answers (for /readyz).
	Ping(ctx context.Context) error
	// Changes signals, after the fact, that another process changed
	// resources or locks; a nil channel for engines that cannot tell, whose
	// users poll ResourcesVersion and BotLocks instead. It is closed by Close.
	Changes() <-chan struct{}
	// Pools returns the engine's connection pools by name, for their
	// statistics (mbot's go_sql_* metrics).
	Pools() map[string]*sql.DB
	Close() error

	// CA returns the PEM material stored under name, or ErrNotFound.
	CA(ctx context.Context, name string) ([]byte, error)
	// CreateCA stores pem under name unless a CA of that name exists, and
	// returns whichever is stored, so that concurrent first starts agree.
	CreateCA(ctx context.Context, name string, pem []byte) ([]byte, error)

	// PutResources creates or replaces resources in one transaction.
	PutResources(ctx context.Context, rs []StoredResource) error
	// DeleteResource removes a resource, or returns ErrNotFound. Removing a
	// bot removes its lock, renewal counters and ended chains; removing a
	// join token removes its counters and ended chains.
	DeleteResource(ctx context.Context, kind, name string) error
	// ResourcesVersion changes whenever a resource is put or deleted, by any process.
	ResourcesVersion(ctx context.Context) (int64, error)
	// Resources lists every stored resource.
	Resources(ctx context.Context) ([]StoredResource, error)

	// RecordJoin marks the proof proofID as used until expires and appends
	// ev to the audit log, atomically, and returns once both are committed.
	// If the proof was already used, by this process or any other sharing
	// the database, it returns ErrReplay and records nothing.
	RecordJoin(ctx context.Context, proofID string, expires time.Time, ev *AuditEvent) error
	// RecordJoinStartingChain is RecordJoin for a token join, which starts
	// (or restarts) the renewal chain c in the same transaction: a join
	// whose proof is consumed always has its chain.
	RecordJoinStartingChain(ctx context.Context, proofID string, expires time.Time, ev *AuditEvent, c Chain) error
	// RecordJoinSeen is RecordJoin (with c, RecordJoinStartingChain) for a
	// join admitted on the resources and locks of seen: if either changed
	// since, by this process or another, it records nothing and returns
	// ErrStale, in the join's own transaction, so that a join committed
	// after mbot rm, mbot apply or mbot lock returned never passes on
	// what they changed.
	RecordJoinSeen(ctx context.Context, proofID string, expires time.Time, ev *AuditEvent, c *Chain, seen Seen) error
	// Audit appends ev to the audit log.
	Audit(ctx context.Context, ev *AuditEvent) error
	// ListAudit returns audit events, newest first: every match up to
	// f.Limit, whatever it reads to find them (f.Scan is ignored).
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)
	// ScanAudit is ListAudit reading at most f.Scan index entries (one
	// page of the console): it says where it stopped if that came first.
	ScanAudit(ctx context.Context, f AuditFilter) (*AuditScan, error)
	// AuditSummary counts a span of the audit log by step, outcome,
	// refusal code and project, from per-minute counts (audit_index.go).
	AuditSummary(ctx context.Context, f SummaryFilter) (*AuditSummary, error)
	// PruneProofs forgets used proofs that have expired.
	PruneProofs(ctx context.Context, now time.Time) error
	// PruneAudit deletes audit records older than before.
	PruneAudit(ctx context.Context, before time.Time) (int64, error)

	// StartChain, AdvanceGeneration, BotLock, BotLocks and UnlockBot keep
	// the generation counters of token joins (generations.go);
	// InstanceLocks, BotInstances and UnlockInstance their instances, the
	// unit a stale generation locks (instances.go).
	StartChain(ctx context.Context, bot, joinToken, chain, runner string) error
	AdvanceGeneration(ctx context.Context, r Renewal) error
	BotLock(ctx context.Context, bot string) (*BotLock, error)
	BotLocks(ctx context.Context) (map[string]*BotLock, error)
	UnlockBot(ctx context.Context, bot string) (*Unlock, error)
	InstanceLocks(ctx context.Context) (map[string]*InstanceLock, error)
	BotInstances(ctx context.Context, bot string) ([]BotInstance, error)
	UnlockInstance(ctx context.Context, id string) (*Unlock, error)

	// ListCAs, ReplaceCAs and the CA rotation calls keep CA rotations and
	// sealed CA keys (cas.go).
	ListCAs(ctx context.Context) (map[string][]byte, error)
	ReplaceCAs(ctx context.Context, changes []CAChange) error
	CARotations(ctx context.Context) ([]CARotation, error)
	StartCARotation(ctx context.Context, r CARotation, next []byte) error
	SetCARotationPhase(ctx context.Context, from string, r CARotation) error
	FinishCARotation(ctx context.Context, ca, from string) error

	// The keypair calls keep the join sequence and challenges of
	// bound_keypair join tokens (keypairs.go).
	UseKeypairChallenge(ctx context.Context, joinToken, requester, nonce string, expires time.Time) error
	PruneKeypairChallenges(ctx context.Context, before time.Time) error
	KeypairBinding(ctx context.Context, joinToken string) (*KeypairBinding, error)
	AdvanceKeypair(ctx context.Context, j KeypairJoin) error
	UnlockKeypair(ctx context.Context, joinToken string) (*KeypairLock, error)

	// RecordLeafTunnel and LeafTunnels keep trusted clusters' tunnels
	// (leaf_tunnels.go).
	RecordLeafTunnel(ctx context.Context, leaf string, t LeafTunnel) error
	LeafTunnels(ctx context.Context) (map[string]LeafTunnel, error)

	// AddLock, RemoveLock and LockState keep the locks admins set (mbot
	// lock) and read them with those the authority sets (locks.go);
	// Versions reads the resources and locks versions together.
	AddLock(ctx context.Context, l *Lock) error
	RemoveLock(ctx context.Context, kind, target string) (*Lock, error)
	LockState(ctx context.Context) (*LockState, error)
	Versions(ctx context.Context) (Versions, error)

	// IssuedCertificates lists the certificates recorded as issued
	// (AuditEvent.Certificates) that f matches; PruneIssuedCertificates
	// forgets those that expired before before (issued.go).
	IssuedCertificates(ctx context.Context, f IssuedFilter) ([]IssuedCertificate, error)
	PruneIssuedCertificates(ctx context.Context, before time.Time) (int64, error)
}

// AuditEvent is one record of the audit log. It never holds a token, key or
// certificate body: only names, identifying claims and serial numbers, each
// within the bounds of bound.go.
type AuditEvent struct {
	ID        int64             `json:"id"`
	Time      time.Time         `json:"time"`
	Event     string            `json:"event"` // join, sign, resource
	Allowed   bool              `json:"allowed"`
	Code      string            `json:"code,omitempty"`
	Message   string            `json:"message,omitempty"`
	Bot       string            `json:"bot,omitempty"`
	JoinToken string            `json:"join_token,omitempty"`
	Method    string            `json:"method,omitempty"`
	Claims    map[string]string `json:"claims,omitempty"`
	// ClaimsUnverified marks claims read from a refused proof whose
	// signature, issuer or lifetime did not verify: who presented it, not
	// who it proves.
	ClaimsUnverified bool     `json:"claims_unverified,omitempty"`
	Roles            []string `json:"roles,omitempty"`
	// Outputs says, per output, its type and what it was granted.
	Outputs  []string  `json:"outputs,omitempty"`
	Serials  []string  `json:"serials,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	Remote   string    `json:"remote,omitempty"`
	// TruncatedBytes is how much Bound cut from values the caller chose.
	TruncatedBytes int `json:"truncated_bytes,omitempty"`
	// Certificates are those issued with this event (an admitted join,
	// renewal, exchange or signing), which the store records in
	// issued_certificates in the event's transaction, under its id.
	Certificates []IssuedCertificate `json:"-"`
}

// StoredResource is a resource document as kept in the store.
type StoredResource struct {
	Kind, Name string
	Body       []byte
}

// AuditFilter narrows ListAudit.
type AuditFilter struct {
	Since      time.Time
	Bot        string
	DeniedOnly bool
	// Serial keeps the records of the certificate with this serial, as
	// locks.NormalizeSerial writes it ("ssh:N", "tls:HEX", or bare for either).
	Serial string
	Limit  int

	// Until keeps records before this time; BeforeID those older than the
	// record with this id (the next page, newest first).
	Until    time.Time
	BeforeID int64
	// JoinToken, Method, Code (a refusal code) and Event keep the records
	// with that field; AdmittedOnly the admitted ones; Claims those with
	// every claim given (repository=acme/app).
	JoinToken, Method, Code, Event string
	AdmittedOnly                   bool
	Claims                         map[string]string

	// Scan, for ScanAudit, bounds the index entries one read walks: those
	// of the filter's driving term, or the log's ids without one. A page
	// of filters that few records match together then costs Scan entries,
	// not every record of the driving term (0: no bound).
	Scan int
}

// AuditScan is what ScanAudit read: the matches, newest first, and, when
// it read its Scan entries before finding Limit matches, how far back it
// looked.
type AuditScan struct {
	Records []AuditEvent `json:"records"`
	// ScannedTo is the oldest record the read looked at: no record between
	// it and the last of Records (or BeforeID) matches. The next read
	// continues with BeforeID = ScannedTo.ID. Nil when the read reached the
	// oldest record within the filter's bounds.
	ScannedTo *AuditMark `json:"scanned_to,omitempty"`
}

// AuditMark is a point of the audit log: a record's id and time.
type AuditMark struct {
	ID   int64     `json:"id"`
	Time time.Time `json:"time"`
}
