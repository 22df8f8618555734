package listen

import (
	"errors"
	"net"
	"testing"
)

func TestSetClosesListeners(t *testing.T) {
	var s Set
	a, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if !s.Add(a) || !s.Add(b) {
		t.Fatal("Add refused before Close")
	}
	s.Remove(b)
	if _, err := b.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Remove did not close the listener: %v", err)
	}

	s.Close()
	if _, err := a.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Close did not close a listener: %v", err)
	}

	// A Serve that starts after Shutdown gets its listener closed.
	late, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if s.Add(late) {
		t.Error("Add accepted a listener after Close")
	}
	if _, err := late.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("a listener added after Close is open: %v", err)
	}
}
