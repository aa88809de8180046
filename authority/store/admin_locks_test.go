package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

// TestAdminLocks locks an admin, finds the lock from a second handle on the
// same database (another process), refuses a second lock and an unlock of
// an admin that is not locked, and unlocks.
func testAdminLocks(t *testing.T, db *testDB) {
	ctx := t.Context()
	st := db.open(t)
	defer st.Close()
	other := db.open(t)
	defer other.Close()

	lock := &store.AdminLock{Admin: "admin", Time: time.Now().UTC().Truncate(time.Microsecond), Reason: "laptop lost", LockedBy: "local admin root"}
	if err := st.LockAdmin(ctx, lock); err != nil {
		t.Fatal(err)
	}
	if err := st.LockAdmin(ctx, &store.AdminLock{Admin: "admin", Time: time.Now(), Reason: "again"}); !errors.Is(err, store.ErrAlreadyLocked) {
		t.Errorf("second lock: %v, want ErrAlreadyLocked", err)
	}
	locks, err := other.AdminLocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := locks["admin"]; got == nil || *got != *lock || len(locks) != 1 {
		t.Errorf("AdminLocks from another handle = %v, want only %+v", locks, lock)
	}
	lifted, err := other.UnlockAdmin(ctx, "admin")
	if err != nil || *lifted != *lock {
		t.Fatalf("UnlockAdmin = %+v, %v; want %+v", lifted, err, lock)
	}
	if _, err := st.UnlockAdmin(ctx, "admin"); !errors.Is(err, store.ErrNotLocked) {
		t.Errorf("unlocking an admin that is not locked: %v, want ErrNotLocked", err)
	}
	if locks, err := st.AdminLocks(ctx); err != nil || len(locks) != 0 {
		t.Errorf("AdminLocks after the unlock = %v, %v", locks, err)
	}
}
