package client

import (
	"testing"
	"time"
)

func TestBackoffDoublesUpToTheCap(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		steps    []time.Duration // the step of each retry; the wait is in its upper half
	}{
		{20 * time.Minute, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}},
		{2 * time.Second, []time.Duration{time.Second, 2 * time.Second, 2 * time.Second}},
		{1500 * time.Millisecond, []time.Duration{time.Second, 1500 * time.Millisecond, 1500 * time.Millisecond}},
	} {
		for _, edge := range []string{"low", "high"} {
			b := newBackoff(tc.interval)
			b.randN = func(n int64) int64 {
				if edge == "low" {
					return 0
				}
				return n - 1
			}
			for i, step := range tc.steps {
				want := step / 2
				if edge == "high" {
					want = step
				}
				if got := b.next(); got != want {
					t.Errorf("interval %s, retry %d, %s draw: waits %s, want %s", tc.interval, i+1, edge, got, want)
				}
			}
		}
	}
}

func TestBackoffResetsAfterSuccess(t *testing.T) {
	b := newBackoff(time.Hour)
	b.randN = func(n int64) int64 { return n - 1 }
	for range 5 {
		b.next()
	}
	b.reset()
	if got := b.next(); got != time.Second {
		t.Errorf("first wait after a reset = %s, want 1s", got)
	}
}

// TestBackoffJitter: daemons that failed together spread out.
func TestBackoffJitter(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 50 {
		b := newBackoff(time.Hour)
		for range 4 {
			b.next()
		}
		d := b.next() // the step of 16s
		if d < 8*time.Second || d > 16*time.Second {
			t.Fatalf("wait %s outside [8s, 16s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 40 {
		t.Errorf("50 daemons drew only %d distinct waits", len(seen))
	}
}
