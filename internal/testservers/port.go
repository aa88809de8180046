package testservers

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// given holds the ports FreePort returned in this process.
var given sync.Map

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// a server a test starts on it. It is taken below the kernel's ephemeral
// range (net.ipv4.ip_local_port_range), so that the local port of an
// outgoing connection, or a listener on port 0 in another test process,
// cannot take it between this call and the server's bind, and never twice
// in one process.
func FreePort(t testing.TB) int {
	t.Helper()
	low := ephemeralLow()
	const floor = 10000
	for range 1000 {
		port := floor + rand.IntN(low-floor)
		if _, taken := given.LoadOrStore(port, true); taken {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatalf("finding a free port: none of 1000 tried between %d and %d is free", floor, low)
	return 0
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// where it cannot be read, Linux's default).
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if low, err := strconv.Atoi(f[0]); err == nil && low > 11000 {
				return low
			}
		}
	}
	return 32768
}
