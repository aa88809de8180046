package identity

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// dirFiles reads every file of dir by name; nil when dir does not exist.
func dirFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(data)
	}
	return out
}

// noTemporaries fails if a parent holds a temporary or earlier directory of WriteDirs.
func noTemporaries(t *testing.T, parents ...string) {
	t.Helper()
	for _, p := range parents {
		entries, _ := os.ReadDir(p)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("%s holds %s, left behind by WriteDirs", p, e.Name())
			}
		}
	}
}

func identityOf(what string) []File {
	return []File{{FileSSHKey, []byte(what + " key"), 0o600}, {FileTLSCert, []byte(what + " cert"), 0o644},
		{FileIdentityJSON, []byte(`{"output":"` + what + `"}`), 0o600}}
}

// TestWriteDirsAllOrNothing writes three outputs at once: an earlier
// identity replaced, a new directory under missing parents, one in another
// parent. A write or a rename failing at any of them leaves all three as
// they were, with no temporary directory behind; only a complete run
// replaces them, and then exactly.
func TestWriteDirsAllOrNothing(t *testing.T) {
	setup := func(t *testing.T) (dirs []OutputDir, parents []string) {
		base := t.TempDir()
		a, b := filepath.Join(base, "a"), filepath.Join(base, "b")
		for _, p := range []string{a, b} {
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		earlier := filepath.Join(a, "id")
		if err := WriteDir(earlier, append(identityOf("earlier"), File{"known_hosts", []byte("earlier hosts"), 0o644})); err != nil {
			t.Fatal(err)
		}
		dirs = []OutputDir{
			{Path: earlier, Files: identityOf("new id")},
			{Path: filepath.Join(a, "more", "db"), Files: identityOf("new db")},
			{Path: filepath.Join(b, "kube"), Files: identityOf("new kube")},
		}
		return dirs, []string{a, filepath.Join(a, "more"), b}
	}
	snapshot := func(t *testing.T, dirs []OutputDir) []map[string]string {
		var s []map[string]string
		for _, d := range dirs {
			s = append(s, dirFiles(t, d.Path))
		}
		return s
	}
	want := func(files []File) map[string]string {
		m := map[string]string{}
		for _, f := range files {
			m[f.Name] = string(f.Data)
		}
		return m
	}

	t.Run("complete", func(t *testing.T) {
		dirs, parents := setup(t)
		if err := WriteDirs(dirs); err != nil {
			t.Fatal(err)
		}
		for _, d := range dirs {
			if got := dirFiles(t, d.Path); !reflect.DeepEqual(got, want(d.Files)) {
				t.Errorf("%s holds %v, want exactly %v (the earlier identity's known_hosts removed)", d.Path, got, want(d.Files))
			}
		}
		noTemporaries(t, parents...)
	})

	t.Run("a write fails", func(t *testing.T) {
		dirs, parents := setup(t)
		before := snapshot(t, dirs)
		dirs[2].Files = append(dirs[2].Files, File{"sub/tls.key", []byte("x"), 0o600})
		err := WriteDirs(dirs)
		var de *DirError
		if !errors.As(err, &de) || de.Index != 2 || !strings.Contains(err.Error(), "writing sub/tls.key") {
			t.Fatalf("WriteDirs: %v, want a DirError at index 2 writing sub/tls.key", err)
		}
		if got := snapshot(t, dirs); !reflect.DeepEqual(got, before) {
			t.Errorf("a failed WriteDirs changed the destinations:\n got %v\nwant %v", got, before)
		}
		noTemporaries(t, parents...)
	})

	t.Run("a rename fails after others moved", func(t *testing.T) {
		dirs, parents := setup(t)
		before := snapshot(t, dirs)
		movedFirst := false
		raceHook = func(dir string) {
			if dir != dirs[2].Path {
				return
			}
			// The first two are in place by now; take the third's staged
			// directory away, so that its rename fails.
			movedFirst = reflect.DeepEqual(dirFiles(t, dirs[0].Path), want(dirs[0].Files))
			staged, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), ".kube.new-*"))
			for _, s := range staged {
				if err := os.RemoveAll(s); err != nil {
					t.Fatal(err)
				}
			}
			if len(staged) != 1 {
				t.Errorf("staged directories of %s: %v, want one", dir, staged)
			}
		}
		defer func() { raceHook = nil }()
		err := WriteDirs(dirs)
		var de *DirError
		if !errors.As(err, &de) || de.Index != 2 || !strings.Contains(err.Error(), "moving identity into") {
			t.Fatalf("WriteDirs: %v, want a DirError at index 2 moving the identity", err)
		}
		if !movedFirst {
			t.Error("the first directory was not in place when the third was moved")
		}
		if got := snapshot(t, dirs); !reflect.DeepEqual(got, before) {
			t.Errorf("a failed WriteDirs did not put the destinations back:\n got %v\nwant %v", got, before)
		}
		noTemporaries(t, parents...)
	})

	t.Run("same or nested directories", func(t *testing.T) {
		dirs, parents := setup(t)
		before := snapshot(t, dirs)
		nested := append(slices.Clone(dirs), OutputDir{Path: filepath.Join(dirs[0].Path, "inner"), Files: identityOf("inner")})
		if err := WriteDirs(nested); err == nil || !strings.Contains(err.Error(), "nested") {
			t.Errorf("WriteDirs with a directory inside another: %v, want a refusal", err)
		}
		if got := snapshot(t, dirs); !reflect.DeepEqual(got, before) {
			t.Errorf("a refused WriteDirs changed the destinations")
		}
		noTemporaries(t, parents...)
	})
}
