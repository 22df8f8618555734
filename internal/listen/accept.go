package listen

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// ErrStopped is returned by Accept when the listener failed because the
// server is shutting down.
var ErrStopped = errors.New("listener stopped")

// Accept returns the next connection on l. A temporary failure -- out of
// file descriptors, a client that gave up before it was accepted -- must not
// take a listener down: it is reported through onRetry and retried after a
// pause growing from 5 ms to 1 s, as net/http does. When stopping reports
// true after a failure, the server is shutting down: ErrStopped.
func Accept(l net.Listener, stopping func() bool, onRetry func(err error, pause time.Duration)) (net.Conn, error) {
	var pause time.Duration
	for {
		c, err := l.Accept()
		if err == nil {
			return c, nil
		}
		if stopping() {
			return nil, ErrStopped
		}
		if !temporary(err) {
			return nil, err
		}
		pause = min(max(2*pause, 5*time.Millisecond), time.Second)
		onRetry(err, pause)
		time.Sleep(pause)
	}
}

func temporary(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EAGAIN, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
