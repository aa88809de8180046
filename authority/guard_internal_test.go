package authority

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// TestLimitedAnswersPaced floods the guard from two addresses whose
// buckets are empty: the refusals' answers are sent in turn, at most
// limitedAnswers a second over both addresses together, so that a flood over any number of connections and addresses
// gets that many answers (and makes the authority read and refuse that
// many requests) a second. An admitted request from a flooded address is
// answered at once. Before the pacing, each refusal was held back one
// second on its own, and a flood over N connections got N answers a second.
func TestLimitedAnswersPaced(t *testing.T) {
	a := &Authority{metrics: newMetrics(), limiter: newLimiter()}
	m := newRoutes()
	m.HandleFunc("POST /refuse", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, identity.Errorf(identity.CodeBadRequest, "garbage"))
	})
	m.HandleFunc("POST /admit", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	g := a.guarded(m, true, remoteKey)
	serve := func(addr, path string) int {
		r := httptest.NewRequest(http.MethodPost, path, nil)
		r.RemoteAddr = addr + ":4242"
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		return w.Code
	}
	addrs := []string{"192.0.2.1", "192.0.2.2"}
	for _, addr := range addrs {
		for i := range refusalBurst {
			if code := serve(addr, "/refuse"); code != http.StatusBadRequest {
				t.Fatalf("refusal %d from %s: %d", i+1, addr, code)
			}
		}
	}

	const perAddr = 20
	start := time.Now()
	var (
		mu       sync.Mutex
		answered []time.Time
		wg       sync.WaitGroup
	)
	for _, addr := range addrs {
		for range perAddr {
			wg.Go(func() {
				code := serve(addr, "/refuse")
				at := time.Now()
				if code != http.StatusBadRequest {
					t.Errorf("a limited refusal from %s answered %d", addr, code)
				}
				mu.Lock()
				answered = append(answered, at)
				mu.Unlock()
			})
		}
	}
	// An admitted request from a flooded address is not paced.
	time.Sleep(100 * time.Millisecond)
	if code := serve(addrs[0], "/admit"); code != http.StatusOK {
		t.Errorf("an admitted request from the flooded address answered %d", code)
	}
	admitted := time.Now()
	wg.Wait()

	// Each answer is sent at its turn or later, and the turns are
	// 1/limitedAnswers apart from when the flood began on, so the i-th
	// answer comes i/limitedAnswers after that at the earliest.
	slices.SortFunc(answered, func(x, y time.Time) int { return x.Compare(y) })
	step := time.Second / limitedAnswers
	for i, at := range answered {
		if earliest := start.Add(time.Duration(i) * step); at.Before(earliest) {
			t.Fatalf("answer %d of %d came %s after the flood began, want at least %s (%d a second over all addresses)",
				i+1, len(answered), at.Sub(start).Round(time.Millisecond), earliest.Sub(start), limitedAnswers)
		}
	}
	if last := answered[len(answered)-1]; !admitted.Before(last) {
		t.Errorf("the admitted request was answered %s after the flood began, after the last paced refusal (%s)",
			admitted.Sub(start).Round(time.Millisecond), last.Sub(start).Round(time.Millisecond))
	}
}

// TestPaceQueueBounded: turns given up by clients that hung up do not push
// later answers off without end.
func TestPaceQueueBounded(t *testing.T) {
	l := newLimiter()
	now := time.Unix(1_800_000_000, 0)
	for range 100 * maxLimited {
		l.reserve(now)
	}
	step := time.Second / limitedAnswers
	if at, last := l.reserve(now), now.Add(maxLimited*step); at.After(last) {
		t.Errorf("after %d turns given up, the next answer waits %s, want at most %s", 100*maxLimited, at.Sub(now), last.Sub(now))
	}
	if at := l.reserve(now.Add(time.Hour)); !at.Equal(now.Add(time.Hour)) {
		t.Errorf("an hour later the next answer waits %s, want none", at.Sub(now.Add(time.Hour)))
	}
}
