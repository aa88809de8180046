package e2e

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/client"
)

var yamlBlock = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// TestTrustedClustersDocs loads every YAML example of
// docs/trusted-clusters.md with mbot's own loaders.
func TestTrustedClustersDocs(t *testing.T) {
	data, err := os.ReadFile("../docs/trusted-clusters.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := yamlBlock.FindAllStringSubmatch(string(data), -1)
	if len(blocks) < 5 {
		t.Fatalf("found %d yaml blocks", len(blocks))
	}
	for i, b := range blocks {
		var err error
		switch {
		case strings.HasPrefix(b[1], "kind:"):
			_, err = resources.Parse("docs/trusted-clusters.md", []byte(b[1]))
		default:
			_, err = client.ParseConfig("docs/trusted-clusters.md", []byte(b[1]))
		}
		if err != nil {
			t.Errorf("yaml block %d does not load: %v\n%s", i+1, err, b[1])
		}
	}
}
