//go:build unix

package identity

import (
	"io/fs"
	"syscall"
)

// ownerUID returns the user that owns the file st describes.
func ownerUID(st fs.FileInfo) (int, bool) {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(sys.Uid), true
}
