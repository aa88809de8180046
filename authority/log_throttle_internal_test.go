package authority

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestRepeatedErrorLog: an error that recurs on a timer is logged when it
// starts, then not again within repeatedErrorEvery (counted instead), and
// its end is logged once.
func TestRepeatedErrorLog(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	var r repeatedErrorLog
	r.succeeded(log, "works again") // nothing failed yet: says nothing
	for range 5 {
		r.failed(log, "reading locks", errors.New("store down"))
	}
	if n := strings.Count(out.String(), "reading locks"); n != 1 {
		t.Fatalf("5 failures in a row logged %d times, want 1:\n%s", n, out.String())
	}
	r.last = r.last.Add(-repeatedErrorEvery - time.Second) // as if the window passed
	r.failed(log, "reading locks", errors.New("store down"))
	if !strings.Contains(out.String(), "repeated=4") {
		t.Errorf("the second log line does not count the 4 left out:\n%s", out.String())
	}
	r.succeeded(log, "works again")
	r.succeeded(log, "works again")
	if n := strings.Count(out.String(), "works again"); n != 1 {
		t.Errorf("recovery logged %d times, want 1:\n%s", n, out.String())
	}
	r.failed(log, "reading locks", errors.New("store down again"))
	if !strings.Contains(out.String(), "store down again") {
		t.Errorf("a new failure after recovery is not logged at once:\n%s", out.String())
	}
}
