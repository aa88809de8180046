package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// ErrAlreadyLocked is returned by LockAdmin for an admin that is locked.
var ErrAlreadyLocked = errors.New("admin is already locked")

// AdminLock refuses every admin API request made with an identity of the
// admin: an admin lock is what a bot lock is, for admin identities.
type AdminLock struct {
	Admin  string    `json:"admin"`
	Time   time.Time `json:"locked_since"`
	Reason string    `json:"reason"`
	// LockedBy names who locked it, as the audit log does.
	LockedBy string `json:"locked_by"`
}

// LockAdmin stores l, or returns ErrAlreadyLocked, changing nothing, if
// the admin is locked.
func (s *sqlStore) LockAdmin(ctx context.Context, l *AdminLock) error {
	err := func() error {
		tx, err := s.write.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		res, err := tx.ExecContext(ctx, `INSERT INTO admin_locks (admin, time, reason, locked_by) VALUES ($1, $2, $3, $4)
			ON CONFLICT (admin) DO NOTHING`, l.Admin, l.Time.UnixNano(), l.Reason, l.LockedBy)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(ErrAlreadyLocked, err)
		}
		if err := s.notifyIn(ctx, tx); err != nil {
			return err
		}
		return tx.Commit()
	}()
	if errors.Is(err, ErrAlreadyLocked) {
		return err
	}
	return s.wrap("locking admin "+l.Admin, err)
}

// UnlockAdmin lifts the lock on admin and returns it, or returns
// ErrNotLocked if the admin is not locked.
func (s *sqlStore) UnlockAdmin(ctx context.Context, admin string) (*AdminLock, error) {
	l, err := func() (*AdminLock, error) {
		tx, err := s.write.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		defer tx.Rollback()
		l := AdminLock{Admin: admin}
		var at int64
		// DELETE ... RETURNING: of two concurrent unlocks, one gets the lock.
		err = tx.QueryRowContext(ctx, `DELETE FROM admin_locks WHERE admin = $1 RETURNING time, reason, locked_by`, admin).
			Scan(&at, &l.Reason, &l.LockedBy)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotLocked
		}
		if err != nil {
			return nil, err
		}
		l.Time = time.Unix(0, at).UTC()
		if err := s.notifyIn(ctx, tx); err != nil {
			return nil, err
		}
		return &l, tx.Commit()
	}()
	if errors.Is(err, ErrNotLocked) {
		return nil, err
	}
	return l, s.wrap("unlocking admin "+admin, err)
}

// AdminLocks returns every admin lock by admin name.
func (s *sqlStore) AdminLocks(ctx context.Context) (map[string]*AdminLock, error) {
	locks, err := func() (map[string]*AdminLock, error) {
		rows, err := s.read.QueryContext(ctx, `SELECT admin, time, reason, locked_by FROM admin_locks`)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		locks := map[string]*AdminLock{}
		for rows.Next() {
			var (
				l  AdminLock
				at int64
			)
			if err := rows.Scan(&l.Admin, &at, &l.Reason, &l.LockedBy); err != nil {
				return nil, err
			}
			l.Time = time.Unix(0, at).UTC()
			locks[l.Admin] = &l
		}
		return locks, rows.Err()
	}()
	return locks, s.wrap("reading admin locks", err)
}
