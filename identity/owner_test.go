//go:build unix

package identity

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mbot-dev/mbot/internal/skipreport"
)

// TestWriteDirOwned: an output written for an owner (owner: postgres) is
// that user's, files and directory, with the modes kept, from the moment
// it is in place; the next write replaces it (a directory of the owner is
// mbot's to replace, and to remove when stale), while one of another user
// stays refused.
func TestWriteDirOwned(t *testing.T) {
	if os.Geteuid() != 0 {
		skipreport.Skip(t, "giving files to another user needs root (CI runs as root)")
	}
	owner := &Owner{UID: 65534, GID: 65534}
	dir := filepath.Join(t.TempDir(), "pg")
	files := []File{{Name: FileTLSKey, Data: []byte("key"), Mode: 0o600}, {Name: FileIdentityJSON, Data: []byte("{}"), Mode: 0o644}}
	for range 2 {
		if err := CheckDirOwned(dir, owner); err != nil {
			t.Fatal(err)
		}
		if err := WriteDirOwned(dir, files, owner); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{dir, filepath.Join(dir, FileTLSKey), filepath.Join(dir, FileIdentityJSON)} {
			st, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 65534 || sys.Gid != 65534 {
				t.Errorf("%s belongs to %d:%d, want 65534:65534", p, sys.Uid, sys.Gid)
			}
		}
		if st, _ := os.Stat(filepath.Join(dir, FileTLSKey)); st.Mode().Perm() != 0o600 {
			t.Errorf("tls.key mode %o, want 0600", st.Mode().Perm())
		}
		if entries, _ := os.ReadDir(filepath.Dir(dir)); len(entries) != 1 {
			t.Errorf("the write left %d entries beside the output, want none", len(entries)-1)
		}
	}
	if err := CheckDir(dir); err == nil || !strings.Contains(err.Error(), "belongs to another user") {
		t.Errorf("CheckDir without the owner: %v, want a refusal", err)
	}
	if err := CheckDirOwned(dir, &Owner{UID: 65533, GID: 65533}); err == nil {
		t.Error("CheckDirOwned for another owner accepted the directory")
	}
	if ok, err := RemoveStaleOwned(dir, owner); !ok || err != nil {
		t.Errorf("RemoveStaleOwned: %v %v", ok, err)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("the stale output is still there: %v", err)
	}
}
