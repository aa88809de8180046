package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostileOutputPathsCLI runs the built binary's commands that write
// credentials (mbot issue, mbot start, mbot sign) with an --out that is a
// symbolic link, a dangling link, a path with a newline and a directory of
// someone else's files. Each exits 1 with a message naming the path and what
// to do, before it joins or signs anything, and writes nothing anywhere.
func TestHostileOutputPathsCLI(t *testing.T) {
	base := t.TempDir()
	home := filepath.Join(base, "home")
	target := filepath.Join(base, "target")
	for _, d := range []string{home, target, filepath.Join(base, "config")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(target, "authorized_keys"), "ssh-ed25519 AAAA victim\n", 0o600)
	links := map[string]string{"to-dir": target, "to-file": filepath.Join(target, "authorized_keys"), "dangling": filepath.Join(base, "later")}
	for name, to := range links {
		if err := os.Symlink(to, filepath.Join(base, name)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(base, "config", "notes.txt"), "mine\n", 0o600)
	// The authority's data_dir is never created: the destination is refused first.
	writeFile(t, filepath.Join(base, "authority.yaml"), "cluster_name: paths.test\ndata_dir: "+filepath.Join(base, "data")+"\n", 0o600)
	env := baseEnv(home)

	outs := []struct {
		name, out string
		want      []string
	}{
		{"symlink to a directory", filepath.Join(base, "to-dir"), []string{"to-dir is a symbolic link to", "target", "set --out"}},
		{"symlink to a file", filepath.Join(base, "to-file"), []string{"to-file is a symbolic link to", "authorized_keys", "remove the link"}},
		{"dangling symlink", filepath.Join(base, "dangling"), []string{"dangling is a symbolic link to", "points nowhere"}},
		{"newline", filepath.Join(base, "out\nProxyCommand x"), []string{`out\nProxyCommand x`, "control character"}},
		{"directory of someone else's files", filepath.Join(base, "config"), []string{"config holds \"notes.txt\", which mbot did not write"}},
	}
	commands := map[string][]string{
		"issue": {"issue", "--authority", "https://127.0.0.1:1", "--token", "github-deploy", "--join-method", "github"},
		"start": {"start", "--authority", "https://127.0.0.1:1", "--token", "github-deploy", "--join-method", "github"},
		"sign":  {"sign", "--config", filepath.Join(base, "authority.yaml"), "--host", "web1.acme.internal"},
	}
	before := listTree(t, base)
	for cmd, args := range commands {
		for _, o := range outs {
			t.Run(cmd+"/"+o.name, func(t *testing.T) {
				res := mbot(t, env, append(args, "--out", o.out)...)
				if res.code != 1 {
					t.Fatalf("exit %d, want 1\n%s", res.code, res)
				}
				for _, w := range o.want {
					if !strings.Contains(res.stderr, w) {
						t.Errorf("stderr does not contain %q:\n%s", w, res.stderr)
					}
				}
				if after := listTree(t, base); after != before {
					t.Errorf("a refused %s changed %s:\nbefore:\n%s\nafter:\n%s", cmd, base, before, after)
				}
			})
		}
	}
}

// listTree lists every path under base with its type and size, without
// following links.
func listTree(t *testing.T, base string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(base, func(path string, st os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		b.WriteString(path + " " + st.Mode().String())
		if st.Mode().IsRegular() {
			data, _ := os.ReadFile(path)
			b.WriteString(" " + string(data))
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
