package daemon

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// slowBuffer is an output that is slow enough for lines to pile up.
type slowBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *slowBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

// Every line arrives whole and none is lost, from many goroutines, and
// Close flushes.
func TestLineWriterKeepsEveryLine(t *testing.T) {
	out := &slowBuffer{}
	w := newLineWriter(out)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				fmt.Fprintf(w, "goroutine=%d line=%d %s\n", g, i, strings.Repeat("x", 100))
			}
		}()
	}
	wg.Wait()
	w.Close()
	lines := strings.Split(strings.TrimSuffix(out.b.String(), "\n"), "\n")
	if len(lines) != 8*500 {
		t.Fatalf("got %d lines, want %d", len(lines), 8*500)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if !strings.HasSuffix(l, strings.Repeat("x", 100)) {
			t.Fatalf("torn line %q", l)
		}
		seen[l] = true
	}
	if len(seen) != 8*500 {
		t.Fatalf("duplicated lines: %d distinct", len(seen))
	}
	// After Close, writes go straight through.
	fmt.Fprintln(w, "after close")
	if !strings.HasSuffix(out.b.String(), "after close\n") {
		t.Error("write after Close lost")
	}
}
