package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrConflict is returned when a CA row or rotation changed since it was
// read: another process got there first. Read again and retry.
var ErrConflict = errors.New("changed by another process")

// caRotationsSchema is the rotation state, one row per CA being rotated.
// The CA that will replace the current one is the cas row named
// NextCAName(ca). Times are Unix nanoseconds; grace is nanoseconds.
const caRotationsSchema = `
CREATE TABLE IF NOT EXISTS ca_rotations (ca TEXT PRIMARY KEY, phase TEXT NOT NULL, grace BIGINT NOT NULL,
	started BIGINT NOT NULL, updated BIGINT NOT NULL, new_signs_since BIGINT NOT NULL);
`

// NextCAName is the cas row holding the CA that will replace ca.
func NextCAName(ca string) string { return ca + ".next" }

// CARotation is the state of one CA's rotation.
type CARotation struct {
	CA    string
	Phase string
	Grace time.Duration
	// Started is when the rotation began, Updated when it last changed phase.
	Started, Updated time.Time
	// NewSignsSince is when the new CA began to sign (zero before): what
	// the grace period is counted from.
	NewSignsSince time.Time
}

// CAChange replaces a CA row's material if it still holds Old.
type CAChange struct {
	Name     string
	Old, New []byte
}

// ListCAs returns every stored CA row's material by row name.
func (s *sqlStore) ListCAs(ctx context.Context) (map[string][]byte, error) {
	out, err := s.listCAs(ctx)
	return out, s.wrap("listing CAs", err)
}

func (s *sqlStore) listCAs(ctx context.Context) (map[string][]byte, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT name, pem FROM cas`)
	if err != nil {
		return nil, fmt.Errorf("listing CAs: %w", err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var name string
		var pem []byte
		if err := rows.Scan(&name, &pem); err != nil {
			return nil, fmt.Errorf("listing CAs: %w", err)
		}
		out[name] = pem
	}
	return out, rows.Err()
}

// ReplaceCAs applies every change in one transaction, or none and
// ErrConflict when a row no longer holds its Old material. The material
// replaced does not stay behind in the database file (see scrub): it is
// what sealing CA keys in place removes.
func (s *sqlStore) ReplaceCAs(ctx context.Context, changes []CAChange) error {
	if err := s.replaceCAs(ctx, changes); err != nil {
		return s.wrap("replacing CAs", err)
	}
	return s.scrub(ctx)
}

func (s *sqlStore) replaceCAs(ctx context.Context, changes []CAChange) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, c := range changes {
		var cur []byte
		err := tx.QueryRowContext(ctx, `SELECT pem FROM cas WHERE name = $1`+s.engine.forUpdate, c.Name).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) || err == nil && !bytes.Equal(cur, c.Old) {
			return fmt.Errorf("replacing the %s CA: %w", c.Name, ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("replacing the %s CA: %w", c.Name, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE cas SET pem = $1 WHERE name = $2`, c.New, c.Name); err != nil {
			return fmt.Errorf("replacing the %s CA: %w", c.Name, err)
		}
	}
	// The replicas reload their CAs.
	if err := s.notifyIn(ctx, tx); err != nil {
		return err
	}
	return tx.Commit()
}

// scrub removes from the disk, not only from reach, the rows replaced or
// deleted (CA keys in the clear), as far as the engine can (engine.scrub).
func (s *sqlStore) scrub(ctx context.Context) error {
	if s.engine.scrub == nil {
		return nil
	}
	return s.engine.scrub(ctx, s.write)
}

// scrubSQLite rewrites the database file and empties the write-ahead log:
// SQLite leaves old pages in free lists and old frames in the -wal file.
func scrubSQLite(ctx context.Context, db *sql.DB) error {
	for _, stmt := range []string{`PRAGMA wal_checkpoint(TRUNCATE)`, `VACUUM`, `PRAGMA wal_checkpoint(TRUNCATE)`} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("scrubbing replaced CA material from the database file (%s): %w", stmt, err)
		}
	}
	return nil
}

// CARotations lists the CAs being rotated.
func (s *sqlStore) CARotations(ctx context.Context) ([]CARotation, error) {
	out, err := s.caRotations(ctx)
	return out, s.wrap("reading CA rotations", err)
}

func (s *sqlStore) caRotations(ctx context.Context) ([]CARotation, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT ca, phase, grace, started, updated, new_signs_since FROM ca_rotations ORDER BY ca`)
	if err != nil {
		return nil, fmt.Errorf("reading CA rotations: %w", err)
	}
	defer rows.Close()
	var out []CARotation
	for rows.Next() {
		var r CARotation
		var grace, started, updated, since int64
		if err := rows.Scan(&r.CA, &r.Phase, &grace, &started, &updated, &since); err != nil {
			return nil, fmt.Errorf("reading CA rotations: %w", err)
		}
		r.Grace, r.Started, r.Updated = time.Duration(grace), time.Unix(0, started), time.Unix(0, updated)
		if since != 0 {
			r.NewSignsSince = time.Unix(0, since)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// StartCARotation records r and stores next as the CA that will replace
// r.CA, or returns ErrConflict if r.CA is already being rotated.
func (s *sqlStore) StartCARotation(ctx context.Context, r CARotation, next []byte) error {
	return s.changeResources(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO ca_rotations (ca, phase, grace, started, updated, new_signs_since)
			VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (ca) DO NOTHING`,
			r.CA, r.Phase, int64(r.Grace), r.Started.UnixNano(), r.Started.UnixNano())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(fmt.Errorf("the %s CA is already being rotated: %w", r.CA, ErrConflict), err)
		}
		// A next row left by an interrupted rotation is replaced.
		_, err = tx.ExecContext(ctx, `INSERT INTO cas (name, pem) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET pem = excluded.pem`,
			NextCAName(r.CA), next)
		return err
	})
}

// SetCARotationPhase moves a rotation from phase from to r.Phase, or
// returns ErrConflict if it is no longer in from.
func (s *sqlStore) SetCARotationPhase(ctx context.Context, from string, r CARotation) error {
	var since int64
	if !r.NewSignsSince.IsZero() {
		since = r.NewSignsSince.UnixNano()
	}
	return s.changeResources(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE ca_rotations SET phase = $1, updated = $2, new_signs_since = $3 WHERE ca = $4 AND phase = $5`,
			r.Phase, r.Updated.UnixNano(), since, r.CA, from)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(fmt.Errorf("the %s CA rotation is no longer in phase %s: %w", r.CA, from, ErrConflict), err)
		}
		return nil
	})
}

// FinishCARotation makes the next CA of ca the current one, dropping the
// old one, and ends the rotation, if it is still in phase from.
func (s *sqlStore) FinishCARotation(ctx context.Context, ca, from string) error {
	err := s.changeResources(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM ca_rotations WHERE ca = $1 AND phase = $2`, ca, from)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(fmt.Errorf("the %s CA rotation is no longer in phase %s: %w", ca, from, ErrConflict), err)
		}
		res, err = tx.ExecContext(ctx, `UPDATE cas SET pem = (SELECT pem FROM cas WHERE name = $1) WHERE name = $2
			AND EXISTS (SELECT 1 FROM cas WHERE name = $1)`, NextCAName(ca), ca)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(fmt.Errorf("the %s CA rotation has no next CA stored", ca), err)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM cas WHERE name = $1`, NextCAName(ca))
		return err
	})
	if err != nil {
		return err
	}
	return s.scrub(ctx)
}
