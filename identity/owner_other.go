//go:build !unix

package identity

import "io/fs"

// ownerUID reports no owner where files have no numeric owner (Windows
// ACLs): the other destination checks still apply.
func ownerUID(fs.FileInfo) (int, bool) { return 0, false }
