// Package testtimeout lets a test package that starts real servers or
// cross-compiles the tree run past go test's default 10 minute limit per
// package, so that a plain `go test ./...` (the README's test command) does
// not stop it half way on a slow or shared 2-core machine.
package testtimeout

import (
	"flag"
	"time"
)

// goTestDefault is the -test.timeout that go test passes when no -timeout
// is given.
const goTestDefault = 10 * time.Minute

// Raise sets the test binary's timeout to limit when it is go test's
// default, and leaves any other value (an explicit -timeout) alone. Call it
// from TestMain before m.Run.
func Raise(limit time.Duration) {
	if !flag.Parsed() {
		flag.Parse()
	}
	f := flag.Lookup("test.timeout")
	if f == nil {
		return
	}
	if d, err := time.ParseDuration(f.Value.String()); err == nil && d == goTestDefault {
		_ = f.Value.Set(limit.String())
	}
}
