// Package prefault maps in, with a few system calls at process start, the
// memory that a short mbot run is going to touch anyway: the executable's
// code and data, the Go heap's first chunk and the runtime's small metadata
// mappings.
//
// On virtual machines a page fault is expensive: on the 2-core CI VM a first
// touch of a page costs about 10 µs, while madvise(MADV_POPULATE_*) maps the
// same page for about 0.5 µs. mbot --version took about 800 faults one at a
// time; populating up front takes a tenth of its start time and of a
// one-shot mbot issue (figures in docs/internals/performance.md). Code is file-backed (shared
// with the page cache), so mapping it costs no memory; the writable regions
// are bounded (see the limits in prefault_linux.go). Kernels before 5.14
// refuse the advice and nothing changes.
//
// It runs as a package initializer, so it must be imported by package main
// and must import nothing but syscall and unsafe: Go initializes packages in
// import-path order once their imports are ready, so this one runs right
// after the runtime and syscall, before the heavy initializers of the SDKs.
// MBOT_PREFAULT=off turns it off (to measure the difference).
package prefault
