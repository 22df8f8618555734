package listen

import (
	"net"
	"sync"
)

// Set is the listeners a server accepts on, so that its Shutdown can close
// all of them, including one whose Serve is only starting. The zero Set is
// ready to use.
type Set struct {
	mu     sync.Mutex
	ls     map[net.Listener]struct{}
	closed bool
}

// Add records l. Once the Set is closed it closes l instead and reports
// false: the server is shutting down and must not accept on l.
func (s *Set) Add(l net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		l.Close()
		return false
	}
	if s.ls == nil {
		s.ls = make(map[net.Listener]struct{})
	}
	s.ls[l] = struct{}{}
	return true
}

// Remove forgets l and closes it.
func (s *Set) Remove(l net.Listener) {
	s.mu.Lock()
	delete(s.ls, l)
	s.mu.Unlock()
	l.Close()
}

// Close closes every listener in the Set, and every one added later. A
// server sets its own shutting-down flag first, so that the Accept failing
// on a closed listener returns ErrStopped.
func (s *Set) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for l := range s.ls {
		l.Close()
	}
}
