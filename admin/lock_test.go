package admin_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
	"github.com/mbot-dev/mbot/internal/authoritytest"
)

// TestFirstAdminIdentityLivesADay checks the lifetime of the admin identity
// the first start writes: admin_identity_ttl, 24h unless set.
func TestFirstAdminIdentityLivesADay(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		want         time.Duration
	}{
		{"default", "", 24 * time.Hour},
		{"admin_identity_ttl", "admin_identity_ttl: 2h\n", 2 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := authoritytest.Start(t, "admin.test", botsYAML, tc.config)
			data, err := os.ReadFile(filepath.Join(e.DataDir, authority.AdminDirName, identity.FileTLSCert))
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(data)
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if left := time.Until(cert.NotAfter); left > tc.want || left < tc.want-time.Minute {
				t.Errorf("the admin identity expires in %s, want %s", left.Round(time.Minute), tc.want)
			}
		})
	}
}

// TestLockAdmin locks the first admin identity and unlocks it again: it
// works, is refused with admin_locked (at once when the serving authority
// locks it, within the reload interval when another process on the store
// does), cannot lift its own lock, works again once unlocked, and every
// step is in the audit log.
func TestLockAdmin(t *testing.T) {
	e := authoritytest.Start(t, "admin.test", botsYAML, "")
	ctx := t.Context()
	remote, err := admin.OpenRemote(filepath.Join(e.DataDir, authority.AdminDirName), "")
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	// local is another process's view of the store: mbot lock --config on the authority host.
	local, err := admin.OpenLocal(ctx, e.Authority.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	works := func() error {
		_, err := remote.Settings(ctx)
		return err
	}
	locked := func(err error) bool {
		var refusal *identity.Error
		return errors.As(err, &refusal) && refusal.Code == identity.CodeAdminLocked &&
			strings.Contains(refusal.Message, `admin/admin is locked`) && strings.Contains(refusal.Message, "laptop lost") &&
			strings.Contains(refusal.Message, "mbot unlock admin/admin")
	}
	// eventually waits for a change made by another process: at most the
	// reload interval (250 ms), with room for a slow machine.
	eventually := func(ok func(error) bool) (error, time.Duration) {
		start := time.Now()
		err := works()
		for !ok(err) && time.Since(start) < 3*time.Second {
			time.Sleep(20 * time.Millisecond)
			err = works()
		}
		return err, time.Since(start)
	}

	if err := works(); err != nil {
		t.Fatalf("the admin identity does not work: %v", err)
	}
	if _, err := remote.LockAdmin(ctx, "admin", "test"); err == nil || !strings.Contains(err.Error(), "lock it with another admin's identity") {
		t.Errorf("an admin locking its own identity through the API: %v, want a refusal", err)
	}

	t.Run("locked by the serving authority", func(t *testing.T) {
		if _, err := e.Authority.LockAdmin(ctx, "admin", "laptop lost", "test"); err != nil {
			t.Fatal(err)
		}
		if err := works(); !locked(err) {
			t.Fatalf("a request right after the lock: %v, want admin_locked", err)
		}
		if _, err := remote.UnlockAdmin(ctx, "admin"); !locked(err) {
			t.Errorf("a locked admin lifting its own lock: %v, want admin_locked", err)
		}
		if _, err := e.Authority.UnlockAdmin(ctx, "admin", "test"); err != nil {
			t.Fatal(err)
		}
		if err := works(); err != nil {
			t.Errorf("a request right after the unlock: %v", err)
		}
	})

	t.Run("locked by another process", func(t *testing.T) {
		l, err := local.LockAdmin(ctx, "admin", "laptop lost, copied to a build log")
		if err != nil {
			t.Fatal(err)
		}
		if l.Kind != "admin" || l.Target != "admin" || l.Reason != "laptop lost, copied to a build log" || !strings.HasPrefix(l.LockedBy, "local admin") {
			t.Errorf("LockAdmin = %+v", l)
		}
		if _, err := local.LockAdmin(ctx, "admin", "again"); err == nil || !strings.Contains(err.Error(), "already locked") {
			t.Errorf("locking a locked admin: %v", err)
		}
		// In force when the command returns: the very next request is refused.
		if err := works(); !locked(err) {
			t.Fatalf("the first request after a lock by another process: %v, want admin_locked", err)
		}
		if _, err := local.UnlockAdmin(ctx, "admin"); err != nil {
			t.Fatal(err)
		}
		if err, _ := eventually(func(err error) bool { return err == nil }); err != nil {
			t.Fatalf("after the unlock: %v", err)
		}
		if _, err := local.UnlockAdmin(ctx, "admin"); err == nil || !strings.Contains(err.Error(), `admin/admin is not locked`) {
			t.Errorf("unlocking an admin that is not locked: %v", err)
		}
	})

	if _, err := local.LockAdmin(ctx, "Admin\nforged", ""); err == nil || !strings.Contains(err.Error(), "not a valid name") {
		t.Errorf("locking an admin with a malformed name: %v", err)
	}
	events, err := remote.Audit(ctx, store.AuditFilter{Limit: 0})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, ev := range events {
		if ev.Claims["admin"] != "admin" {
			continue
		}
		count[ev.Event]++
		if ev.Event == "admin.refused" && (ev.Allowed || ev.Code != string(identity.CodeAdminLocked) || !strings.HasPrefix(ev.Remote, "admin admin from ")) {
			t.Errorf("refusal record %+v", ev)
		}
	}
	if count["admin.lock"] != 2 || count["admin.unlock"] != 2 || count["admin.refused"] < 3 {
		t.Errorf("audit records by event: %v, want 2 locks, 2 unlocks and a refusal per refused request", count)
	}
}
