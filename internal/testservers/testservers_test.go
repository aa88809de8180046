//go:build linux

package testservers

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// writeTemp writes content to a new file in dir with mode and returns its path.
func writeTemp(t *testing.T, dir, name string, content []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, content, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func itoa(i int) string { return strconv.Itoa(i) }
