//go:build !linux

package identity

import "os"

// swapDirs exchanges two directories with three renames where the system has
// no atomic exchange.
func swapDirs(a, b string) error { return swapByRenames(a, b) }

// renameNoReplace renames a to b; WriteDir checks afterwards that b is the
// directory it wrote.
func renameNoReplace(a, b string) error { return os.Rename(a, b) }
