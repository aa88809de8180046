package joiners

import "testing"

// TestDetectionOrderByPriority: register keeps detectionOrder sorted by
// priority as the joiners' initializers add themselves, each joiner once.
func TestDetectionOrderByPriority(t *testing.T) {
	if len(detectionOrder) != len(priorities) {
		t.Fatalf("%d joiners in detectionOrder, %d registered", len(detectionOrder), len(priorities))
	}
	for i := 1; i < len(detectionOrder); i++ {
		if a, b := priorities[detectionOrder[i-1]], priorities[detectionOrder[i]]; a > b {
			t.Errorf("%s (priority %d) before %s (priority %d)", detectionOrder[i-1].Method(), a, detectionOrder[i].Method(), b)
		}
	}
}
