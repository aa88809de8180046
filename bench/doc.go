// Package bench holds mbot's benchmarks: one-shot mbot issue latency end to
// end on loopback, the authority's joins per second under concurrency, and
// process start time. Run them with
//
//	go test -run '^$' -bench . -benchtime 2000x ./bench/
package bench
