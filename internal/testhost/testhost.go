// Package testhost answers what the end-to-end tests and benchmarks ask of
// the machine they run on: a free loopback port for a daemon or Postfix
// listener, and the load average printed beside every measured figure.
package testhost

import (
	"net"
	"os"
	"strings"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. It is
// for programs that take a port in their configuration (Postfix, a daemon
// started from its binary); in-process servers listen on port 0 instead.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// LoadAvg returns the 1, 5 and 15 minute load averages from /proc/loadavg,
// or "?" where there is none. Benchmarks report it so that a figure taken on
// a busy machine can be recognised as such.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
