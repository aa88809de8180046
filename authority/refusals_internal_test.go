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

// TestRefusalLimiter checks the bucket: every request takes a token at
// admission and one not refused gives it back, it refills at refusalRate,
// refusals not recorded one by one are counted into one burst, and a burst
// is summarised once it has been quiet for burstQuiet.
func TestRefusalLimiter(t *testing.T) {
	var l refusalLimiter
	now := time.Unix(1_800_000_000, 0)
	// Admitted requests give their token back: any number of them.
	for i := range 5 * refusalBurst {
		if took, _, _ := l.take("a", now); !took {
			t.Fatalf("admitted request %d found no token", i+1)
		}
		l.refund("a", now)
	}
	// Tokens are taken at admission: refusalBurst at once, not more.
	for i := range refusalBurst {
		if took, _, _ := l.take("a", now); !took {
			t.Fatalf("request %d was limited; the first %d are not", i+1, refusalBurst)
		}
	}
	took, wait, _ := l.take("a", now)
	if took || wait != time.Second {
		t.Fatalf("after %d requests in flight: took=%t wait %s, want none for 1s", refusalBurst, took, wait)
	}
	if took, _, _ := l.take("b", now); !took {
		t.Fatal("another address is limited too")
	}
	for range 9 {
		l.count("a", now, burstSummarised, "bad_request", "POST /v1/join")
	}
	l.count("a", now, burstDropped, "rate_limited", "POST /v1/join")
	if got := l.bursts(now.Add(burstQuiet/2), false); len(got) != 0 {
		t.Fatalf("burst summarised while it goes on: %+v", got)
	}
	// While the burst lasts, the bucket earns nothing back: 20, then none.
	if took, _, _ := l.take("a", now.Add(burstQuiet/2)); took {
		t.Fatal("a token was earned back while the burst goes on")
	}
	got := l.bursts(now.Add(burstQuiet), false)
	if len(got) != 1 || got[0].addr != "a" || got[0].summarised != 9 || got[0].dropped != 1 ||
		got[0].codes["bad_request"] != 9 || got[0].routes["POST /v1/join"] != 10 {
		t.Fatalf("bursts %+v, want one of 9 summarised and 1 dropped request from a", got)
	}
	// From the summary on, refusalRate tokens a second: half a second
	// later one request may pass.
	if took, _, _ := l.take("a", now.Add(burstQuiet+time.Second/refusalRate)); !took {
		t.Fatal("the bucket does not refill once its burst is summarised")
	}
	if again := l.bursts(now.Add(2*burstQuiet), false); len(again) != 0 {
		t.Fatalf("a burst is summarised twice: %+v", again)
	}
	// Full again: the addresses are forgotten.
	l.bursts(now.Add(3*burstQuiet), false)
	if len(l.buckets) != 0 {
		t.Errorf("%d buckets kept; a refilled bucket is forgotten", len(l.buckets))
	}
}

// TestRefusalsSustainedFlood: a flood that goes on for minutes is recorded
// one by one refusalBurst times, then a summary about once a minute
// (burstEvery) and nothing else; it does not earn back refusalRate records a second.
func TestRefusalsSustainedFlood(t *testing.T) {
	var l refusalLimiter
	now := time.Unix(1_800_000_000, 0)
	recorded, summaries := 0, 0
	for ms := 0; ms < 3*60*1000; ms += 20 { // 50 refusals a second for 3 minutes
		at := now.Add(time.Duration(ms) * time.Millisecond)
		if took, _, _ := l.take("a", at); took {
			recorded++
		} else {
			l.count("a", at, burstSummarised, "bad_request", "POST /v1/join")
		}
		if ms%5000 == 0 {
			summaries += len(l.bursts(at, false))
		}
	}
	// Each summary lets the bucket earn again for the moment until the
	// next refusal opens the next burst: a fraction of a token.
	if recorded != refusalBurst || summaries < 2 {
		t.Errorf("a 3-minute flood: %d refusals recorded one by one and %d summaries, want %d and one a minute", recorded, summaries, refusalBurst)
	}
}

// TestRefusalLimiterBounded takes tokens for more addresses than it
// tracks: the map stays bounded, and an evicted address's burst is summarised.
func TestRefusalLimiterBounded(t *testing.T) {
	var l refusalLimiter
	now := time.Unix(1_800_000_000, 0)
	for range refusalBurst {
		l.take("limited", now)
	}
	l.count("limited", now, burstSummarised, "bad_request", "POST /v1/join")
	summarised := 0
	for i := range 2 * maxRefusalAddrs {
		if _, _, ev := l.take(fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), now); ev != nil {
			if ev.addr != "limited" || ev.summarised != 1 {
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
