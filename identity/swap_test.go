package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteFilesRefusesPlantedLinks checks the steps of WriteDir that a
// race could reach: a link planted at a file name in the temporary
// directory, and a temporary directory replaced before it is written.
func TestWriteFilesRefusesPlantedLinks(t *testing.T) {
	base := t.TempDir()
	victim := filepath.Join(base, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	files := []File{{Name: FileSSHKey, Data: []byte("secret key"), Mode: 0o600}}
	t.Run("link at a file name", func(t *testing.T) {
		tmp := filepath.Join(base, "tmp-link")
		if err := os.Mkdir(tmp, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(victim, filepath.Join(tmp, FileSSHKey)); err != nil {
			t.Fatal(err)
		}
		made, err := os.Lstat(tmp)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeFiles(tmp, made, files, nil); err == nil || !strings.Contains(err.Error(), "writing key") {
			t.Errorf("writeFiles over a planted link: %v, want an error writing key", err)
		}
	})
	t.Run("directory replaced", func(t *testing.T) {
		tmp, other := filepath.Join(base, "tmp-ours"), filepath.Join(base, "tmp-theirs")
		for _, d := range []string{tmp, other} {
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		made, err := os.Lstat(tmp)
		if err != nil {
			t.Fatal(err)
		}
		// Someone moves ours away and puts a link to their directory in its place.
		if err := os.Rename(tmp, tmp+".moved"); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(other, tmp); err != nil {
			t.Fatal(err)
		}
		if err := writeFiles(tmp, made, files, nil); err == nil || !strings.Contains(err.Error(), "was replaced") {
			t.Errorf("writeFiles into a replaced directory: %v, want an error saying it was replaced", err)
		}
		if entries, _ := os.ReadDir(other); len(entries) != 0 {
			t.Errorf("written through the link into %s: %v", other, entries)
		}
	})
	if got, _ := os.ReadFile(victim); string(got) != "precious" {
		t.Errorf("the link's target now holds %q", got)
	}
}

// TestWriteDirLinkPlantedBeforeRename puts a link at the destination after
// WriteDir checked it and before the rename, as another user with write
// access to the parent could: nothing is written or removed through it.
func TestWriteDirLinkPlantedBeforeRename(t *testing.T) {
	files := []File{{Name: FileSSHKey, Data: []byte("new secret key"), Mode: 0o600}}
	for _, existing := range []bool{false, true} {
		name := map[bool]string{false: "new destination", true: "earlier identity"}[existing]
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			dir, victim := filepath.Join(base, "mbot"), filepath.Join(base, "victim")
			if err := os.Mkdir(victim, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(victim, FileSSHKey), []byte("precious"), 0o600); err != nil {
				t.Fatal(err)
			}
			if existing {
				if err := WriteDir(dir, files); err != nil {
					t.Fatal(err)
				}
			}
			raceHook = func(dir string) {
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(victim, dir); err != nil {
					t.Fatal(err)
				}
			}
			defer func() { raceHook = nil }()
			err := WriteDir(dir, files)
			if got, _ := os.ReadFile(filepath.Join(victim, FileSSHKey)); string(got) != "precious" {
				t.Errorf("the link's target was changed: key holds %q (WriteDir: %v)", got, err)
			}
			if entries, _ := os.ReadDir(victim); len(entries) != 1 {
				t.Errorf("the link's target holds %v", entries)
			}
			if err == nil {
				// The exchange moved the link aside: dir must be the directory WriteDir made.
				st, lerr := os.Lstat(dir)
				if lerr != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
					t.Errorf("WriteDir succeeded but %s is %v (%v)", dir, st, lerr)
				}
			}
			if entries, _ := os.ReadDir(base); len(entries) != 2 {
				t.Errorf("left behind in %s: %v", base, entries)
			}
		})
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
