package joiners

import "time"

// SetBuildkiteAgentTimeout shortens the wait for buildkite-agent in a test.
func SetBuildkiteAgentTimeout(d time.Duration) (restore func()) {
	prev := buildkiteAgentTimeout
	buildkiteAgentTimeout = d
	return func() { buildkiteAgentTimeout = prev }
}
