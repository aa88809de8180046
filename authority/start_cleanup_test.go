package authority_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority"
)

// TestFailedStartLeavesNoDataDir checks that a start refused for its
// resources leaves no data_dir (or no mbot.db in an existing one) behind,
// while a start over an existing store keeps it.
func TestFailedStartLeavesNoDataDir(t *testing.T) {
	const typo = "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec:\n  rolez: [deploy]\n"
	const unknownRole = "kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec:\n  roles: [nosuchrole]\n"
	tests := []struct {
		name      string
		resources string
		dataDir   string // relative to the test's directory
		existing  bool   // the data dir exists (empty) before the start
		want      string
	}{
		{"typo, new data dir", typo, "data", false, "bot spec has no field rolez"},
		{"typo, new nested data dir", typo, "var/lib/mbot", false, "rolez"},
		{"typo, existing empty data dir", typo, "data", true, "rolez"},
		{"unknown role, new data dir", unknownRole, "data", false, "nosuchrole"},
		{"unknown role, existing empty data dir", unknownRole, "data", true, "nosuchrole"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "bots.yaml"), []byte(tc.resources), 0o600); err != nil {
				t.Fatal(err)
			}
			dataDir := filepath.Join(dir, tc.dataDir)
			if tc.existing {
				if err := os.MkdirAll(dataDir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"),
				[]byte("cluster_name: acme\ndata_dir: "+tc.dataDir+"\nresources: [bots.yaml]\n"))
			if err != nil {
				t.Fatal(err)
			}
			a, err := authority.Open(context.Background(), cfg, authority.Options{})
			if err == nil {
				a.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			entries, _ := os.ReadDir(dir)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			wantTop := "bots.yaml"
			if tc.existing {
				wantTop = "bots.yaml " + strings.Split(tc.dataDir, "/")[0]
				left, _ := os.ReadDir(dataDir)
				if len(left) != 0 {
					t.Errorf("the failed start left %d files in the existing data dir: %v", len(left), left)
				}
			}
			if got := strings.Join(names, " "); got != wantTop {
				t.Errorf("after the failed start the directory holds %q, want %q", got, wantTop)
			}
		})
	}
}

// TestStartKeepsExistingStore checks that a failed start never removes a
// store that was there before it.
func TestStartKeepsExistingStore(t *testing.T) {
	dir := t.TempDir()
	good := "kind: role\nversion: v1\nmetadata: {name: deploy}\nspec: {logins: [deploy]}\n---\n" +
		"kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec:\n  roles: [deploy]\n"
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, "bots.yaml"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(good)
	cfg, err := authority.ParseConfig(filepath.Join(dir, "authority.yaml"), []byte("cluster_name: acme\ndata_dir: data\nresources: [bots.yaml]\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := authority.Open(context.Background(), cfg, authority.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	write("kind: bot\nversion: v1\nmetadata: {name: deployer}\nspec:\n  roles: [nosuchrole]\n")
	if a, err := authority.Open(context.Background(), cfg, authority.Options{}); err == nil {
		a.Close()
		t.Fatal("Open with an unknown role succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "mbot.db")); err != nil {
		t.Errorf("the failed start removed the existing store: %v", err)
	}
}
