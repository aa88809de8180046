package identity

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteDirFollowsSymlinkedOut(t *testing.T) {
	base := t.TempDir()
	target := filepath.Join(base, "real")
	link := filepath.Join(base, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, content := range []string{"first", "second"} {
		if err := WriteDir(link, []File{{Name: FileIdentityJSON, Data: []byte(content), Mode: 0o600}}); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi, err)
	}
	got, err := os.ReadFile(filepath.Join(link, FileIdentityJSON))
	if err != nil || string(got) != "second" {
		t.Fatalf("read through the link: %q %v", got, err)
	}
	entries, _ := os.ReadDir(base)
	if len(entries) != 2 {
		t.Errorf("left behind in %s: %v", base, entries)
	}
}

func TestSwapByRenamesPutsBackOnFailure(t *testing.T) {
	base := t.TempDir()
	old := filepath.Join(base, "id")
	if err := os.Mkdir(old, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(old, "key"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The new directory does not exist, so the second rename fails.
	if err := swapByRenames(filepath.Join(base, "missing"), old); err == nil {
		t.Fatal("swap with a missing directory succeeded")
	}
	if got, err := os.ReadFile(filepath.Join(old, "key")); err != nil || string(got) != "old" {
		t.Fatalf("the old identity was not put back: %q %v", got, err)
	}
}
