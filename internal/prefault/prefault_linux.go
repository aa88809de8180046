//go:build linux

package prefault

import (
	"syscall"
	"unsafe"
)

// heapProbe is a heap allocation whose address tells where the heap is.
var heapProbe *[64]byte

func init() {
	if v, _ := syscall.Getenv("MBOT_PREFAULT"); v == "off" {
		return
	}
	heapProbe = new([64]byte)
	var buf [16 << 10]byte
	maps := readMaps(buf[:])
	for _, r := range plan(maps, uintptr(unsafe.Pointer(heapProbe))) {
		// Errors are ignored: an old kernel refuses the advice, and a
		// region that cannot be populated simply faults in as before.
		_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, r.lo, r.hi-r.lo, r.advice)
	}
}

// readMaps reads /proc/self/maps into buf; a static Go binary has about
// thirty mappings at this point, well within 16 KiB.
func readMaps(buf []byte) []byte {
	fd, err := syscall.Open("/proc/self/maps", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer syscall.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := syscall.Read(fd, buf[n:])
		if err != nil || m <= 0 {
			break
		}
		n += m
	}
	return buf[:n]
}
