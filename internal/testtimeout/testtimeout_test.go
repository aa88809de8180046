package testtimeout

import (
	"flag"
	"os"
	"testing"
	"time"
)

var before string

func TestMain(m *testing.M) {
	flag.Parse()
	before = flag.Lookup("test.timeout").Value.String()
	Raise(17 * time.Minute)
	os.Exit(m.Run())
}

// TestRaise: go test's default limit is raised, an explicit one is kept
// (go test -timeout 3m ./internal/testtimeout keeps 3m).
func TestRaise(t *testing.T) {
	got := flag.Lookup("test.timeout").Value.String()
	want := before
	if before == goTestDefault.String() {
		want = (17 * time.Minute).String()
	}
	if got != want {
		t.Fatalf("test.timeout is %s after Raise (was %s), want %s", got, before, want)
	}
}
