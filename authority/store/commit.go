package store

import (
	"context"
	"slices"
	"strings"
	"time"
)

// maxBatch bounds how many joins share one transaction.
const maxBatch = 256

// commitLinger is how long a commit waits for more joins to share it when
// joins are arriving back to back. Every commit writes the pages beside the
// joins' own rows (indexes, interior pages, the autoincrement counter) once,
// so a commit of more joins costs less per join: at 2,000 joins/s 8 ms
// gathers about twice as many as 3 ms did. Under such load a join already
// queues for the CPU for tens of milliseconds; an idle authority commits at once.
const (
	commitLinger = 8 * time.Millisecond
	busyWindow   = 10 * time.Millisecond
)

// pendingWrite is one join's (or refusal's) change to the store, waiting for its commit.
type pendingWrite struct {
	proofID string // empty for an audit record alone
	expires time.Time
	event   *AuditEvent
	chain   *Chain // a token join's renewal chain, started if the proof is new
	// seen is what the join was admitted on: it is written only if the
	// resources and locks are still those (else ErrStale).
	seen Seen
	// record and issued are the event's audit record and certificate rows,
	// marshalled by the caller before it queues the write: the committer
	// is one goroutine per engine connection, and JSON costs no lock.
	record string
	issued []issuedRow
	result chan error
}

// marshal sets w's record and issued rows from its event, unless set.
func (w *pendingWrite) marshal() error {
	if w.record != "" {
		return nil
	}
	var err error
	if w.issued, err = issuedRows(w.event); err != nil {
		return err
	}
	w.record, err = auditRecord(w.event)
	return err
}

// commit hands w to the committer and waits until it is durable. Joins that
// arrive while a transaction commits share the next one (group commit):
// SQLite has one writer, so this is what lets it keep up with thousands of
// joins per second, and each join still returns only after its commit.
// PostgreSQL runs engine.committers such loops side by side.
func (s *sqlStore) commit(ctx context.Context, w *pendingWrite) error {
	if w.event.Time.IsZero() {
		w.event.Time = time.Now().UTC()
	}
	w.event.Bound()
	if err := w.marshal(); err != nil {
		return err
	}
	w.result = make(chan error, 1)
	select {
	case s.writes <- w:
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, the write happens whatever the caller does; wait for it so
	// that a replay is never reported as a success.
	return <-w.result
}

func (s *sqlStore) commitLoop() {
	defer s.committed.Done()
	batch := make([]*pendingWrite, 0, maxBatch)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	var lastCommit time.Time
	for w := range s.writes {
		batch = append(batch[:0], w)
		// Under load, wait a moment for the joins running beside this one:
		// one commit for many joins costs a few WAL writes instead of a few
		// per join. Otherwise take only what is already queued.
		if time.Since(lastCommit) < busyWindow {
			linger.Reset(commitLinger)
		} else {
			linger.Reset(0)
		}
	collect:
		for len(batch) < maxBatch {
			select {
			case w, ok := <-s.writes:
				if !ok {
					break collect
				}
				batch = append(batch, w)
			case <-linger.C:
				break collect
			}
		}
		linger.Stop()
		s.commitBatch(batch)
		lastCommit = time.Now()
	}
}

// commitBatch writes a batch in one transaction. A replayed proof fails only
// its own write; a database error fails the whole batch. A batch that lost
// a deadlock to another replica's (two batches holding the same proofs) runs
// again.
func (s *sqlStore) commitBatch(batch []*pendingWrite) {
	if s.engine.retry != nil {
		// Proofs in one order in every batch, so that two replicas' batches
		// holding the same proofs wait for each other instead of deadlocking.
		batch = slices.Clone(batch)
		slices.SortStableFunc(batch, func(a, b *pendingWrite) int { return strings.Compare(a.proofID, b.proofID) })
	}
	results := make([]error, len(batch))
	var err error
	for _, w := range batch {
		// Set by commit; a write queued directly (tests) is marshalled here.
		if err = w.marshal(); err != nil {
			break
		}
	}
	for attempt := 0; err == nil; attempt++ {
		clear(results)
		if s.engine.writeBatch != nil {
			err = s.engine.writeBatch(s, batch, results)
		} else {
			err = s.tryBatch(batch, results)
		}
		if err == nil || attempt == 2 || s.engine.retry == nil || !s.engine.retry(err) {
			break
		}
	}
	for i, w := range batch {
		if err != nil {
			results[i] = s.wrap("writing to the store", err)
		}
		w.result <- results[i]
	}
}

func (s *sqlStore) tryBatch(batch []*pendingWrite, results []error) error {
	ctx := context.Background()
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	useProof, addAudit, addIssued := tx.StmtContext(ctx, s.useProof), tx.StmtContext(ctx, s.addAudit), tx.StmtContext(ctx, s.addIssued)
	var now *Versions // read once, in the batch's transaction (SQLite's one writer: nothing commits between)
	for i, w := range batch {
		if w.seen.Check {
			if now == nil {
				now = &Versions{}
				if err := tx.QueryRowContext(ctx, versionsQuery).Scan(&now.Resources, &now.Locks); err != nil {
					return err
				}
			}
			if now.Resources != w.seen.Resources || now.Locks != w.seen.Locks {
				results[i] = ErrStale
				continue
			}
		}
		if w.proofID != "" {
			res, err := useProof.ExecContext(ctx, w.proofID, w.expires.Unix())
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				results[i] = ErrReplay
				continue
			}
			if c := w.chain; c != nil {
				if err := startChain(ctx, tx, *c, w.event.Time.UnixNano()); err != nil {
					return err
				}
			}
		}
		if err := insertAudit(ctx, addAudit, addIssued, w); err != nil {
			return err
		}
	}
	return tx.Commit()
}
