package authority

import "testing"

// TestLeafCAs: a root accepts a CA a leaf announced only for that leaf, and
// only while its leaf_cluster pins what it pinned when the leaf announced it.
func TestLeafCAs(t *testing.T) {
	const specPin, newPin, otherPin = "sha256:spec", "sha256:new", "sha256:other"
	var l leafCAs
	if l.announced("leaf-eu", specPin, newPin) {
		t.Fatal("a CA was accepted before any announcement")
	}
	if !l.set("leaf-eu", announcedCAs{specPin: specPin, pins: []string{specPin, newPin}}) {
		t.Error("the first announcement is not a change")
	}
	if l.set("leaf-eu", announcedCAs{specPin: specPin, pins: []string{specPin, newPin}}) {
		t.Error("the same announcement again is a change")
	}
	for _, c := range []struct {
		leaf, spec, pin string
		want            bool
	}{
		{"leaf-eu", specPin, newPin, true},
		{"leaf-eu", specPin, otherPin, false},
		{"leaf-us", specPin, newPin, false},  // another leaf's certificate
		{"leaf-eu", otherPin, newPin, false}, // the admin changed spec.ca_pin since
	} {
		if got := l.announced(c.leaf, c.spec, c.pin); got != c.want {
			t.Errorf("announced(%s, %s, %s) = %t, want %t", c.leaf, c.spec, c.pin, got, c.want)
		}
	}
}
