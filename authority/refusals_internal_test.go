package authority

import (
	"fmt"
	"testing"
	"time"
)

func TestRefusalKey(t *testing.T) {
	cases := map[string]string{
		"192.0.2.7:51234":            "192.0.2.7",
		"192.0.2.7":                  "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:1":   "2001:db8:1:2::/64",
		"[::ffff:192.0.2.7]:8443":    "192.0.2.7",
		"[fe80::1%eth0]:22":          "fe80::/64",
		"not an address":             "not an address",
	}
	for remote, want := range cases {
		if got := refusalKey(remote); got != want {
			t.Errorf("refusalKey(%q) = %q, want %q", remote, got, want)
		}
	}
}

// TestRefusalLimiter checks the bucket: refusals only draw from it, it
// refills at refusalRate, drops are counted into one burst, and a burst is
// summarised once it has been quiet for burstQuiet.
func TestRefusalLimiter(t *testing.T) {
	var l refusalLimiter
	now := time.Unix(1_800_000_000, 0)
	for i := range refusalBurst {
		if _, ok := l.admit("a", now); !ok {
			t.Fatalf("refusal %d was limited; the first %d are not", i+1, refusalBurst)
		}
		l.charge("a", now)
	}
	wait, ok := l.admit("a", now)
	if ok || wait != time.Second {
		t.Fatalf("after %d refusals: admitted=%t wait %s, want limited for 1s", refusalBurst, ok, wait)
	}
	if _, ok := l.admit("b", now); !ok {
		t.Fatal("another address is limited too")
	}
	for range 9 {
		l.admit("a", now)
	}
	if got := l.bursts(now.Add(burstQuiet/2), false); len(got) != 0 {
		t.Fatalf("burst summarised while it goes on: %+v", got)
	}
	// refusalRate tokens a second: half a second later one request may pass.
	if _, ok := l.admit("a", now.Add(time.Second/refusalRate)); !ok {
		t.Fatal("the bucket does not refill")
	}
	got := l.bursts(now.Add(burstQuiet), false)
	if len(got) != 1 || got[0].addr != "a" || got[0].dropped != 10 {
		t.Fatalf("bursts %+v, want one of 10 dropped requests from a", got)
	}
	if again := l.bursts(now.Add(2*burstQuiet), false); len(again) != 0 {
		t.Fatalf("a burst is summarised twice: %+v", again)
	}
	// Full again after burstQuiet: the address is forgotten.
	if len(l.buckets) != 0 {
		t.Errorf("%d buckets kept; a refilled bucket is forgotten", len(l.buckets))
	}
}

// TestRefusalLimiterBounded refuses from more addresses than it tracks:
// the map stays bounded, and an evicted address's burst is summarised.
func TestRefusalLimiterBounded(t *testing.T) {
	var l refusalLimiter
	now := time.Unix(1_800_000_000, 0)
	for range refusalBurst {
		l.charge("limited", now)
	}
	l.admit("limited", now)
	summarised := 0
	for i := range 2 * maxRefusalAddrs {
		if ev := l.charge(fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), now); ev != nil {
			if ev.addr != "limited" || ev.dropped != 1 {
				t.Errorf("evicted burst %+v", ev)
			}
			summarised++
		}
	}
	if len(l.buckets) > maxRefusalAddrs {
		t.Errorf("%d addresses tracked, want at most %d", len(l.buckets), maxRefusalAddrs)
	}
	if _, still := l.buckets["limited"]; !still && summarised != 1 {
		t.Errorf("the limited address was evicted, but its burst was summarised %d times", summarised)
	}
}
