package listen

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails with the given errors before handing out a connection.
type flakyListener struct {
	net.Listener
	errs []error
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		return nil, err
	}
	return f.Listener.Accept()
}

func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	fl := &flakyListener{Listener: l, errs: []error{
		&net.OpError{Op: "accept", Err: syscall.EMFILE},
		&net.OpError{Op: "accept", Err: syscall.ECONNABORTED},
	}}
	var pauses []time.Duration
	c, err := Accept(fl, func() bool { return false }, func(_ error, p time.Duration) { pauses = append(pauses, p) })
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	c.Close()
	if len(pauses) != 2 || pauses[0] != 5*time.Millisecond || pauses[1] != 10*time.Millisecond {
		t.Errorf("pauses = %v, want [5ms 10ms]", pauses)
	}
}

func TestAcceptStops(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := Accept(l, func() bool { return true }, nil); !errors.Is(err, ErrStopped) {
		t.Errorf("closed while stopping: %v, want ErrStopped", err)
	}
	if _, err := Accept(l, func() bool { return false }, nil); err == nil || errors.Is(err, ErrStopped) {
		t.Errorf("closed, not stopping: %v, want the permanent error", err)
	}
}
