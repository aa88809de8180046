package identity_test

import (
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/identity"
)

// snapshot records everything under base without following links: each
// path's type, mode and content or link target. Comparing two snapshots
// shows whether anything was written anywhere, a link's target included.
func snapshot(t *testing.T, base string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(base, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(path)
		if err != nil {
			return err
		}
		entry := st.Mode().String()
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(path)
			entry += " -> " + target
		case st.Mode().IsRegular():
			data, _ := os.ReadFile(path)
			entry += " " + string(data)
		}
		out[path] = entry
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustLink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// TestHostileOutputPaths writes an identity to destinations an attacker or
// a mistake could set up. Each is refused with a message that names the
// path and what to do, by CheckDir (before a join) and by WriteDir alike,
// and nothing is written anywhere: not at the path, not at a link's target,
// not beside them.
func TestHostileOutputPaths(t *testing.T) {
	files := []identity.File{
		{Name: identity.FileSSHKey, Data: []byte("new secret key"), Mode: 0o600},
		{Name: identity.FileIdentityJSON, Data: []byte(`{"bot":"new"}`), Mode: 0o600},
	}
	tests := []struct {
		name string
		// setup prepares base and returns the --out to write.
		setup func(t *testing.T, base string) string
		want  []string // in the error
	}{
		{"symlink to another directory", func(t *testing.T, base string) string {
			// The target even holds an earlier identity: neither replaced nor removed.
			mustWrite(t, filepath.Join(base, "elsewhere", "key"), "earlier key")
			mustWrite(t, filepath.Join(base, "elsewhere", "identity.json"), `{"bot":"earlier"}`)
			mustLink(t, filepath.Join(base, "elsewhere"), filepath.Join(base, "out"))
			return filepath.Join(base, "out")
		}, []string{"out is a symbolic link to", "elsewhere", "does not write credentials through a link", "set --out", "or remove the link"}},
		{"relative symlink to another directory", func(t *testing.T, base string) string {
			if err := os.Mkdir(filepath.Join(base, "elsewhere"), 0o700); err != nil {
				t.Fatal(err)
			}
			mustLink(t, "elsewhere", filepath.Join(base, "out"))
			return filepath.Join(base, "out")
		}, []string{"out is a symbolic link to \"elsewhere\"", "set --out"}},
		{"symlink to a file", func(t *testing.T, base string) string {
			mustWrite(t, filepath.Join(base, "authorized_keys"), "ssh-ed25519 AAAA victim")
			mustLink(t, filepath.Join(base, "authorized_keys"), filepath.Join(base, "out"))
			return filepath.Join(base, "out")
		}, []string{"out is a symbolic link to", "authorized_keys", "remove the link"}},
		{"dangling symlink", func(t *testing.T, base string) string {
			mustLink(t, filepath.Join(base, "not-yet"), filepath.Join(base, "out"))
			return filepath.Join(base, "out")
		}, []string{"out is a symbolic link to", "not-yet", "points nowhere", "remove it"}},
		{"path with a newline", func(t *testing.T, base string) string {
			return filepath.Join(base, "out\nProxyCommand touch pwned")
		}, []string{`out\nProxyCommand`, "control character", "choose a path without"}},
		{"path with a quote", func(t *testing.T, base string) string {
			return filepath.Join(base, `out" ProxyCommand "x`)
		}, []string{"ssh_config cannot hold", `'"'`}},
		{"existing regular file", func(t *testing.T, base string) string {
			mustWrite(t, filepath.Join(base, "out"), "not a directory")
			return filepath.Join(base, "out")
		}, []string{"out exists and is not a directory", "choose another --out"}},
		{"directory of someone else's files", func(t *testing.T, base string) string {
			mustWrite(t, filepath.Join(base, "home", ".bashrc"), "export PATH")
			mustWrite(t, filepath.Join(base, "home", "key"), "their key")
			return filepath.Join(base, "home")
		}, []string{"home holds \".bashrc\", which mbot did not write", "choose an empty or new --out"}},
		{"directory with a link among mbot's names", func(t *testing.T, base string) string {
			mustWrite(t, filepath.Join(base, "victim"), "precious")
			mustWrite(t, filepath.Join(base, "out", "identity.json"), "{}")
			mustLink(t, filepath.Join(base, "victim"), filepath.Join(base, "out", "key"))
			return filepath.Join(base, "out")
		}, []string{"out holds key, a symbolic link", "remove it"}},
		{"directory with a subdirectory among mbot's names", func(t *testing.T, base string) string {
			mustWrite(t, filepath.Join(base, "out", "ssh_config", "notes"), "mine")
			return filepath.Join(base, "out")
		}, []string{"out holds ssh_config, which is not a regular file"}},
		{"parent is a file", func(t *testing.T, base string) string {
			mustWrite(t, filepath.Join(base, "file"), "x")
			return filepath.Join(base, "file", "sub", "out")
		}, []string{"file is not a directory"}},
	}
	if os.Geteuid() == 0 {
		// Only root can make a directory that belongs to someone else.
		tests = append(tests, struct {
			name  string
			setup func(t *testing.T, base string) string
			want  []string
		}{"empty directory of another user", func(t *testing.T, base string) string {
			dir := filepath.Join(base, "theirs")
			if err := os.Mkdir(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return dir
		}, []string{"theirs belongs to another user (uid 65534", "choose another --out"}})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			out := tc.setup(t, base)
			before := snapshot(t, base)
			checkErr := identity.CheckDir(out)
			writeErr := identity.WriteDir(out, files)
			for what, err := range map[string]error{"CheckDir": checkErr, "WriteDir": writeErr} {
				if err == nil {
					t.Errorf("%s(%q) succeeded, want a refusal", what, out)
					continue
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s error %q does not contain %q", what, err, w)
					}
				}
			}
			if after := snapshot(t, base); !maps.Equal(before, after) {
				t.Errorf("a refused write changed %s:\nbefore %v\nafter  %v", base, before, after)
			}
			// The cleanup of a failed run removes an identity at out itself,
			// but reaches through no link and touches nothing else.
			if _, err := identity.RemoveStale(out); err != nil {
				t.Errorf("RemoveStale: %v", err)
			}
			after := snapshot(t, base)
			for path, was := range before {
				stale := filepath.Dir(path) == out && slices.Contains(identityNames, filepath.Base(path))
				if stale || (path == out && was[0] == 'd' && after[path] == "") {
					continue // a stale identity removed, and its directory once empty
				}
				if after[path] != was {
					t.Errorf("RemoveStale changed %s: %q, now %q", path, was, after[path])
				}
			}
			if _, err := os.Lstat(filepath.Join(out, identity.FileIdentityJSON)); err == nil {
				if st, _ := os.Lstat(out); st.Mode()&fs.ModeSymlink == 0 {
					t.Errorf("a stale identity is left in %s", out)
				}
			}
		})
	}
}

// TestOutputPathsAllowed covers the destinations that look odd but are fine:
// a link higher up the path (macOS's /tmp is one), missing parents (created
// 0700), a shared parent such as /tmp, and an earlier identity of ours.
func TestOutputPathsAllowed(t *testing.T) {
	files := []identity.File{{Name: identity.FileSSHKey, Data: []byte("new secret key"), Mode: 0o600}}
	t.Run("symlink in the parent chain", func(t *testing.T) {
		base := t.TempDir()
		if err := os.Mkdir(filepath.Join(base, "private-tmp"), 0o700); err != nil {
			t.Fatal(err)
		}
		mustLink(t, filepath.Join(base, "private-tmp"), filepath.Join(base, "tmp"))
		if err := identity.WriteDir(filepath.Join(base, "tmp", "mbot"), files); err != nil {
			t.Fatalf("WriteDir below a linked parent: %v", err)
		}
		if got := readDir(t, filepath.Join(base, "private-tmp", "mbot")); got["key"] != "new secret key" {
			t.Errorf("identity holds %v", got)
		}
	})
	t.Run("missing parents", func(t *testing.T) {
		base := t.TempDir()
		out := filepath.Join(base, "a", "b", "mbot")
		want := []string{filepath.Join(base, "a"), filepath.Join(base, "a", "b")}
		if got := identity.MissingParents(out); !slices.Equal(got, want) {
			t.Errorf("MissingParents = %v, want %v", got, want)
		}
		if err := identity.CheckDir(out); err != nil {
			t.Fatalf("CheckDir: %v", err)
		}
		if _, err := os.Lstat(filepath.Join(base, "a")); !os.IsNotExist(err) {
			t.Fatalf("CheckDir created something: %v", err)
		}
		if err := identity.WriteDir(out, files); err != nil {
			t.Fatalf("WriteDir: %v", err)
		}
		mask := umask(t)
		for _, p := range append(want, out) {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if perm := st.Mode().Perm(); perm != 0o700&^mask || perm&0o077 != 0 {
				t.Errorf("%s has mode %o, want 0700", p, perm)
			}
		}
	})
	t.Run("world-writable parent", func(t *testing.T) {
		base := t.TempDir()
		shared := filepath.Join(base, "shared")
		if err := os.Mkdir(shared, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(shared, 0o1777); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(shared, "mbot")
		if err := identity.WriteDir(out, files); err != nil {
			t.Fatalf("WriteDir: %v", err)
		}
		st, err := os.Lstat(out)
		if err != nil {
			t.Fatal(err)
		}
		if !st.IsDir() || st.Mode().Perm() != 0o700 {
			t.Errorf("%s is %v, want a directory with mode 0700", out, st.Mode())
		}
	})
}
