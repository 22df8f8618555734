// Package redistest runs a real redis-server on a loopback port for tests
// (the Debian package redis-server), the way dnstest runs a DNS server.
package redistest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a real redis-server on a loopback port, without persistence.
type Server struct {
	tb    testing.TB
	bin   string
	port  int
	dir   string
	extra []string
	cmd   *exec.Cmd
}

// Start starts redis-server (extra: more command-line options) and stops it at
// the end of the test. It skips the test when redis-server is not installed.
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	r := New(tb, extra...)
	r.Start()
	return r
}

// New prepares a server on a free port without starting it (Start does), for
// tests of clients that come up before their Redis.
func New(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Skipf("redis-server not installed (Debian package redis-server): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := &Server{tb: tb, bin: bin, port: port, dir: tb.TempDir(), extra: extra}
	tb.Cleanup(r.Kill)
	return r
}

func (r *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// Start starts the server on r.port and waits until it answers PING.
func (r *Server) Start() {
	r.tb.Helper()
	args := append([]string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--logfile", "redis.log"}, r.extra...)
	r.cmd = exec.Command(r.bin, args...)
	if err := r.cmd.Start(); err != nil {
		r.tb.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: r.Password(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	var err error
	for range 100 {
		if err = c.Ping(context.Background()).Err(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
	r.tb.Fatalf("redis-server on port %d does not answer: %v\n%s", r.port, err, log)
}

func (r *Server) Password() string {
	if i := slices.Index(r.extra, "--requirepass"); i >= 0 && i+1 < len(r.extra) {
		return r.extra[i+1]
	}
	return ""
}

// Kill stops the server with SIGKILL (a crash, or the end of the test).
func (r *Server) Kill() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGCONT) // a stopped process does not die until continued
	r.cmd.Process.Kill()
	r.cmd.Wait()
	r.cmd = nil
}

func (r *Server) Signal(sig syscall.Signal) {
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.tb.Fatal(err)
	}
}

// Client is a plain go-redis client to look at what the store wrote.
func (r *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: r.Password()})
	r.tb.Cleanup(func() { c.Close() })
	return c
}
