package docs

import (
	"regexp"
	"strings"
	"testing"
)

// releaseOnly matches the install paths that find nothing until a release
// is tagged: go install ...@latest, the release archives, the image, the
// Action's major tag, the orb and the component at a version.
var releaseOnly = regexp.MustCompile(`github\.com/mbot-dev/mbot@latest|/releases/download/|ghcr\.io/mbot-dev/mbot|mbot-dev/mbot@v\d|mbot-dev/mbot@\d|mbot-issue@\d`)

// TestInstallIsHonest checks that the README shows first what works from a
// checkout, and that every page offering a path that needs a release says
// so ("once a release is tagged") or sends the reader to the releases page.
func TestInstallIsHonest(t *testing.T) {
	files := markdownFiles(t)
	readme := files["README.md"]
	_, install, ok := strings.Cut(readme, "\n## Install\n")
	if !ok {
		t.Fatal("README.md has no ## Install section")
	}
	blocks := codeBlocks("README.md", install)
	if len(blocks) == 0 {
		t.Fatal("README.md's Install section has no code block")
	}
	first := blocks[0].body
	if !strings.Contains(first, "go build") || !strings.Contains(first, "go install .") || releaseOnly.MatchString(first) {
		t.Errorf("README.md's first install block must be what works from a checkout (go build, go install .) and nothing that needs a release:\n%s", first)
	}
	for file, text := range files {
		if file == "docs/internals/releases.md" || file == "docs/reference/cli.md" || !releaseOnly.MatchString(text) {
			continue
		}
		if !strings.Contains(strings.Join(strings.Fields(strings.ToLower(text)), " "), "once a release is tagged") {
			t.Errorf("%s offers %q, which works only once a release is tagged, and does not say so", file, releaseOnly.FindString(text))
		}
	}
}
