package lazyregexp

import "testing"

func TestRegexp(t *testing.T) {
	re := New(`^([a-z]+)-([0-9]+)$`)
	if !re.MatchString("us-1") || re.MatchString("US-1") {
		t.Error("MatchString")
	}
	if m := re.FindStringSubmatch("eu-42"); len(m) != 3 || m[1] != "eu" || m[2] != "42" {
		t.Errorf("FindStringSubmatch = %q", m)
	}
	if got := New(`[^a-z]+`).ReplaceAllString("a1b22c", "-"); got != "a-b-c" {
		t.Errorf("ReplaceAllString = %q", got)
	}
}

func TestBadPatternFailsInTests(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New accepted an invalid pattern in a test binary")
		}
	}()
	New(`(`)
}
