// Command gen writes each chart's README.md, its values reference (go
// generate ./deploy/helm).
package main

import (
	"log"
	"os"
	"path/filepath"

	"github.com/mbot-dev/mbot/deploy/helm"
)

func main() {
	for _, c := range helm.Charts {
		ref, err := helm.Reference(c)
		if err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(c, "README.md"), []byte(ref), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
