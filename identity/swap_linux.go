package identity

import (
	"os"

	"golang.org/x/sys/unix"
)

// swapDirs exchanges two directories in one atomic step (renameat2
// RENAME_EXCHANGE): readers see either the old identity or the new one,
// never a missing directory.
func swapDirs(a, b string) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	if err == unix.ENOSYS || err == unix.EINVAL {
		return swapByRenames(a, b) // old kernels and filesystems without exchange
	}
	return err
}

// renameNoReplace renames a to b unless something appeared at b meanwhile
// (renameat2 RENAME_NOREPLACE), such as an empty directory another user made.
func renameNoReplace(a, b string) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE)
	if err == unix.ENOSYS || err == unix.EINVAL {
		return os.Rename(a, b)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: a, New: b, Err: err}
	}
	return nil
}
