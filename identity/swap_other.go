//go:build !linux

package identity

// swapDirs exchanges two directories with three renames where the system has
// no atomic exchange.
func swapDirs(a, b string) error { return swapByRenames(a, b) }
