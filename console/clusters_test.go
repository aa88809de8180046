package console_test

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/internal/authoritytest"
)

// TestClustersPageShowsTunnels: on a root, each leaf's row says whether
// its tunnel is attached now (to this replica or another: the state is
// the store's leaf_tunnels) and when it was last seen, or that it never
// connected.
func TestClustersPageShowsTunnels(t *testing.T) {
	pin := "sha256:" + strings.Repeat("ab", 32)
	leaves := ""
	for _, name := range []string{"leaf-ap", "leaf-eu", "leaf-us"} {
		leaves += "---\nkind: leaf_cluster\nversion: v1\nmetadata: {name: " + name + "}\nspec: {ca_pin: " + pin + "}\n"
	}
	a := authoritytest.Start(t, "console.test", botsYAML+leaves, "")
	e := startOn(t, a, filepath.Join(a.DataDir, authority.AdminDirName), true)
	seen := time.Date(2026, 12, 1, 10, 20, 30, 0, time.UTC)
	st := a.Authority.Store()
	if err := st.RecordLeafTunnel(t.Context(), "leaf-eu", store.LeafTunnel{Connected: true, LastSeen: seen.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := st.RecordLeafTunnel(t.Context(), "leaf-us", store.LeafTunnel{Connected: false, LastSeen: seen}); err != nil {
		t.Fatal(err)
	}
	_, body := get(t, e.login(t), e.srv.URL+"/clusters")
	for leaf, want := range map[string]string{
		"leaf-eu": `<span class="admitted">connected</span></td>\s*<td>2026-12-01 11:20:30Z</td>`,
		"leaf-us": `<span class="refused">disconnected</span></td>\s*<td>2026-12-01 10:20:30Z</td>`,
		"leaf-ap": `<span class="none">never connected</span></td>\s*<td>-</td>`,
	} {
		if !regexp.MustCompile(`<td>` + leaf + `</td><td>` + want).MatchString(body) {
			t.Errorf("the clusters page does not show %s as %s:\n%s", leaf, want, body)
		}
	}
}
